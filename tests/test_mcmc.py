"""MCMC backends against the linear-Gaussian oracle, with Monte-Carlo-error tolerances.

Tolerances: a posterior mean (covariance entry) estimated from correlated draws
has Monte-Carlo standard error ``sd / sqrt(ESS)`` of the draws (of the centred
products), ESS from ArviZ. We require every error below ``Z`` MCSEs; with ~100
entries checked, ``Z = 4`` fails a correct sampler with probability < 1 %. The
ESS of the centred products is itself noisy (their z-scores have an RMS of about
1.1-1.2 over seeds, not 1), so covariances get ``Z_COV = 4.5``; the RMS of all
z-scores must stay below 1.5, which a biased sampler fails even when no
single entry does.
"""

import warnings

import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian, importance_relative_variance

warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
import arviz as az  # noqa: E402

Z = 4.0
Z_COV = 4.5
N = 16


def mcse_zscores(z, mu, cov):
    """Errors of means and covariances of ``z [N, C, S, d]`` in MCSE units."""
    n, _, _, d = z.shape
    zm, zc = [], []
    for i in range(n):
        m = z[i].reshape(-1, d).mean(0)
        for a in range(d):
            za = z[i][..., a]
            zm.append((m[a] - mu[i, a]) / (za.std() / np.sqrt(az.ess(za))))
            for b in range(a, d):
                y = (za - m[a]) * (z[i][..., b] - m[b])
                zc.append((y.mean() - cov[i, a, b]) / (y.std() / np.sqrt(az.ess(y))))
    return np.abs(zm), np.abs(zc)


@pytest.fixture(scope="module")
def problem():
    o = LinearGaussian.random(0, num_features=8, latent_dim=3, sigma=0.5)
    _, x = o.sample(1, N)
    obs = np.random.default_rng(2).random(x.shape) < 0.5
    obs[0] = False  # the prior
    return o, x, obs


@pytest.fixture(scope="module")
def nuts_post(problem):
    o, x, obs = problem
    return (
        o.vae().given(np.where(obs, x, np.nan)).infer("nuts", key=0, num_warmup=300, num_draws=1000)
    )


def test_nuts_recovers_oracle_within_mcse(problem, nuts_post):
    o, x, obs = problem
    mu, cov = o.posterior(x, obs)
    zm, zc = mcse_zscores(nuts_post.z, mu, cov)
    assert zm.max() < Z, f"mean error {zm.max():.2f} MCSE"
    assert zc.max() < Z_COV, f"covariance error {zc.max():.2f} MCSE"
    assert np.sqrt(np.mean(np.r_[zm, zc] ** 2)) < 1.5
    diag = nuts_post.diagnose()
    assert (diag["r_hat"] < 1.01).all(), diag["r_hat"].max()
    assert (diag["ess_bulk"] > 400).all()
    assert diag["divergences"].sum() == 0


def test_nuts_info_shapes(nuts_post):
    info = nuts_post.info
    assert nuts_post.z.shape == (N, 4, 1000, 3)
    assert nuts_post.x.shape == (N, 4, 1000, 8)
    assert nuts_post.loss.shape == (N, 0)
    assert info["acceptance_rate"].shape == (N, 4, 1000)
    assert info["diverging"].shape == (N, 4, 1000) and info["diverging"].dtype == bool
    assert info["step_size"].shape == (N, 4) and (info["step_size"] > 0).all()
    # window adaptation targets 0.8; on a Gaussian it overshoots a little
    assert 0.7 < info["acceptance_rate"].mean() < 0.99


