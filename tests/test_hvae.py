"""Hierarchical VAEs: QAVI's hierarchical family on an exact oracle, and the HVAE model family.

The oracle is the two-layer linear-Gaussian hierarchy ``z1 ~ N(0, I_2)``,
``z2 | z1 ~ N(A z1, diag(s^2))``, ``x | z2 ~ N(W z2 + b, sigma^2 I)`` as an
HVAE with linear networks (:func:`vaequery.testing.linear_hvae`). The flat
latent ``u = (z1, z2)`` is jointly Gaussian, so ``p(u | x_O)`` and
``log p(x_U | x_O)`` are computed here in NumPy by Gaussian conditioning.

QAVI's family has diagonal Gaussian conditionals ``q(z_l | z_<l)`` whose mean
interpolates the model's posterior and prior networks (eq. 10); ``A`` is
diagonal and each row of ``W`` loads on one entry of ``z2``, so the exact
posterior lies inside the family and the fit is judged against it with the
Monte-Carlo tolerances of the single-layer oracle tests (``N_EQ = 1000``
exact draws: means within ``4 / sqrt(N_EQ)`` posterior sd, covariance in
whitened coordinates within ``4 sqrt(2 / N_EQ)``), on a strongly and a weakly
coupled hierarchy. The posterior still couples ``z1`` and ``z2`` (their
cross-covariance is what a mean-field fit cannot represent).
"""

import pickle

import jax
import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian, importance_relative_variance, linear_hvae

N_EQ = 1000
N = 8  # query rows per oracle
D = 6


class Oracle:
    """The linear hierarchy's parameters and its exact answers (NumPy, float64)."""

    def __init__(self, seed, a, s, loadings, sigma):
        rng = np.random.default_rng(seed)
        self.A = np.diag(a)
        self.s = np.asarray(s, float)
        self.W = np.zeros((D, 2))
        self.W[:3, 0], self.W[3:, 1] = loadings[:3], loadings[3:]
        self.b = rng.normal(size=D)
        self.sigma = float(sigma)
        A = self.A
        self.S_u = np.block([[np.eye(2), A.T], [A, A @ A.T + np.diag(self.s**2)]])
        self.C = np.hstack([np.zeros((D, 2)), self.W])

    def model(self):
        return linear_hvae(self.A, self.s, self.W, self.b, self.sigma)

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
    "strong": Oracle(
        0, a=[1.5, -1.2], s=[0.5, 0.4], loadings=[1, -0.7, 1.3, 0.8, 1.2, -0.9], sigma=0.4
    ),
    "weak": Oracle(
        1, a=[0.3, 0.2], s=[1.0, 0.8], loadings=[0.6, 1.1, -0.5, 1.4, -0.4, 0.7], sigma=0.8
    ),
}


@pytest.fixture(scope="module", params=sorted(ORACLES))
def fitted(request):
    h = ORACLES[request.param]
    x = h.sample(3, N)
    observed = np.random.default_rng(4).random(x.shape) < 0.5
    observed[0] = False  # the prior itself
    q = h.model().given(np.where(observed, x, np.nan))
    post = q.infer("hierarchical", key=0, num_draws=20_000)
    return h, x, observed, post


def test_hierarchical_family_matches_exact_posterior(fitted):
    h, x, observed, post = fitted
    mu, cov = h.posterior(x, observed)
    z = np.asarray(post.z, float)  # [N, 20000, 4]: sampling error far below the tolerance
    loc = z.mean(1)
    diff = z - loc[:, None]
    C = np.einsum("nsi,nsj->nij", diff, diff) / (z.shape[1] - 1)
    mean_err = np.abs(loc - mu) / np.sqrt(np.diagonal(cov, 0, 1, 2))
    Li = np.linalg.inv(np.linalg.cholesky(cov))
    cov_err = np.abs(Li @ C @ np.swapaxes(Li, 1, 2) - np.eye(4))
    assert mean_err.max() < 4 / np.sqrt(N_EQ), mean_err.max()
    assert cov_err.max() < 4 * np.sqrt(2 / N_EQ), cov_err.max()
    # on the strong oracle the z1-z2 coupling is large (a mean-field fit would miss it)
    sd = np.sqrt(np.diagonal(cov, 0, 1, 2))
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    assert np.abs(corr[:, :2, 2:]).max() > (0.5 if h is ORACLES["strong"] else 0.2)
    # the loss trace is the negative ELBO: its last 100 steps (28 draws each, q nearly
    # fixed) average to about -log p(x_O), never clearly below (KL(q || p) >= 0)
    gap = post.loss[:, -100:].mean(1) + h.log_marginal(x, observed)
    assert np.all(gap > -0.1) and np.all(gap < 0.1), gap


