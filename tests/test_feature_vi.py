"""Feat. QAVI (``"feature_vi"``) against the exact linear-Gaussian oracle.

With the oracle's exact encoder (``orthogonalised().vae_with_encoder()``) the
objective is Gaussian in the missing features: ``E_q(z|x) log p(x | z) -
beta KL(q(z|x) || p(z)) = log p(x) - (beta - 1) KL``, and the KL is
``|A (x - b)|^2 / 2`` plus a constant, with ``A = Sigma_f W^T / sigma^2`` the
encoder's linear map. So ``L_M`` is ``E_q[-(x - b)^T Lam (x - b) / 2] +
gamma H[q]`` with ``Lam = (W W^T + sigma^2 I)^{-1} + (beta - 1) A^T A``, and its
diagonal-Gaussian optimum has the conditional mode of ``Lam`` as mean and
variances ``gamma / diag(Lam_MM)``. The code ``z`` is then Gaussian with mean
``A (x_bar - b)`` and covariance ``Sigma_f + A_M diag(v) A_M^T``
(:func:`feature_optimum`). With ``beta = gamma = 1`` the mean of ``z`` is the
exact posterior mean; the variances are mostly smaller than the exact
posterior's (the correlations between missing features are lost): on these
oracles the optimum's marginal variances are 0.07-1.05 times the exact ones
(64 rows each).

Tolerances are Monte-Carlo ones, as in ``test_vi_backends.py``: the fit must be
as accurate as ``N_EQ`` exact draws, and moments of ``M`` of its own draws add
their own error. Measured with the default settings (64 rows per case, worst
case over the three cases): ``x_M`` means within 0.06 sd and variances within
10 % of the optimum; ``z`` means within 0.08 sd of the optimum (and of the exact
posterior mean); whitened ``z`` covariance within 0.12 of the identity. IWAE
``log p(x_U | x_O)`` with 2,000 samples: mean error 0.02-0.04 nats, at most half
the Monte-Carlo tolerance on rows where the Gaussian proposal has finite weight
variance. On the other rows (few observed features, where the fitted ``q`` is
narrow) there is no finite-variance tolerance; they are held to 0.25 nats, the
largest error measured on them being 0.14.
"""

import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian, importance_relative_variance

N_EQ = 1000
M = 2000
N_QUERIES = 16
ORACLES = {
    "d3_D8": LinearGaussian.random(0, num_features=8, latent_dim=3, sigma=0.5),
    "d2_D12": LinearGaussian.random(5, num_features=12, latent_dim=2, sigma=0.7),
}
CASES = [("d3_D8", 1.0, 1.0), ("d2_D12", 1.0, 1.0), ("d3_D8", 4.0, 2.0)]


def feature_optimum(oracle, x, observed, beta=1.0, gamma=1.0):
    """Optimum of ``L_M`` with the exact encoder (module docstring).

    Returns
    -------
    (x_loc [N, D], x_var [N, D], z_mean [N, d], z_cov [N, d, d])
        ``x_var`` is 0 on observed entries.
    """
    W, b, s2 = oracle.W, oracle.b, oracle.sigma**2
    d, D = oracle.latent_dim, oracle.num_features
    sigma_f = np.linalg.inv(np.eye(d) + W.T @ W / s2)
    A = sigma_f @ W.T / s2
    lam = np.linalg.inv(W @ W.T + s2 * np.eye(D)) + (beta - 1) * A.T @ A
    n = x.shape[0]
    x_loc, x_var = np.zeros((n, D)), np.zeros((n, D))
    z_cov = np.zeros((n, d, d))
    for i in range(n):
        o, m = observed[i], ~observed[i]
        x_loc[i, o] = x[i, o]
        x_loc[i, m] = b[m] - np.linalg.solve(
            lam[np.ix_(m, m)], lam[np.ix_(m, o)] @ (x[i, o] - b[o])
        )
        x_var[i, m] = gamma / np.diag(lam)[m]
        z_cov[i] = sigma_f + (A[:, m] * x_var[i, m]) @ A[:, m].T
    return x_loc, x_var, (x_loc - b) @ A.T, z_cov


def _batch(oracle):
    _, x = oracle.sample(1, N_QUERIES)
    observed = np.random.default_rng(2).random(x.shape) < 0.5
    return x, observed


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-beta{c[1]:g}-gamma{c[2]:g}")
def fitted(request):
    name, beta, gamma = request.param
    oracle = ORACLES[name].orthogonalised()
    x, observed = _batch(oracle)
    post = (
        oracle.vae_with_encoder()
        .given(np.where(observed, x, np.nan))
        .infer("feature_vi", key=0, num_draws=M, beta=beta, entropy_weight=gamma)
    )
    return oracle, x, observed, (beta, gamma), post


