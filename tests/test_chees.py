"""The "chees" backend against exact linear-Gaussian posteriors, MCSE tolerances.

Two oracles of different shape: the default one (8 features, 3 latents,
sigma 0.5) and a sharper, more correlated one (12 features, 5 latents, sigma
0.2, weights of scale 1.5), where the posterior sd ranges over an order of
magnitude and its axes are not those of a diagonal mass matrix. Tolerances are
those of ``tests/test_mcmc.py``: every error of a posterior mean (covariance
entry) below ``Z`` (``Z_COV``) Monte-Carlo standard errors, their RMS below 1.5.
"""

import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian

from .test_mcmc import Z_COV, Z, mcse_zscores

N = 6
D = 200  # kept draws per chain (x thin=4 transitions)
SETTINGS = {
    "d3_sigma0.5": dict(seed=0, num_features=8, latent_dim=3, sigma=0.5),
    "d5_sigma0.2": dict(seed=4, num_features=12, latent_dim=5, sigma=0.2, weight_scale=1.5),
}
# each setting compiles its own program (~6 s on CPU): one runs the queries one
# after another ("auto" is "map" on CPU), the other all of them in lock-step
BATCHING = {"d3_sigma0.5": "auto", "d5_sigma0.2": "vmap"}


def _problem(setting):
    o = LinearGaussian.random(**SETTINGS[setting])
    _, x = o.sample(1, N)
    obs = np.random.default_rng(2).random(x.shape) < 0.5
    obs[0] = False  # the prior
    return o, x, obs


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_chees_recovers_oracle_within_mcse(setting):
    o, x, obs = _problem(setting)
    post = (
        o.vae()
        .given(np.where(obs, x, np.nan))
        .infer("chees", key=0, num_warmup=200, num_draws=D, batching=BATCHING[setting])
    )
    C, d = 8, o.latent_dim
    assert post.z.shape == (N, C, D, d)
    mu, cov = o.posterior(x, obs)
    zm, zc = mcse_zscores(post.z, mu, cov)
    assert zm.max() < Z, f"mean error {zm.max():.2f} MCSE"
    assert zc.max() < Z_COV, f"covariance error {zc.max():.2f} MCSE"
    assert np.sqrt(np.mean(np.r_[zm, zc] ** 2)) < 1.5
    diag = post.diagnose(warn=False, num_samples=64)
    assert (diag["r_hat"] < 1.01).all(), diag["r_hat"].max()
    assert (diag["ess_bulk"] > 400).all(), diag["ess_bulk"].min()
    assert diag["divergences"].sum() == 0
    info = post.info
    # one step size and one trajectory per query: the chains move in lock-step
    assert info["step_size"].shape == (N, C) and (info["step_size"] > 0).all()
    assert (info["step_size"] == info["step_size"][:, :1]).all()
    steps = info["num_integration_steps"]
    assert steps.shape == (N, C, D) and (steps >= 1).all()
    assert (steps == steps[:, :1]).all()
    # the jitter: the path length varies from transition to transition
    assert (steps.std(-1) > 0).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_chains=1), "num_chains"),
        (dict(num_chains=2.5), "num_chains"),
        (dict(num_warmup=0), "num_warmup"),
        (dict(target_accept=1.0), "target_accept"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(initial_step_size=-0.1), "initial_step_size"),
        (dict(jitter=1.5), "jitter"),
        (dict(max_leapfrog_steps=0), "max_leapfrog_steps"),
        (dict(batching="pmap"), "batching"),
        (dict(proposal_scale=0), "proposal_scale"),
    ],
)
def test_bad_hyperparameters_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        vq.backends.get("chees", **kw)
