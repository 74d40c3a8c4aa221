"""With ``jax_enable_x64`` vaequery computes in float64 and meets float64 tolerances.

Each test switches x64 on only inside ``jax.enable_x64(True)``: the other tests
of the worker keep float32. The oracle's ``W`` and ``b`` are rounded to float32
values so that ``LinearGaussian.decode`` (which stores them as float32) holds
them exactly; the closed forms are float64 NumPy. The checks are ones float32
cannot pass: relative errors of 1e-10 where float32 rounding alone gives about
1e-7.
"""

import jax
import jax.numpy as jnp
import numpy as np

from vaequery import metrics
from vaequery.backends import FullRank
from vaequery.fit import as_key
from vaequery.testing import LinearGaussian

_O = LinearGaussian.random(1, num_features=3, latent_dim=2, sigma=0.5)
ORACLE = LinearGaussian(
    _O.W.astype(np.float32).astype(float), _O.b.astype(np.float32).astype(float), 0.5
)
_, X = ORACLE.sample(2, 3)
X[:, 2] = np.nan
X[2, 1] = np.nan
OBSERVED = ~np.isnan(X)
MEAN, COV = ORACLE.posterior(X, OBSERVED)


def _log_joint(z, x, observed):
    """Closed form ``log N(z; 0, I) + sum_O log N(x_j; W z + b, sigma^2)``, ``z: [..., d]``."""
    s = ORACLE.sigma
    lp = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * np.log(2 * np.pi)
    r = (np.nan_to_num(x) - (z @ ORACLE.W.T + ORACLE.b)) / s
    ll = -0.5 * r**2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    return lp + np.where(observed, ll, 0.0).sum(-1)


def test_the_exact_posterior_gives_the_closed_form_evidence_to_1e_10():
    with jax.enable_x64(True):
        q = ORACLE.vae().given(X)
        target = q.target()
        assert q.x.dtype == np.float64 and target.data["x"].dtype == jnp.float64
        # the log-density of the query model at random z, against the closed form
        z = np.random.default_rng(0).standard_normal((3, 5, 2))
        lp = jax.vmap(jax.vmap(target.logdensity_fn, (0, None)))(
            jnp.asarray(z), {"x": target.data["x"], "observed": target.data["observed"]}
        )
        assert lp.dtype == jnp.float64
        np.testing.assert_allclose(lp, _log_joint(z, X[:, None], OBSERVED[:, None]), rtol=1e-12)
        # q = the exact posterior: every log-weight log p(x_O, z) - log q(z) is log p(x_O)
        L = np.linalg.cholesky(COV)
        state = {
            "loc": jnp.asarray(MEAN),
            "log_diag": jnp.asarray(np.log(np.diagonal(L, axis1=1, axis2=2))),
            "off_diag": jnp.asarray(np.tril(L, -1)),
        }
        x_joint = np.where(OBSERVED, X, 0.0)
        _, lw = metrics.iwae_log_likelihood(
            FullRank(), target, state, as_key(0), x_joint, OBSERVED, num_samples=64
        )
    assert lw.dtype == np.float64
    exact = ORACLE.log_marginal(X, OBSERVED)
    np.testing.assert_allclose(lw, np.broadcast_to(exact[:, None], lw.shape), rtol=1e-10)


def test_fullrank_lbfgs_lands_on_the_exact_optimum_of_its_fixed_noise():
    # Wu et al.'s de-randomised objective: S fixed draws eps_s. For a Gaussian
    # posterior N(m, Sigma) its optimum is exact: with eps_bar the draws' mean
    # and K K^T their (1/S) covariance, L = chol(Sigma) K^-1, loc = m - L eps_bar.
    S, key = 16, 4
    hp = dict(optimizer="lbfgs", num_steps=60, num_samples=S)
    with jax.enable_x64(True):
        post = ORACLE.vae().given(X).infer("fullrank", key=key, num_draws=4, **hp)
        row_keys = jax.random.split(as_key(key), len(X))
        eps = np.stack(
            [np.asarray(jax.random.normal(jax.random.split(k, 3)[1], (S, 2))) for k in row_keys]
        )
        fit_L = np.asarray(FullRank.cholesky(post.state))
    assert post.z.dtype == post.loss.dtype == np.float64 and eps.dtype == np.float64
    assert not post.failed.any()
    eps_bar = eps.mean(1)
    K = np.linalg.cholesky(
        np.einsum("nsi,nsj->nij", eps - eps_bar[:, None], eps - eps_bar[:, None]) / S
    )
    L = np.linalg.cholesky(COV) @ np.linalg.inv(K)
    loc = MEAN - np.einsum("nij,nj->ni", L, eps_bar)
    # measured: float32 lands within 3e-7 (loc) and 9e-8 (L) of it
    np.testing.assert_allclose(post.state["loc"], loc, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fit_L, L, rtol=0, atol=1e-10)


def test_nuts_draws_and_log_densities_are_float64():
    hp = dict(num_warmup=100, num_chains=2, max_num_doublings=3)
    with jax.enable_x64(True):
        post = ORACLE.vae().given(X).infer("nuts", key=1, num_draws=200, **hp)
    assert post.z.dtype == post.info["logdensity"].dtype == np.float64
    assert not post.failed.any()
    # the sampler's log-density at every draw is the closed form, to float64 rounding
    expect = _log_joint(post.z, X[:, None, None], OBSERVED[:, None, None])
    np.testing.assert_allclose(post.info["logdensity"], expect, rtol=1e-12)
    # and the draws are the posterior's: means within 5 Monte-Carlo standard errors
    # (ESS taken as a quarter of the 400 draws)
    sd = np.sqrt(np.diagonal(COV, axis1=1, axis2=2))
    err = np.abs(post.z.mean((1, 2)) - MEAN) / (sd / np.sqrt(100))
    assert err.max() < 5, err
