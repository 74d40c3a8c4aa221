"""The richer VI backends (fullrank, iaf, mixture, planar, numpyro) against the
exact linear-Gaussian posterior.

Tolerances are Monte-Carlo ones. Each backend must be "as accurate as ``N_EQ``
exact posterior draws": with moments of ``q`` estimated from ``M`` of its own
draws, ``|mean - mu| / sd <= 4 / sqrt(N_EQ) + 4 / sqrt(M)`` and, in the
posterior's whitened coordinates (``Sigma^{-1/2} C Sigma^{-1/2}``, the identity
when exact), every covariance entry within ``4 sqrt(2 / N_EQ) + 4 sqrt(2 / M)``.
``N_EQ`` per backend is what its default budget (S = 100, T = 300) reaches with
a margin; the mixture and the flows are not Gaussian families, so their
``N_EQ`` is smaller than the full-rank Gaussian's. The IWAE tolerance uses the
importance-weight relative variance ``r`` (exact for Gaussian ``q``, else the
sample value from ``M`` draws): ``4 (sqrt(r_O/S) + sqrt(r_J/S)) + (r_O + r_J)/(2S)``.
"""

import jax
import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import importance_relative_variance

M = 20_000
N_QUERIES = 32
N_EQ = {"fullrank": 1000, "iaf": 1000, "mixture": 300, "planar": 200}


def _draws(post, m=M, key=11):
    f = jax.jit(jax.vmap(lambda s, k: post.backend.sample_and_log_prob(s, k, m)))
    z, log_q = f(post.state, jax.random.split(jax.random.key(key), post.num_queries))
    return np.asarray(z, float), np.asarray(log_q, float)


def _moment_errors(z, mu, cov):
    m = z.mean(1)
    c = z - m[:, None]
    C = np.einsum("nsa,nsb->nab", c, c) / (z.shape[1] - 1)
    sd = np.sqrt(np.diagonal(cov, 0, 1, 2))
    Li = np.linalg.inv(np.linalg.cholesky(cov))
    white = Li @ C @ np.swapaxes(Li, 1, 2) - np.eye(cov.shape[-1])
    return np.abs(m - mu) / sd, np.abs(white)


def _log_joint(oracle, z, x, mask):
    """Float64 ``log p(z) + log p(x_mask | z)`` for ``z [N, M, d]``."""
    d = z.shape[-1]
    lp = -0.5 * np.sum(z**2, -1) - 0.5 * d * np.log(2 * np.pi)
    r = (x[:, None] - z @ oracle.W.T - oracle.b) / oracle.sigma
    ll = -0.5 * r**2 - np.log(oracle.sigma) - 0.5 * np.log(2 * np.pi)
    return lp + np.sum(ll * mask[:, None], -1)


def _rel_var(log_w):
    w = np.exp(log_w - log_w.max(-1, keepdims=True))
    return w.var(-1) / w.mean(-1) ** 2


@pytest.fixture(scope="module")
def batch(oracle, oracle_batch):
    x, observed = oracle_batch
    return x[:N_QUERIES], observed[:N_QUERIES]


@pytest.fixture(scope="module", params=sorted(N_EQ))
def fitted(request, oracle, batch):
    x, observed = batch
    name = request.param
    post = oracle.vae().given(np.where(observed, x, np.nan)).infer(name, key=0)
    return name, post, _draws(post)


def test_posterior_mean_and_covariance(oracle, batch, fitted):
    name, post, (z, _) = fitted
    mu, cov = oracle.posterior(*batch)
    mean_err, cov_err = _moment_errors(z, mu, cov)
    n = N_EQ[name]
    assert mean_err.max() < 4 / np.sqrt(n) + 4 / np.sqrt(M), (name, mean_err.max())
    assert cov_err.max() < 4 * np.sqrt(2 / n) + 4 * np.sqrt(2 / M), (name, cov_err.max())


def test_iwae_matches_exact_log_likelihood(oracle, batch, fitted):
    name, post, (z, log_q) = fitted
    x, observed = batch
    S = 2000
    ll = post.log_likelihood(x, num_samples=S, key=2)
    exact = oracle.log_likelihood(x, observed, ~observed)
    if name == "fullrank":  # q is Gaussian: exact weight variance
        L = np.asarray(post.backend.cholesky(post.state), float)
        q = (np.asarray(post.state["loc"], float), L @ np.swapaxes(L, 1, 2))
        r_o = importance_relative_variance(*oracle.posterior(x, observed), *q)
        r_j = importance_relative_variance(*oracle.posterior(x, np.ones_like(observed)), *q)
    else:
        r_o = _rel_var(_log_joint(oracle, z, x, observed) - log_q)
        r_j = _rel_var(_log_joint(oracle, z, x, np.ones_like(observed)) - log_q)
    tol = 4 * (np.sqrt(r_o / S) + np.sqrt(r_j / S)) + (r_o + r_j) / (2 * S) + 1e-3
    err = np.abs(ll - exact)
    assert np.isfinite(tol).all()
    assert (err < tol).all(), (name, (err - tol).max())
    assert err.mean() < 0.05 * np.abs(exact).mean()