def test_hierarchical_iwae_matches_exact_likelihood(fitted):
    # log q of the ancestral draws is exact: the IWAE estimate of log p(x_U | x_O) agrees
    h, x, observed, post = fitted
    S = 2000
    ll = post.log_likelihood(x, num_samples=S, key=2)
    exact = h.log_marginal(x, np.ones_like(observed)) - h.log_marginal(x, observed)
    z = np.asarray(post.z, float)
    q_mean = z.mean(1)
    q_cov = np.einsum("nsi,nsj->nij", z - q_mean[:, None], z - q_mean[:, None]) / z.shape[1]
    r_o = importance_relative_variance(*h.posterior(x, observed), q_mean, q_cov)
    r_j = importance_relative_variance(*h.posterior(x, np.ones_like(observed)), q_mean, q_cov)
    tol = 4 * (np.sqrt(r_o / S) + np.sqrt(r_j / S)) + (r_o + r_j) / (2 * S) + 1e-2
    assert np.isfinite(tol).all()
    assert (np.abs(ll - exact) < tol).all(), (np.abs(ll - exact) - tol).max()


def test_sites_in_posterior_and_arviz(fitted):
    h, x, observed, post = fitted
    sites = post.z_sites
    assert list(sites) == ["z1", "z2"] and sites["z2"].shape == (N, 20_000, 2)
    idata = post.to_arviz(log_likelihood=False)
    assert set(idata.posterior.data_vars) == {"z1", "z2"}


@pytest.fixture(scope="module")
def tiny():
    t = vq.datasets.load("banknote", "train")
    opts = dict(hierarchy=[1, 2], hidden=(16,), feature_dim=4, progress=False)
    untrained = vq.train(t, num_epochs=0, method="hvae", **opts)
    trained = vq.train(t, num_epochs=10, **opts)  # hierarchy= alone implies method="hvae"
    return t, untrained, trained


def test_training_raises_the_elbo(tiny):
    _, untrained, trained = tiny
    assert trained.metadata["train_elbo"] > untrained.metadata["train_elbo"] + 1.0
    assert trained.sizes == (1, 2) and trained.latent_dim == 3
    assert len(trained.metadata["kl_per_layer"]) == 2


def test_save_load_and_pickle_round_trip(tiny, tmp_path):
    t, _, m = tiny
    X = np.asarray(t.X[:3], float).copy()
    X[:, 0] = np.nan
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    want = m.given(X).target()
    for back in (vq.load(m.save(tmp_path / "hvae")), pickle.loads(pickle.dumps(m))):
        assert type(back) is type(m) and back.sizes == m.sizes
        assert back.prior.names == ("z1", "z2")
        assert back.metadata["recipe"] == m.metadata["recipe"]
        got = back.given(X).target()
        row = {k: v[1] for k, v in got.data.items()}
        np.testing.assert_allclose(
            jax.vmap(got.logdensity_fn, (0, None))(z, row),
            jax.vmap(want.logdensity_fn, (0, None))(z, row),
            rtol=1e-6,
        )
        for a, b in zip(back.encode_fn(got.data["x"]), m.encode_fn(got.data["x"])):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(back.decode_fn(z)["loc"], m.decode_fn(z)["loc"])


def test_flat_backends_answer_an_hvae(tiny):
    t, _, m = tiny
    X = np.asarray(t.X[:2], float).copy()
    X[:, 1] = np.nan
    post = m.given(X).infer("gaussian", key=0, num_steps=20, num_samples=8)
    assert post.z.shape == (2, 100, 3) and np.isfinite(post.x).all()
    assert {k: v.shape for k, v in post.z_sites.items()} == {"z1": (2, 100, 1), "z2": (2, 100, 2)}


def test_refusals(tiny, tmp_path):
    t, _, m = tiny
    plain = LinearGaussian.random(0, num_features=4, latent_dim=2).vae()
    with pytest.raises(ValueError, match="hierarchical VAE.*method='hvae'"):
        plain.given(np.array([[0.1, np.nan, 0.2, np.nan]])).infer("hierarchical")
    with pytest.raises(ValueError, match="hierarchy must be a non-empty list"):
        vq.train(t, method="hvae", hierarchy=[2, 0], num_epochs=1, progress=False)
    with pytest.raises(ValueError, match="hierarchy must be a non-empty list"):
        vq.train(t, method="hvae", hierarchy=4, num_epochs=1, progress=False)
    with pytest.raises(ValueError, match="real-valued features only"):
        vq.train(vq.datasets.load("penguins", "train"), method="hvae", num_epochs=1, progress=False)
    q = m.given(np.asarray(t.X[:1], float))
    with pytest.raises(ValueError, match="init must be one of"):
        q.infer("hierarchical", init="posterior_matching")
    with pytest.raises(ValueError, match="warmup_steps"):
        q.infer("hierarchical", num_steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="lbfgs"):
        q.infer("hierarchical", optimizer="lbfgs")
    with pytest.raises(ValueError, match="tol= stops a query"):
        q.infer("hierarchical", tol=0.01)
    linear = ORACLES["weak"].model()
    with pytest.raises(TypeError, match="MLPHierarchy"):
        linear.save(tmp_path / "linear")
    with pytest.raises(TypeError, match="MLPHierarchy"):
        pickle.dumps(linear)
