"""Shared fixtures and per-backend fast settings for the test-suite."""

import os

# The suite is dominated by XLA compile time, not run time (a mixture or IAF fit
# of 24 queries: ~10 s compiling, < 1 s running). XLA's backend optimisation
# level 0 halves the CPU time of tests/test_vi_grid.py (138 s -> 66 s) and
# changes no result beyond float rounding; benchmarks and users keep the default.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
)
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vaequery.testing import LinearGaussian  # noqa: E402

#: Cheap hyper-parameters per backend for the contract test (shapes, determinism,
#: no NaN, no recompile). Each backend module adds its own entry here.
FAST = {
    "gaussian": dict(num_steps=20, num_samples=8),
    "fullrank": dict(num_steps=20, num_samples=8),
    "feature_vi": dict(num_steps=20, num_samples=8),
    "iaf": dict(num_steps=20, num_samples=8),
    "mixture": dict(num_steps=25, num_samples=8, num_components=3),
    "planar": dict(num_steps=20, num_samples=8, num_layers=3),
    "fcn": dict(num_steps=20, num_samples=8, hidden_width=4),
    "hierarchical": dict(num_steps=20, num_samples=8, warmup_steps=10),
    "numpyro": dict(num_steps=20, num_samples=8),
    "nuts": dict(num_warmup=20, num_chains=2, max_num_doublings=4),
    "hmc": dict(num_warmup=20, num_chains=2, num_integration_steps=4),
    "chees": dict(num_warmup=20, num_chains=4),
    "pathfinder": dict(num_steps=10, num_samples=8),
    "grid": dict(coarse_points=16, fine_points=32),
    "mwg": dict(num_burnin=3, num_chains=2),
    "pseudo_gibbs": dict(num_burnin=3, num_chains=2),
    "posterior_matching": dict(),
    "decoder_only": dict(),
    "fill_zeros": dict(),
    "retuned_encoder": dict(),
}


@pytest.fixture(scope="session")
def oracle():
    """8 features, 3 latents, sigma 0.5: the default linear-Gaussian oracle."""
    return LinearGaussian.random(0, num_features=8, latent_dim=3, sigma=0.5)


@pytest.fixture(scope="session")
def oracle_batch(oracle):
    """64 queries with random ~50 % masks: (x_true, observed)."""
    _, x = oracle.sample(1, 64)
    rng = np.random.default_rng(2)
    observed = rng.random(x.shape) < 0.5
    return x, observed


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free each test module's compiled XLA programs when it ends.

    Every compiled program keeps its machine code in memory mappings of its own;
    a pytest-xdist worker runs half the suite, and without this it accumulates
    more than Linux's default 65,530 mappings per process (``vm.max_map_count``),
    at which point LLVM cannot map new code and the worker aborts mid-compile.
    Programs shared by two modules are compiled again: a few seconds in all.
    """
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