def test_lbfgs_on_fixed_noise(oracle, batch):
    # Wu et al.'s de-randomised objective: a deterministic function, so the line
    # search makes the loss monotone, and its optimum is off the exact one only
    # by the fixed-sample error (about as accurate as S exact draws; N_EQ = S/2).
    x, observed = batch
    x, observed = x[:16], observed[:16]
    S = 400
    post = (
        oracle.vae()
        .given(np.where(observed, x, np.nan))
        .infer("fullrank", key=0, optimizer="lbfgs", num_steps=40, num_samples=S)
    )
    assert (np.diff(post.loss, axis=1) <= 1e-5 * np.abs(post.loss[:, 1:]) + 1e-6).all()
    mu, cov = oracle.posterior(x, observed)
    mean_err, cov_err = _moment_errors(_draws(post)[0], mu, cov)
    n = S / 2
    assert mean_err.max() < 4 / np.sqrt(n) + 4 / np.sqrt(M), mean_err.max()
    assert cov_err.max() < 4 * np.sqrt(2 / n) + 4 * np.sqrt(2 / M), cov_err.max()


def test_lbfgs_trains_a_flow(oracle, batch):
    # a flow's parameter pytree holds integer masks and permutations that
    # L-BFGS must leave alone; the deterministic objective decreases monotonically
    x, observed = batch
    x, observed = x[:4], observed[:4]
    post = (
        oracle.vae()
        .given(np.where(observed, x, np.nan))
        .infer("iaf", key=0, optimizer="lbfgs", num_steps=15, num_samples=32)
    )
    assert np.isfinite(post.loss).all()
    assert (np.diff(post.loss, axis=1) <= 1e-5 * np.abs(post.loss[:, 1:]) + 1e-6).all()
    assert (post.loss[:, -1] < post.loss[:, 0] - 1.0).all()


@pytest.mark.parametrize("guide", ["AutoNormal", "AutoMultivariateNormal"])
def test_numpyro_autoguides(oracle, batch, guide):
    x, observed = batch
    x, observed = x[:16], observed[:16]
    post = oracle.vae().given(np.where(observed, x, np.nan)).infer("numpyro", key=0, guide=guide)
    z, _ = _draws(post)
    if guide == "AutoNormal":  # mean-field optimum: exact mean, variances 1/diag(prec)
        mu, var = oracle.mean_field(x, observed)
        cov = np.eye(3) * var[:, None, :]
    else:
        mu, cov = oracle.posterior(x, observed)
    mean_err, cov_err = _moment_errors(z, mu, cov)
    n = 1000
    assert mean_err.max() < 4 / np.sqrt(n) + 4 / np.sqrt(M), mean_err.max()
    if guide == "AutoNormal":  # only the variances are comparable
        cov_err = cov_err[:, np.eye(3, dtype=bool)]
    assert cov_err.max() < 4 * np.sqrt(2 / n) + 4 * np.sqrt(2 / M), cov_err.max()


def _flow_log_q_check(backend, d=3):
    """log q from sample_and_log_prob equals base density - log|det J| by autodiff."""
    params = backend.init_params(jax.random.key(1), _FakeTarget(d), None)
    # move away from the near-identity initialisation
    import equinox as eqx

    train, rest = eqx.partition(params["flow"], eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(train)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [a + 0.7 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
    params = {**params, "flow": eqx.combine(jax.tree.unflatten(tree, leaves), rest)}
    bij = backend._bijection(params)
    u = jax.random.normal(jax.random.key(3), (64, d))

    @eqx.filter_jit
    def both(bij, u):
        _, log_det = jax.vmap(bij.transform_and_log_det)(u)
        jac = jax.vmap(jax.jacobian(lambda v: bij.transform_and_log_det(v)[0]))(u)
        return log_det, jac

    log_det, jac = both(bij, u)
    np.testing.assert_allclose(log_det, np.linalg.slogdet(np.asarray(jac, float))[1], atol=2e-4)
    return params, bij


class _FakeTarget:
    encode_fn = None

    def __init__(self, d):
        self.latent_dim = d


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_flow_log_det_matches_autodiff(name):
    from flowjax.bijections.planar import _UnconditionalPlanar

    params, bij = _flow_log_q_check(vq.backends.get(name))
    if name == "planar":  # the u-hat constraint keeps every layer invertible
        d = 3
        for p in np.asarray(bij.bijection.bijections[0].params):
            uhat = _UnconditionalPlanar(p[:d], p[d : 2 * d], p[-1]).get_act_scale()
            assert p[:d] @ np.asarray(uhat) > -1


@pytest.mark.parametrize(
    "name, hp",
    [
        ("mixture", dict(num_components=0)),
        ("mixture", dict(optimizer="lbfgs")),
        ("iaf", dict(num_layers=0)),
        ("planar", dict(num_layers=1.5)),
        ("fullrank", dict(optimizer="sgd")),
        ("fullrank", dict(num_samples=0)),
        ("fullrank", dict(beta=-1.0)),
        ("numpyro", dict(guide="AutoNothing")),
        ("numpyro", dict(beta=2.0)),
    ],
)
def test_bad_hyperparameters_are_reported(name, hp):
    with pytest.raises(ValueError, match=next(iter(hp))):
        vq.backends.get(name, **hp)


def test_oracle_is_not_trivial(oracle, batch):
    # the test batch has correlated posteriors (so a diagonal family would fail
    # the covariance test): the largest |correlation| is far from 0
    _, cov = oracle.posterior(*batch)
    sd = np.sqrt(np.diagonal(cov, 0, 1, 2))
    corr = cov / sd[:, :, None] / sd[:, None, :]
    assert np.abs(corr - np.eye(3)).max() > 0.5