def test_missing_feature_posterior_is_the_optimum(fitted):
    oracle, x, observed, (beta, gamma), post = fitted
    x_loc, x_var, _, _ = feature_optimum(oracle, x, observed, beta, gamma)
    m = ~observed
    loc, scale = post.info["x_loc"], post.info["x_scale"]
    mean_err = np.abs(loc - x_loc)[m] / np.sqrt(x_var[m])
    assert mean_err.max() < 4 / np.sqrt(N_EQ), mean_err.max()
    var_err = np.abs(scale[m] ** 2 / x_var[m] - 1)
    assert var_err.max() < 4 * np.sqrt(2 / N_EQ), var_err.max()
    # observed entries are the evidence, with no spread
    np.testing.assert_allclose(loc[observed], x[observed], rtol=1e-5)
    assert (scale[observed] == 0).all()


def test_code_draws_match_the_optimum(fitted):
    oracle, x, observed, (beta, gamma), post = fitted
    _, _, z_mean, z_cov = feature_optimum(oracle, x, observed, beta, gamma)
    z = np.asarray(post.z, float)
    assert z.shape == (N_QUERIES, M, oracle.latent_dim)
    sd = np.sqrt(np.diagonal(z_cov, 0, 1, 2))
    mean_err = np.abs(z.mean(1) - z_mean) / sd
    assert mean_err.max() < 4 / np.sqrt(N_EQ) + 4 / np.sqrt(M), mean_err.max()
    c = z - z.mean(1, keepdims=True)
    C = np.einsum("nsa,nsb->nab", c, c) / (M - 1)
    Li = np.linalg.inv(np.linalg.cholesky(z_cov))
    white = np.abs(Li @ C @ np.swapaxes(Li, 1, 2) - np.eye(oracle.latent_dim))
    assert white.max() < 4 * np.sqrt(2 / N_EQ) + 4 * np.sqrt(2 / M), white.max()
    if beta == gamma == 1.0:  # a proper ELBO: the mean of z is the exact posterior mean
        mu, cov = oracle.posterior(x, observed)
        exact_err = np.abs(z.mean(1) - mu) / np.sqrt(np.diagonal(cov, 0, 1, 2))
        assert exact_err.max() < 4 / np.sqrt(N_EQ) + 4 / np.sqrt(M), exact_err.max()


def test_iwae_matches_exact_log_likelihood(fitted):
    oracle, x, observed, (beta, gamma), post = fitted
    if (beta, gamma) != (1.0, 1.0):
        pytest.skip("the likelihood is checked for the proper ELBO (beta = gamma = 1)")
    S = 2000
    ll = post.log_likelihood(x, num_samples=S, key=2)
    exact = oracle.log_likelihood(x, observed, ~observed)
    L = np.asarray(post.state["chol"], float)
    q = (np.asarray(post.state["loc"], float), L @ np.swapaxes(L, 1, 2))
    with np.errstate(over="ignore"):
        r_o = importance_relative_variance(*oracle.posterior(x, observed), *q)
        r_j = importance_relative_variance(*oracle.posterior(x, np.ones_like(observed)), *q)
    finite = np.isfinite(r_o) & np.isfinite(r_j)
    assert finite.mean() > 0.75, finite.mean()
    tol = 4 * (np.sqrt(r_o / S) + np.sqrt(r_j / S)) + (r_o + r_j) / (2 * S) + 1e-3
    err = np.abs(ll - exact)
    assert (err[finite] < tol[finite]).all(), (err - tol)[finite].max()
    assert (err[~finite] < 0.25).all(), err[~finite]
    assert err.mean() < 0.05 * np.abs(exact).mean()


def test_a_model_without_encoder_is_refused():
    oracle = ORACLES["d3_D8"]
    x, observed = _batch(oracle)
    with pytest.raises(ValueError, match="needs the model's encoder"):
        oracle.vae().given(np.where(observed, x, np.nan)).infer("feature_vi", num_steps=2)


def test_categorical_features_are_refused():
    import jax.numpy as jnp

    def decode(z):  # 2 categorical features with 3 levels
        return jnp.stack([z[..., :3], -z[..., :3]], -2)

    def encode(x):
        return jnp.zeros(x.shape[:-1] + (3,)), jnp.ones(x.shape[:-1] + (3,))

    vae = vq.from_decoder(decode, 3, 2, "categorical", encode_fn=encode)
    with pytest.raises(ValueError, match="cannot model categorical features"):
        vae.given(np.array([[1.0, np.nan]])).infer("feature_vi", num_steps=2)


@pytest.mark.parametrize(
    "hp",
    [
        dict(entropy_weight=0.0),
        dict(num_proposal_draws=1),
        dict(proposal_scale=-1.0),
        dict(beta=-2.0),
    ],
)
def test_bad_hyperparameters_are_reported(hp):
    with pytest.raises(ValueError, match=next(iter(hp))):
        vq.backends.get("feature_vi", **hp)