def test_nuts_iwae_likelihood_matches_oracle(problem, nuts_post):
    """The fitted Gaussian proposal gives IWAE estimates within their own MC error."""
    o, x, obs = problem
    S = 2000
    ll = nuts_post.log_likelihood(x, num_samples=S)
    exact = o.log_likelihood(x, obs, ~obs)
    loc = np.asarray(nuts_post.state["loc"], float)
    chol = np.asarray(nuts_post.state["chol"], float)
    q_cov = chol @ np.swapaxes(chol, -1, -2)
    r_obs = importance_relative_variance(*o.posterior(x, obs), loc, q_cov)
    r_joint = importance_relative_variance(*o.posterior(x, np.ones_like(obs)), loc, q_cov)
    assert np.isfinite(r_obs).all() and np.isfinite(r_joint).all()
    tol = 4 * (np.sqrt(r_obs / S) + np.sqrt(r_joint / S)) + (r_obs + r_joint) / (2 * S)
    assert (np.abs(ll - exact) < tol + 1e-3).all(), (np.abs(ll - exact) - tol).max()
    # the proposal covers the posterior: its weights for p(z | x_O) are tame
    assert r_obs.max() < 0.5


def test_nuts_agrees_with_numpyro_nuts(problem, nuts_post):
    """The same NumPyro model under numpyro's own NUTS gives the same posterior."""
    from jax import random
    from numpyro.infer import MCMC, NUTS

    o, x, obs = problem
    q = o.vae().given(np.where(obs, x, np.nan))
    rows = [int(np.argmax(obs.sum(1))), int(np.argmin(obs[1:].sum(1))) + 1]
    for i in rows:
        model_fn, kwargs = q.numpyro_model(row=i)
        mcmc = MCMC(NUTS(model_fn), num_warmup=300, num_samples=2000, progress_bar=False)
        mcmc.run(random.key(i), **kwargs)
        zn = np.asarray(mcmc.get_samples()["z"])  # [S, d]
        zb = nuts_post.z[i]  # [C, S, d]
        for a in range(3):
            se_n = zn[:, a].std() / np.sqrt(az.ess(zn[None, :, a]))
            se_b = zb[..., a].std() / np.sqrt(az.ess(zb[..., a]))
            diff = zn[:, a].mean() - zb[..., a].mean()
            assert abs(diff) < Z * np.hypot(se_n, se_b), (i, a, diff, se_n, se_b)
            ratio = zn[:, a].std() / zb[..., a].std()
            assert abs(np.log(ratio)) < 0.1, (i, a, ratio)


def test_hmc_recovers_oracle(problem):
    o, x, obs = problem
    sub = slice(0, 8)
    post = (
        o.vae()
        .given(np.where(obs[sub], x[sub], np.nan))
        .infer("hmc", key=1, num_warmup=200, num_draws=500)
    )
    mu, cov = o.posterior(x[sub], obs[sub])
    zm, zc = mcse_zscores(post.z, mu, cov)
    assert zm.max() < Z and zc.max() < Z_COV, (zm.max(), zc.max())
    assert post.info["step_size"].shape == (8, 4)
    assert (post.diagnose(warn=False)["r_hat"] < 1.02).all()


def test_nuts_dense_mass_recovers_oracle(problem):
    # all queries vmapped in lock-step (batching="auto" runs them one after
    # another on CPU; the other NUTS tests cover that)
    o, x, obs = problem
    sub = slice(8, 12)
    post = (
        o.vae()
        .given(np.where(obs[sub], x[sub], np.nan))
        .infer("nuts", key=2, num_warmup=200, num_draws=500, dense_mass=True, batching="vmap")
    )
    mu, cov = o.posterior(x[sub], obs[sub])
    zm, zc = mcse_zscores(post.z, mu, cov)
    assert zm.max() < Z and zc.max() < Z_COV, (zm.max(), zc.max())


# ------------------------------------------------------------- encoder samplers
@pytest.fixture(scope="module")
def ortho_problem():
    """An oracle whose diagonal encoder is the exact ``p(z | x)`` (orthogonal W)."""
    o = LinearGaussian.random(0, num_features=8, latent_dim=3, sigma=0.5).orthogonalised()
    _, x = o.sample(1, N)
    obs = np.random.default_rng(2).random(x.shape) < 0.5
    return o, x, obs


