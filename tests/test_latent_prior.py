"""Latent priors beyond N(0, I): a two-layer linear-Gaussian hierarchy, exactly.

The model is ``z1 ~ N(0, I_2)``, ``z2 | z1 ~ N(A z1, diag(s^2))``,
``x | z2 ~ N(W z2 + b, sigma^2 I)``, declared as a NumPyro prior with the sites
``"z1"``, ``"z2"``; the decoder reads ``z2`` from the flat vector
``u = (z1, z2)``. ``u`` is jointly Gaussian, ``u ~ N(0, S_u)`` with
``S_u = [[I, A^T], [A, A A^T + diag(s^2)]]`` and ``x = C u + b + noise``,
``C = [0 | W]``, so ``p(u | x_O)`` and ``log p(x_U | x_O)`` are computed here in
NumPy by Gaussian conditioning, independently of the code under test.

Tolerances are the Monte-Carlo ones of the single-layer oracle tests
(``test_vi_backends``, ``test_gaussian_oracle``, ``test_mcmc``): a VI fit must
be as accurate as ``N_EQ = 1000`` exact draws (mean error below
``4 / sqrt(N_EQ)`` posterior sd; full-rank covariance in whitened coordinates
within ``4 sqrt(2 / N_EQ)``; mean-field variances, whose exact optimum is
``1 / diag(precision)``, within relative ``4 sqrt(2 / (N_EQ - 1))``); NUTS
means within 4 MCSE; IWAE within the importance-weight tolerance of
``importance_relative_variance``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import vaequery as vq
from vaequery.testing import importance_relative_variance

from .test_mcmc import mcse_zscores

N_EQ = 1000
N = 8  # query rows per oracle
D = 6


class Hierarchy:
    """The two-layer linear-Gaussian model and its exact answers (NumPy)."""

    def __init__(self, seed, a_scale, s, sigma):
        rng = np.random.default_rng(seed)
        self.A = a_scale * rng.normal(size=(2, 2))
        self.s = np.asarray(s, float)
        self.W = rng.normal(size=(D, 2))
        self.b = rng.normal(size=D)
        self.sigma = float(sigma)
        A = self.A
        self.S_u = np.block([[np.eye(2), A.T], [A, A @ A.T + np.diag(self.s**2)]])
        self.C = np.hstack([np.zeros((D, 2)), self.W])

    def prior(self):
        A, s = jnp.asarray(self.A, jnp.float32), jnp.asarray(self.s, jnp.float32)
        z1 = numpyro.sample("z1", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        numpyro.sample("z2", dist.Normal(A @ z1, s).to_event(1))

    def vae(self):
        W, b = jnp.asarray(self.W, jnp.float32), jnp.asarray(self.b, jnp.float32)

        def decode(u):
            return u[..., 2:] @ W.T + b  # reads z2 only

        return vq.from_decoder(decode, 4, D, scale=self.sigma, prior=self.prior)

    def sample(self, seed, n):
        rng = np.random.default_rng(seed)
        u = rng.multivariate_normal(np.zeros(4), self.S_u, size=n)
        return u @ self.C.T + self.b + self.sigma * rng.normal(size=(n, D))

    def posterior(self, x, observed):
        """Exact ``p(u | x_O)`` per row: ``(mean [n, 4], cov [n, 4, 4])``."""
        m = observed.astype(float)
        prec = np.linalg.inv(self.S_u) + np.einsum("nj,ja,jb->nab", m, self.C, self.C) / (
            self.sigma**2
        )
        cov = np.linalg.inv(prec)
        r = np.where(observed, x - self.b, 0.0)
        return np.einsum("nab,jb,nj->na", cov, self.C, r) / self.sigma**2, cov

    def log_marginal(self, x, mask):
        """Exact ``log p(x_mask)`` per row."""
        full = self.C @ self.S_u @ self.C.T + self.sigma**2 * np.eye(D)
        out = []
        for xi, mi in zip(x, mask):
            r = xi[mi] - self.b[mi]
            K = full[np.ix_(mi, mi)]
            _, logdet = np.linalg.slogdet(K)
            out.append(-0.5 * (r @ np.linalg.solve(K, r) + logdet + mi.sum() * np.log(2 * np.pi)))
        return np.array(out)


ORACLES = {
    "strong": Hierarchy(0, a_scale=1.0, s=[0.6, 0.4], sigma=0.5),
    "weak": Hierarchy(1, a_scale=0.5, s=[1.0, 0.3], sigma=0.8),
}


@pytest.fixture(scope="module", params=sorted(ORACLES))
def problem(request):
    h = ORACLES[request.param]
    x = h.sample(3, N)
    observed = np.random.default_rng(4).random(x.shape) < 0.5
    observed[0] = False  # the prior itself
    q = h.vae().given(np.where(observed, x, np.nan))
    return h, x, observed, q


def test_fullrank_matches_exact_posterior(problem):
    h, x, observed, q = problem
    post = q.infer("fullrank", key=0)
    mu, cov = h.posterior(x, observed)
    loc = np.asarray(post.state["loc"], float)
    L = np.asarray(post.backend.cholesky(post.state), float)
    C = L @ np.swapaxes(L, 1, 2)
    mean_err = np.abs(loc - mu) / np.sqrt(np.diagonal(cov, 0, 1, 2))
    Li = np.linalg.inv(np.linalg.cholesky(cov))
    cov_err = np.abs(Li @ C @ np.swapaxes(Li, 1, 2) - np.eye(4))
    assert mean_err.max() < 4 / np.sqrt(N_EQ), mean_err.max()
    assert cov_err.max() < 4 * np.sqrt(2 / N_EQ), cov_err.max()
    # the draws come back per site, and the flat vector is (z1, z2) in that order
    sites = post.z_sites
    assert list(sites) == ["z1", "z2"]
    assert sites["z1"].shape == (N, 100, 2) and sites["z2"].shape == (N, 100, 2)
    np.testing.assert_array_equal(np.concatenate([sites["z1"], sites["z2"]], -1), post.z)
    # imputations are the decoder mean of z2 (computed here, not by the code)
    expect = sites["z2"] @ h.W.T + h.b
    tgt = np.broadcast_to(~observed[:, None], expect.shape)
    np.testing.assert_allclose(post.x[tgt], expect[tgt], rtol=1e-4, atol=1e-4)
    # IWAE of the held-out features against the exact log p(x_U | x_O)
    S = 2000
    ll = post.log_likelihood(x, num_samples=S, key=2)
    exact = h.log_marginal(x, np.ones_like(observed)) - h.log_marginal(x, observed)
    r_o = importance_relative_variance(*h.posterior(x, observed), loc, C)
    r_j = importance_relative_variance(*h.posterior(x, np.ones_like(observed)), loc, C)
    tol = 4 * (np.sqrt(r_o / S) + np.sqrt(r_j / S)) + (r_o + r_j) / (2 * S) + 1e-3
    assert np.isfinite(tol).all()
    assert (np.abs(ll - exact) < tol).all(), (np.abs(ll - exact) - tol).max()


def test_mean_field_matches_exact_optimum(problem):
    h, x, observed, q = problem
    post = q.infer("gaussian", key=1)
    mu, cov = h.posterior(x, observed)
    var = 1.0 / np.diagonal(np.linalg.inv(cov), 0, 1, 2)  # the mean-field optimum
    loc = np.asarray(post.state["loc"], float)
    mean_err = np.abs(loc - mu) / np.sqrt(var)
    rel = np.abs(np.exp(2 * np.asarray(post.state["log_scale"], float)) / var - 1)
    assert mean_err.max() < 4 / np.sqrt(N_EQ), mean_err.max()
    assert rel.max() < 4 * np.sqrt(2 / (N_EQ - 1)), rel.max()


def test_nuts_means_within_mcse(problem):
    h, x, observed, q = problem
    post = q.infer("nuts", key=2, num_warmup=200, num_draws=400, num_chains=2)
    mu, cov = h.posterior(x, observed)
    zm, _ = mcse_zscores(post.z, mu, cov)
    assert zm.max() < 4.0, zm.max()
    assert np.sqrt(np.mean(zm**2)) < 1.5
    # ArviZ: the sites are the posterior variables
    idata = post.to_arviz(log_likelihood=False)
    assert set(idata.posterior.data_vars) == {"z1", "z2"}
    assert idata.posterior["z2"].shape == (2, 400, N, 2)


def _standard_normal_prior():
    numpyro.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))


def test_explicit_standard_normal_prior_is_the_default(oracle):
    # an explicit single-site N(0, I) prior named "z" is the default model: same
    # densities, same model sites, and the same draws for the same key
    _, x = oracle.sample(5, 4)
    observed = np.random.default_rng(6).random(x.shape) < 0.5
    W, b = jnp.asarray(oracle.W, jnp.float32), jnp.asarray(oracle.b, jnp.float32)

    def decode(z):
        return z @ W.T + b

    def encode(xx):  # the same start for both (init="auto" uses the encoder)
        return jnp.zeros(xx.shape[:-1] + (3,)), 0.5 * jnp.ones(xx.shape[:-1] + (3,))

    kw = dict(scale=oracle.sigma, encode_fn=encode)
    default = vq.from_decoder(decode, 3, 8, **kw)
    explicit = vq.from_decoder(decode, 3, 8, prior=_standard_normal_prior, **kw)
    assert default.prior is None and explicit.prior.names == ("z",)
    X = np.where(observed, x, np.nan)
    t0, t1 = default.given(X).target(), explicit.given(X).target()
    z = jax.random.normal(jax.random.key(0), (4, 3))
    row = jax.tree_util.tree_map(lambda a: a[1], t0.data)
    for f in ("logdensity_fn", "logprior_fn"):
        a = jax.vmap(getattr(t0, f), (0, None))(z, row)
        e = jax.vmap(getattr(t1, f), (0, None))(z, row)
        np.testing.assert_allclose(a, e, rtol=1e-6)
    p0 = default.given(X).infer("gaussian", key=3, num_steps=30, num_samples=8)
    p1 = explicit.given(X).infer("gaussian", key=3, num_steps=30, num_samples=8)
    np.testing.assert_allclose(p0.z, p1.z, rtol=1e-5, atol=1e-5)
    assert list(p0.z_sites) == ["z"] and list(p1.z_sites) == ["z"]
    p2 = default.given(X).infer("gaussian", key=4, num_steps=30, num_samples=8)
    assert not np.allclose(p0.z, p2.z)  # the comparison can fail
    # without an encoder, VI starts from the custom prior's moments (here ~ N(0, I))
    loc, tril = explicit.prior_start
    np.testing.assert_allclose(loc, 0, atol=0.1)
    np.testing.assert_allclose(tril @ tril.T, np.eye(3), atol=0.1)


def test_refusals():
    h = ORACLES["strong"]
    vae = h.vae()
    q = vae.given(np.full(D, np.nan))
    for name in ("grid", "mwg", "pseudo_gibbs", "feature_vi", "numpyro", "fill_zeros"):
        with pytest.raises(ValueError, match=f"backend '{name}' assumes the latent prior N"):
            q.infer(name)
    with pytest.raises(TypeError, match="latent prior is a Python function"):
        vae.save("unused")
    with pytest.raises(ValueError, match="hold 4 numbers"):
        vq.from_decoder(lambda u: u[..., 2:] @ jnp.ones((2, D)), 3, D, prior=h.prior)

    def simplex():  # constrained sites are accepted when mapped elementwise, not this
        numpyro.sample("r", dist.Dirichlet(jnp.ones(3)))

    with pytest.raises(ValueError, match="site 'r' .* changes its shape"):
        vq.from_decoder(lambda u: jnp.ones(u.shape[:-1] + (D,)) * u[..., :1], 3, D, prior=simplex)

    def discrete():
        numpyro.sample("k", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match="site 'k'"):
        vq.from_decoder(lambda u: jnp.ones(u.shape[:-1] + (D,)) * u, 1, D, prior=discrete)


def test_a_posterior_of_a_custom_prior_model_is_not_saved_silently(tmp_path):
    import pickle

    def prior():
        numpyro.sample("a", dist.Normal(0.0, 2.0).expand([2]).to_event(1))

    model = vq.from_decoder(lambda z: jnp.concatenate([z, z], -1), 2, 4, prior=prior)
    post = model.given(np.array([[0.1, np.nan, 0.3, np.nan]])).infer(
        "gaussian", key=0, num_steps=5, num_samples=2, num_draws=3
    )
    with pytest.raises(TypeError, match="custom latent prior"):
        post.save(tmp_path / "p")
    with pytest.raises(TypeError, match="custom latent prior|custom prior"):
        pickle.dumps(post)
