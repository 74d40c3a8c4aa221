"""Latent priors with constrained sites (positive scales, intervals), against exact answers.

Backends work in NumPyro's unconstrained space (``log s`` for a positive ``s``,
the log-Jacobian in the density); ``Posterior.z_sites`` maps draws back.

* **Log-normal oracle.** ``s ~ LogNormal(0, I_d)``, ``x | s ~ N(W log s + b,
  sigma^2 I)``: in ``u = log s`` this is the linear-Gaussian model, so the
  density of ``u``, the posterior ``p(u | x_O)`` and ``log p(x_U | x_O)`` are
  exact (:class:`vaequery.testing.LinearGaussian`), and ``E[s_k | x_O] =
  exp(mu_k + Sigma_kk / 2)``. Two oracles (d = 2, sigma = 0.4; d = 3, sigma = 0.25).
  Tolerances: a full-rank fit is held to the Monte-Carlo error of
  ``N_EQ = 1000`` exact draws as in ``test_latent_prior`` (mean error below
  ``4 / sqrt(N_EQ)`` posterior sd, whitened covariance within ``4 sqrt(2 / N_EQ)``);
  the IWAE within the tolerance set by the exact relative variance of the importance
  weights (``importance_relative_variance``).
* **Scale hierarchy.** ``s ~ HalfNormal(1)``, ``w | s ~ N(0, s^2)``, ``x_j | w ~
  N(a_j w + c_j, sigma^2)``: a funnel, whose posterior moments of ``s`` and ``w``
  are computed here by quadrature on a 1201 x 1201 grid over ``(log s, w)``;
  NUTS means within 4 MCSE.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.stats import norm

import vaequery as vq
from vaequery.testing import LinearGaussian, importance_relative_variance

N_EQ = 1000
N = 8


def lognormal_model(o):
    W, b = jnp.asarray(o.W, jnp.float32), jnp.asarray(o.b, jnp.float32)
    d = o.latent_dim

    def prior():
        numpyro.sample("s", dist.LogNormal(jnp.zeros(d), 1.0).to_event(1))

    return vq.from_decoder(
        lambda s: jnp.log(s) @ W.T + b,
        latent_dim=d,
        features=o.num_features,
        scale=o.sigma,
        prior=prior,
    )


ORACLES = {
    "d2": LinearGaussian.random(3, num_features=6, latent_dim=2, sigma=0.4),
    "d3": LinearGaussian.random(7, num_features=8, latent_dim=3, sigma=0.25),
}


@pytest.fixture(scope="module", params=sorted(ORACLES))
def lognormal(request):
    o = ORACLES[request.param]
    vae = lognormal_model(o)
    _, x = o.sample(1, N)
    obs = np.random.default_rng(0).random(x.shape) < 0.5
    obs[:, 0] = True
    X = np.where(obs, x, np.nan)
    post = vae.given(X).infer("fullrank", key=0, num_draws=2000)
    return o, vae, x, obs, post


def test_the_density_is_that_of_log_s_with_its_jacobian(lognormal):
    o, vae, x, obs, _ = lognormal
    tgt = vae.given(np.where(obs, x, np.nan)).target()
    u = np.random.default_rng(1).normal(size=(N, o.latent_dim))
    got = jax.vmap(tgt.logdensity_fn)(jnp.asarray(u, jnp.float32), tgt.data)
    mean = u @ o.W.T + o.b
    exact = norm.logpdf(u).sum(-1) + np.where(obs, norm.logpdf(x, mean, o.sigma), 0).sum(-1)
    np.testing.assert_allclose(np.asarray(got), exact, rtol=1e-5, atol=1e-4)


def test_fullrank_matches_the_exact_posterior_and_sites_come_back_positive(lognormal):
    o, vae, x, obs, post = lognormal
    mu, cov = o.posterior(x, obs)
    z = np.asarray(post.z, np.float64)  # unconstrained: log s
    sd = np.sqrt(np.diagonal(cov, 0, 1, 2))
    assert np.max(np.abs(z.mean(1) - mu) / sd) < 4 / np.sqrt(N_EQ) * 1.0 + 0.03
    for i in range(N):
        L = np.linalg.cholesky(cov[i])
        w = np.linalg.solve(L, (z[i] - z[i].mean(0)).T)
        err = np.abs(np.cov(w) - np.eye(o.latent_dim)).max()
        assert err < 4 * np.sqrt(2 / N_EQ), (i, err)
    s = post.z_sites["s"]
    assert s.shape == z.shape and np.all(s > 0)
    np.testing.assert_allclose(s, np.exp(z), rtol=2e-5)
    # E[s | x_O] = exp(mu + Sigma_kk / 2), relative error of a lognormal mean from 2000 draws
    exact = np.exp(mu + np.diagonal(cov, 0, 1, 2) / 2)
    rel_sd = np.sqrt(np.expm1(np.diagonal(cov, 0, 1, 2)) / 2000)
    assert np.all(np.abs(s.mean(1) / exact - 1) < 4 * rel_sd + 0.02)


def test_iwae_and_imputation_decode_the_sites_own_values(lognormal):
    o, vae, x, obs, post = lognormal
    S = 2000
    ll = post.log_likelihood(x, num_samples=S, key=1)
    # IWAE tolerance from the exact relative variance of the importance weights of
    # the fitted Gaussian q (in log s) against p(u | x_O) and p(u | x) (as test_latent_prior)
    loc = np.asarray(post.state["loc"], float)
    L = np.asarray(post.backend.cholesky(post.state), float)
    C = L @ np.swapaxes(L, 1, 2)
    r_o = importance_relative_variance(*o.posterior(x, obs), loc, C)
    r_j = importance_relative_variance(*o.posterior(x, np.ones_like(obs)), loc, C)
    tol = 4 * (np.sqrt(r_o / S) + np.sqrt(r_j / S)) + (r_o + r_j) / (2 * S) + 1e-3
    assert np.isfinite(tol).all()
    err = np.abs(ll - o.log_likelihood(x, obs, ~obs))
    assert (err < tol).all(), (err, tol)
    # predictive mean of the targets: W mu + b (the decoder gets s = exp(u))
    mu, cov = o.posterior(x, obs)
    exact = mu @ o.W.T + o.b
    sd = np.sqrt(np.einsum("jd,nde,je->nj", o.W, cov, o.W))
    imputed = post.impute()
    err = np.abs(imputed - exact)[~obs] / sd[~obs]
    assert err.max() < 4 / np.sqrt(N_EQ) + 0.03


class Funnel:
    """``s ~ HalfNormal(1)``, ``w | s ~ N(0, s^2)``, ``x_j ~ N(a_j w + c_j, sigma^2)``."""

    a = np.array([1.0, -0.5, 0.8])
    c = np.array([0.2, 0.0, -0.3])
    sigma = 0.6

    def prior(self):
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("w", dist.Normal(0.0, s))

    def vae(self):
        a, c = jnp.asarray(self.a, jnp.float32), jnp.asarray(self.c, jnp.float32)
        return vq.from_decoder(
            lambda z: z[..., 1:2] * a + c,
            latent_dim=2,
            features=3,
            scale=self.sigma,
            prior=self.prior,
        )

    def moments(self, x, obs):
        """``E[s], E[w], E[w^2]`` by quadrature over ``(log s, w)``."""
        u = np.linspace(-9.0, 3.0, 1201)[:, None]
        w = np.linspace(-6.0, 6.0, 1201)[None, :]
        s = np.exp(u)
        logp = np.log(2.0) + norm.logpdf(s) + u + norm.logpdf(w, 0.0, s)
        for j in np.flatnonzero(obs):
            logp = logp + norm.logpdf(x[j], self.a[j] * w + self.c[j], self.sigma)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        return (p * s).sum(), (p * w).sum(), (p * w**2).sum()


def test_a_scale_hierarchy_against_quadrature():
    f = Funnel()
    X = np.array([[1.2, np.nan, 0.9], [-0.4, 0.3, np.nan], [np.nan, np.nan, np.nan]])
    post = f.vae().given(X).infer("nuts", key=0, num_warmup=400, num_draws=500)
    sites = post.z_sites
    assert np.all(sites["s"] > 0)
    for i in range(len(X)):
        exact = f.moments(np.nan_to_num(X[i]), ~np.isnan(X[i]))
        for val, ex in zip([sites["s"][i], sites["w"][i], sites["w"][i] ** 2], exact, strict=True):
            mcse = float(az.mcse(np.asarray(val)))
            assert abs(val.mean() - ex) < 4 * mcse + 1e-3, (i, val.mean(), ex, mcse)


def test_refused_supports_name_the_site():
    def corr():
        numpyro.sample("L", dist.LKJCholesky(2, 1.0))

    with pytest.raises(ValueError, match="site 'L' .* changes its shape"):
        vq.from_decoder(lambda z: z[..., :3], 4, 3, prior=corr)