def test_orthogonalised_oracle_has_the_same_marginals(problem, ortho_problem):
    o, x, obs = problem
    o2 = ortho_problem[0]
    np.testing.assert_allclose(
        o.log_likelihood(x, obs, ~obs), o2.log_likelihood(x, obs, ~obs), rtol=1e-10
    )
    full = np.ones_like(obs)
    _, cov = o2.posterior(x, full)
    np.testing.assert_allclose(cov[0], np.diag(np.diag(cov[0])), atol=1e-12)
    loc, scale = o2.encoder()(x[:2].astype(np.float32))
    mu, _ = o2.posterior(x[:2], full[:2])
    np.testing.assert_allclose(loc, mu, atol=1e-4)
    np.testing.assert_allclose(scale[0], np.sqrt(np.diag(cov[0])), rtol=1e-5)


def test_mwg_with_exact_encoder_matches_oracle(ortho_problem):
    o, x, obs = ortho_problem
    post = o.vae_with_encoder().given(np.where(obs, x, np.nan)).infer("mwg", key=0, num_draws=600)
    assert post.z.shape == (N, 4, 600, 3)
    mu, cov = o.posterior(x, obs)
    zm, zc = mcse_zscores(post.z, mu, cov)
    assert zm.max() < Z and zc.max() < Z_COV, (zm.max(), zc.max())
    # the exact conditional as independence proposal is always accepted
    assert post.info["acceptance_rate"].mean() > 0.99


def test_wrong_encoder_biases_pseudo_gibbs_but_not_mwg(ortho_problem):
    o, x, obs = ortho_problem
    q = o.vae_with_encoder(shift=0.1, scale_factor=1.5).given(np.where(obs, x, np.nan))
    mu, cov = o.posterior(x, obs)
    mwg = q.infer("mwg", key=0, num_draws=600)
    zm, zc = mcse_zscores(mwg.z, mu, cov)
    assert zm.max() < Z and zc.max() < Z_COV, (zm.max(), zc.max())
    assert 0.1 < mwg.info["acceptance_rate"].mean() < 0.9
    pg = q.infer("pseudo_gibbs", key=0, num_draws=600)
    zm, zc = mcse_zscores(pg.z, mu, cov)
    assert zm.max() > 5 * Z, f"pseudo-Gibbs bias only {zm.max():.1f} MCSE"
    assert (pg.info["acceptance_rate"] == 1).all()


def test_gibbs_needs_an_encoder(problem):
    o, x, obs = problem
    q = o.vae().given(np.where(obs, x, np.nan))
    with pytest.raises(ValueError, match="needs the model's encoder.*nuts"):
        q.infer("mwg")


def test_gibbs_thinning_and_burnin(ortho_problem):
    o, x, obs = ortho_problem
    q = o.vae_with_encoder().given(np.where(obs[:2], x[:2], np.nan))
    p = q.infer("pseudo_gibbs", key=0, num_draws=5, thin=3, num_burnin=0, num_chains=2)
    assert p.z.shape == (2, 2, 5, 3)


@pytest.mark.parametrize(
    "name, kw, match",
    [
        ("nuts", dict(num_chains=0), "num_chains"),
        ("nuts", dict(num_warmup=0), "num_warmup"),
        ("nuts", dict(target_accept=1.2), "target_accept"),
        ("nuts", dict(batching="pmap"), "batching"),
        ("hmc", dict(num_integration_steps=0), "num_integration_steps"),
        ("mwg", dict(thin=0), "thin"),
        ("pseudo_gibbs", dict(num_burnin=-1), "num_burnin"),
    ],
)
def test_bad_hyperparameters_are_rejected(name, kw, match):
    with pytest.raises(ValueError, match=match):
        vq.backends.get(name, **kw)
