"""Pathfinder against the exact linear-Gaussian posterior.

On a linear-Gaussian oracle the log-density is quadratic: L-BFGS reaches the
mode and each iterate's Gaussian differs from the exact posterior only by the
L-BFGS inverse-Hessian approximation (few pairs, inexact line search) and by
which iterate the noisy ELBO picks. ``Fit.state`` is a Gaussian, so its
distance from the posterior is computed exactly (no draws): the KL divergence
``KL(q || p)``, the mean error in posterior standard deviations and the
whitened covariance error. Those bounds are approximation tolerances, set about
twice the worst values measured (table in ``docs/pathfinder.md``). The IWAE
likelihood gets a Monte-Carlo tolerance from the exact importance-weight
relative variance ``r`` of the Gaussian proposal, as in ``test_vi_backends``.
"""

import jax
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import vaequery as vq
from vaequery.testing import LinearGaussian, importance_relative_variance

N_QUERIES = 16
#: (seed, num_features, latent_dim, sigma) -> (mean KL, max KL) bounds in nats
SETTINGS = {(0, 8, 3, 0.5): (0.15, 1.5), (1, 20, 6, 0.2): (0.25, 1.5)}


def _gaussian_kl(m1, c1, m2, c2):
    d = m1.shape[-1]
    p2 = np.linalg.inv(c2)
    diff = m2 - m1
    return 0.5 * (
        np.trace(p2 @ c1, axis1=-2, axis2=-1)
        + np.einsum("ni,nij,nj->n", diff, p2, diff)
        - d
        + np.linalg.slogdet(c2)[1]
        - np.linalg.slogdet(c1)[1]
    )


@pytest.fixture(scope="module", params=sorted(SETTINGS), ids=lambda s: f"d{s[2]}-sigma{s[3]}")
def fitted(request):
    seed, D, d, sigma = request.param
    oracle = LinearGaussian.random(seed, num_features=D, latent_dim=d, sigma=sigma)
    _, x = oracle.sample(seed + 1, N_QUERIES)
    observed = np.random.default_rng(seed + 2).random(x.shape) < 0.5
    post = oracle.vae().given(np.where(observed, x, np.nan)).infer("pathfinder", key=0)
    loc = np.asarray(post.state["loc"][:, 0], float)
    L = np.asarray(post.state["chol"][:, 0], float)
    return request.param, oracle, x, observed, post, (loc, L @ np.swapaxes(L, 1, 2))


def test_gaussian_is_close_to_the_exact_posterior(fitted):
    setting, oracle, x, observed, post, (loc, cov_q) = fitted
    mu, cov = oracle.posterior(x, observed)
    kl = _gaussian_kl(loc, cov_q, mu, cov)
    mean_bound, max_bound = SETTINGS[setting]
    assert kl.mean() < mean_bound and kl.max() < max_bound, (kl.mean(), kl.max())
    sd = np.sqrt(np.diagonal(cov, 0, 1, 2))
    assert (np.abs(loc - mu) / sd).max() < 1.0
    Li = np.linalg.inv(np.linalg.cholesky(cov))
    white = Li @ cov_q @ np.swapaxes(Li, 1, 2)
    assert np.abs(white - np.eye(cov.shape[-1])).max() < 2.0
    # the draws in Posterior.z are those of the Gaussian: their mean agrees
    # with loc within Monte-Carlo error (100 draws, 5 standard errors)
    z = post.z
    se = np.sqrt(np.diagonal(cov_q, 0, 1, 2) / z.shape[1])
    assert (np.abs(z.mean(1) - loc) < 5 * se).all()
    # the path ran and the chosen iterate is a real one
    info = post.info
    assert (info["best_iteration"] <= info["num_iterations"]).all()
    assert (info["num_iterations"] >= 2).all()
    # Fit.loss is the running best negative ELBO: non-increasing, ends at -elbo
    assert (np.diff(post.loss, axis=1) <= 0).all()
    np.testing.assert_allclose(post.loss[:, -1], -info["elbo"][:, 0], rtol=1e-6)


def test_iwae_matches_exact_log_likelihood(fitted):
    _, oracle, x, observed, post, q = fitted
    S = 2000
    ll = post.log_likelihood(x, num_samples=S, key=2)
    exact = oracle.log_likelihood(x, observed, ~observed)
    r_o = importance_relative_variance(*oracle.posterior(x, observed), *q)
    r_j = importance_relative_variance(*oracle.posterior(x, np.ones_like(observed)), *q)
    # Where q is narrower than p by more than sqrt(2) in some direction the
    # weights have infinite variance (r = inf) and only an approximation
    # tolerance applies; Pathfinder's Gaussian is often that narrow.
    finite = np.isfinite(r_o) & np.isfinite(r_j)
    assert finite.mean() >= 0.5, finite
    tol = 4 * (np.sqrt(r_o / S) + np.sqrt(r_j / S)) + (r_o + r_j) / (2 * S) + 1e-3
    err = np.abs(ll - exact)
    assert (err[finite] < tol[finite]).all(), (err - tol)[finite].max()
    assert (err < 3.0).all() and err.mean() < 0.5, (err.max(), err.mean())


def test_mixture_log_prob_is_exact():
    # the multi-path proposal: the uniform mixture of the paths' Gaussians
    rng = np.random.default_rng(0)
    P, d = 3, 2
    loc = rng.standard_normal((P, d)).astype(np.float32)
    A = rng.standard_normal((P, d, d))
    covs = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(d)
    state = {"loc": loc, "chol": np.linalg.cholesky(covs).astype(np.float32)}
    backend = vq.backends.get("pathfinder", num_paths=P)
    z, log_q = jax.jit(backend.sample_and_log_prob, static_argnums=2)(
        state, jax.random.key(1), 4000
    )
    z = np.asarray(z, float)
    dens = np.mean([multivariate_normal(loc[p], covs[p]).pdf(z) for p in range(P)], 0)
    np.testing.assert_allclose(log_q, np.log(dens), rtol=1e-4, atol=1e-4)
    # every component is drawn, each about a third of the time
    comp = np.argmin([np.sum((z - loc[p]) ** 2 @ np.ones(d)[:, None], -1) for p in range(P)], 0)
    assert len(np.unique(comp)) == P


@pytest.mark.parametrize(
    "hp, match",
    [
        (dict(history_size=0), "history_size must be an integer >= 1"),
        (dict(num_paths=1.5), "num_paths must be an integer >= 1"),
        (dict(num_steps=0), "num_steps must be an integer >= 1"),
        (dict(num_samples=0), "num_samples must be an integer >= 1"),
        (dict(max_line_search_steps=0), "max_line_search_steps"),
        (dict(optimizer="adam"), "optimizer must be 'lbfgs'"),
        (dict(gtol=-1.0), "gtol must be a positive number"),
        (dict(tol=0.1), "does not support tol"),
        (dict(init="nowhere"), "init must be one of"),
    ],
)
def test_bad_hyperparameters(hp, match):
    with pytest.raises(ValueError, match=match):
        vq.backends.get("pathfinder", **hp)
