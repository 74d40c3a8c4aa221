"""The query is a real NumPyro model: its density is exact and NumPyro's own
inference runs on it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.util import log_density
from scipy import stats


def _row(oracle, seed=0):
    _, x = oracle.sample(seed, 1)
    observed = np.zeros(8, bool)
    observed[[0, 2, 3, 6]] = True
    return x[0], observed


def test_log_density_is_prior_plus_observed_likelihood(oracle):
    x, observed = _row(oracle)
    q = oracle.vae().given(np.where(observed, x, np.nan))
    model, kwargs = q.numpyro_model()
    z = np.array([0.3, -1.2, 0.7])
    got = log_density(model, (), kwargs, {"z": jnp.asarray(z, jnp.float32)})[0]
    mean = oracle.W @ z + oracle.b
    ref = stats.norm.logpdf(z).sum() + stats.norm(mean, oracle.sigma).logpdf(x)[observed].sum()
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # the Target that backends see is derived from the same model
    t = q.target()
    row = jax.tree.map(lambda a: a[0], t.data)
    np.testing.assert_allclose(t.logdensity_fn(jnp.asarray(z, jnp.float32), row), ref, rtol=1e-5)
    np.testing.assert_allclose(
        t.logprior_fn(jnp.asarray(z, jnp.float32), row), stats.norm.logpdf(z).sum(), rtol=1e-5
    )


def test_numpyro_nuts_recovers_the_exact_posterior(oracle):
    x, observed = _row(oracle, seed=1)
    model, kwargs = oracle.vae().given(np.where(observed, x, np.nan)).numpyro_model()
    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=1000, num_chains=1,
                progress_bar=False)
    mcmc.run(jax.random.key(0), **kwargs)
    z = np.asarray(mcmc.get_samples()["z"])
    mu, cov = oracle.posterior(x, observed)
    sd = np.sqrt(np.diag(cov[0]))
    # NUTS draws are autocorrelated: allow an effective sample size of 250
    assert (np.abs(z.mean(0) - mu[0]) / sd).max() < 4 / np.sqrt(250)


def test_numpyro_svi_autonormal_runs_on_the_query(oracle):
    x, observed = _row(oracle, seed=2)
    model, kwargs = oracle.vae().given(np.where(observed, x, np.nan)).numpyro_model()
    guide = AutoNormal(model)
    svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO(num_particles=8))
    res = svi.run(jax.random.key(1), 1500, progress_bar=False, **kwargs)
    mu, var = oracle.mean_field(x, observed)
    loc = np.asarray(res.params["z_auto_loc"])
    assert (np.abs(loc - mu[0]) / np.sqrt(var[0])).max() < 0.25
