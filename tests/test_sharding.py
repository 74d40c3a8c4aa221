"""``infer(..., devices=)``: the query rows sharded over several devices.

The suite runs with one host device (``tests/conftest.py``), so the sharded run
happens in a subprocess given four (``--xla_force_host_platform_device_count=4``).
Ten rows over four devices exercise the padding (to 12, or to 16 with
``chunk_size=2`` per device). Each row keeps its own key, so the sharded answer
must equal the single-device one to float rounding; the Gaussian VI answer is
also checked against the exact mean-field optimum of the linear-Gaussian oracle.

MCMC is chaotic: rounding differences between two compilations of the same
chain (about 1e-7 in float32) grow through step-size adaptation and
accept/reject decisions until the chains part (measured in float64: 5e-15 after
10 warm-up steps, 2e-10 after 20, O(1) after 50). The HMC check therefore runs
short chains in float64, where agreement to 1e-8 still means "same arithmetic".
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from vaequery.fit import resolve_devices
from vaequery.testing import LinearGaussian

CODE = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    import vaequery.fit as fit
    from vaequery.testing import LinearGaussian

    assert len(jax.devices()) == 4, jax.devices()
    oracle = LinearGaussian.random(seed=0, num_features=8, latent_dim=3)
    x = oracle.sample(1, 10)[1]
    observed = np.random.default_rng(0).random(x.shape) < 0.5
    observed[:, 0] = True
    q = oracle.vae().given(np.where(observed, x, np.nan))

    placed = []  # devices each output leaf of the compiled program lies on
    run_batch = fit._run_batch

    def spy(*args, **kwargs):
        out = run_batch(*args, **kwargs)
        placed.append(sorted({len(a.sharding.device_set) for a in jax.tree.leaves(out)}))
        return out

    fit._run_batch = spy

    def diff(a, b):
        return float(max(np.abs(a.z - b.z).max(), np.abs(a.x - b.x).max()))

    out = {}
    one = q.infer("gaussian", key=3)
    four = q.infer("gaussian", key=3, devices="all")
    out["gaussian"] = diff(one, four)
    out["gaussian_shape"] = list(four.z.shape)
    mu, var = oracle.mean_field(x, observed)
    out["gaussian_oracle_z"] = float((np.abs(four.state["loc"] - mu) / np.sqrt(var)).max())
    chunked = q.infer("gaussian", key=3, chunk_size=2, devices=4)
    out["gaussian_chunked"] = diff(one, chunked)
    with jax.enable_x64(True):
        kw = dict(num_warmup=10, num_draws=10, num_chains=2, num_integration_steps=4)
        one = q.infer("hmc", key=5, **kw)
        four = q.infer("hmc", key=5, devices=list(jax.devices()), **kw)
        out["hmc"] = diff(one, four)
        out["hmc_dtype"] = str(four.z.dtype)
        out["hmc_spread"] = float(one.z.std())
    out["placed"] = placed
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0",
    }
    res = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(s for s in res.stdout.splitlines() if s.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_gaussian_vi_sharded_equals_single_device(sharded):
    assert sharded["gaussian_shape"] == [10, 100, 3]  # padding rows dropped
    assert sharded["gaussian"] < 1e-5, sharded
    assert sharded["gaussian_chunked"] < 1e-5, sharded


def test_sharded_gaussian_vi_meets_the_exact_mean_field_optimum(sharded):
    # the tolerance of tests/test_gaussian_oracle.py: as good as 1000 exact draws
    assert sharded["gaussian_oracle_z"] < 4 / np.sqrt(1000), sharded


def test_hmc_sharded_equals_single_device(sharded):
    assert sharded["hmc_dtype"] == "float64"
    assert sharded["hmc_spread"] > 0.1  # real chains, not a constant
    assert sharded["hmc"] < 1e-8, sharded


def test_outputs_lie_on_all_four_devices(sharded):
    # one call per infer: unsharded, sharded, chunked+sharded, unsharded, sharded
    assert sharded["placed"] == [[1], [4], [4], [1], [4]], sharded


@pytest.fixture(scope="module")
def query():
    oracle = LinearGaussian.random(seed=0, num_features=4, latent_dim=2)
    return oracle.vae().given(np.array([[0.1, np.nan, 0.3, np.nan]] * 3))


@pytest.mark.parametrize(
    "devices, error, match",
    [
        (0, ValueError, "devices must be >= 1, got 0"),
        (-2, ValueError, "devices must be >= 1"),
        (5, ValueError, "devices=5, but only 1 cpu device"),
        ("some", ValueError, "'some' is not a known setting"),
        ([], ValueError, "empty list"),
        (2.0, TypeError, "got float 2.0"),
        (True, TypeError, "got bool True"),
        (["cpu:0"], TypeError, "list of jax devices"),
    ],
)
def test_bad_devices_are_refused_clearly(query, devices, error, match):
    with pytest.raises(error, match=match):
        query.infer("gaussian", devices=devices, num_steps=2)


def test_repeated_device_is_refused():
    d = jax.devices()[0]
    with pytest.raises(ValueError, match="more than once"):
        resolve_devices([d, d])


def test_devices_all_on_one_device_is_the_default_run(query):
    kw = dict(key=1, num_steps=5, num_samples=4)
    a = query.infer("gaussian", **kw)
    b = query.infer("gaussian", devices="all", **kw)
    assert resolve_devices("all") == jax.devices() and resolve_devices(1) == jax.devices()[:1]
    np.testing.assert_allclose(b.z, a.z, rtol=1e-6, atol=1e-6)


def test_infer_stream_refuses_devices(query):
    with pytest.raises(TypeError, match="infer_stream does not shard"):
        query.infer_stream("gaussian", devices="all", num_steps=2)
