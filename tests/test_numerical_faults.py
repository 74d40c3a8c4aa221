"""Numerical faults cost only the rows that have them (issue 12, item 5).

One batch of a linear-Gaussian oracle whose decoder returns NaN for
``z_0 > 5`` holds three good rows, then:

* row 3, evidence whose exact posterior sits inside that NaN region (mean
  ``(7, 0)``, sd about 0.5);
* row 4, an observation of ``1e30``: ``log p(x_O | z)`` overflows float32 to
  ``-inf`` for every ``z``;
* row 5, an observation ``10^6`` standard deviations below the mean: a finite
  (if extreme) log-likelihood, a well-posed query whose exact posterior is a
  Gaussian ``10^5`` prior sd out.

The reference is the same batch with these rows replaced by good ones: same
shapes, same per-row keys, so every other row must come back bit-identical,
and the rows that failed must be flagged and named in the warning. Variational
runs use ``chunk_size=3``, so the batch of the three good rows alone is answered
with the same bits too.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian

ORACLE = LinearGaussian.random(3, num_features=4, latent_dim=2, sigma=0.5)
_W = jnp.asarray(ORACLE.W.T, jnp.float32)
_B = jnp.asarray(ORACLE.b, jnp.float32)
NAN_FROM = 5.0


def _decoder(z):
    return jnp.where(z[..., :1] > NAN_FROM, jnp.nan, z @ _W + _B)


VAE = vq.from_decoder(_decoder, 2, 4, "gaussian", scale=0.5, encode_fn=ORACLE.encoder())


def _batches():
    _, good = ORACLE.sample(0, 6)
    good[:, 3] = np.nan
    bad = good.copy()
    # row 3: x_O chosen so that the exact posterior mean is (7, 0)
    W_O = ORACLE.W[:3]
    prec = np.eye(2) + W_O.T @ W_O / ORACLE.sigma**2
    resid = np.linalg.lstsq(W_O.T / ORACLE.sigma**2, prec @ [7.0, 0.0], rcond=None)[0]
    bad[3, :3] = ORACLE.b[:3] + resid
    bad[4, 0] = 1e30
    bad[5, 0] = ORACLE.b[0] - 1e6 * ORACLE.sigma
    return good, bad


GOOD, BAD = _batches()
OBSERVED = ~np.isnan(BAD)

# enough steps for row 3's fit to walk from its encoder start (1.3, -4.3) into
# the NaN region; compiling, not stepping, is what costs here
VI_CHUNK = dict(chunk_size=3)
FAST = {
    "gaussian": dict(num_steps=60, num_samples=4),
    "fullrank": dict(num_steps=60, num_samples=4),
    "mixture": dict(num_steps=60, num_samples=4, num_components=2),
    "iaf": dict(num_steps=60, num_samples=4, num_layers=1),
    "nuts": dict(num_warmup=10, num_chains=2, max_num_doublings=3),
    "hmc": dict(num_warmup=10, num_chains=2, num_integration_steps=3),
    "chees": dict(num_warmup=10, num_chains=2),
    "mwg": dict(num_burnin=2, num_chains=2),
}


# The suite's time budget allows one compiled program per algorithm family here
# (about 3 s for "gaussian", 8 s for "nuts" on one core); the others compile 5-12 s
# each and run with VAEQUERY_EXTRA_TESTS=1. Their code paths: the failure flag of
# every VI backend is the shared non-finite loss check (fit.failed_rows);
# "hmc" shares NUTS's chain code, "chees" and "mwg" record the log-density their own way.
_EXTRA = pytest.mark.skipif(
    os.environ.get("VAEQUERY_EXTRA_TESTS") != "1",
    reason="one more compiled backend (5-12 s); set VAEQUERY_EXTRA_TESTS=1 to run",
)


def _extra(*names):
    return [pytest.param(n, marks=_EXTRA) for n in names]


def _run(backend, x, **kw):
    if backend in ("gaussian", "fullrank", "mixture", "iaf"):
        kw = {**VI_CHUNK, **kw}
    return VAE.given(x).infer(backend, key=3, num_draws=10, **FAST[backend], **kw)


def _assert_others_identical(bad, good, failed):
    keep = ~failed
    for a, b in [(bad.z, good.z), (bad.x, good.x), (bad.loss, good.loss)]:
        np.testing.assert_array_equal(a[keep], b[keep])
    for k in bad.info:
        np.testing.assert_array_equal(bad.info[k][keep], good.info[k][keep])


def test_the_fault_rows_are_what_the_docstring_says():
    mean, cov = ORACLE.posterior(BAD, OBSERVED)
    np.testing.assert_allclose(mean[3], [7.0, 0.0], atol=1e-9)
    assert np.sqrt(np.diagonal(cov[3])).max() < 0.6  # z_0 > 5 holds almost all its mass
    assert np.abs(mean[5]).min() > 1e4  # far out, but finite
    # the -inf row: the square of 1e30 / sigma overflows float32
    with np.errstate(over="ignore"):
        assert not np.isfinite((np.float32(1e30) / np.float32(ORACLE.sigma)) ** 2)


@pytest.mark.parametrize("backend", ["gaussian", *_extra("fullrank", "mixture", "iaf")])
def test_vi_flags_the_fault_rows_and_leaves_the_others_bit_identical(backend):
    with pytest.warns(vq.InferenceWarning, match=r"2 of 6 queries \(rows \[3, 4\]\)"):
        bad = _run(backend, BAD)
    good = _run(backend, GOOD)
    # a draw in the NaN region makes the ELBO NaN; -inf log-likelihood makes it inf
    assert bad.failed.tolist() == [False, False, False, True, True, False]
    assert not good.failed.any()
    assert (bad.converged == ~bad.failed).all()
    # the 1e6-sd row is finite: a far-out query, not a numerical fault
    assert np.isfinite(bad.z[5]).all() and np.isfinite(bad.loss[5]).all()
    _assert_others_identical(bad, good, np.arange(6) >= 3)
    # a run without the bad rows: the same chunk program, the same row keys
    alone = _run(backend, BAD[:3])
    for a, b in [(bad.z, alone.z), (bad.x, alone.x), (bad.loss, alone.loss)]:
        np.testing.assert_array_equal(a[:3], b)


@pytest.mark.parametrize("backend", ["nuts", *_extra("hmc", "chees", "mwg")])
def test_mcmc_flags_impossible_evidence_and_leaves_the_others_bit_identical(backend):
    with pytest.warns(vq.InferenceWarning, match=r"1 of 6 queries \(rows \[4\]\)"):
        bad = _run(backend, BAD)
    good = _run(backend, GOOD)
    assert bad.failed.tolist() == [False, False, False, False, True, False]
    assert not good.failed.any()
    # -inf everywhere: the chains never leave their start, whose draws are NaN
    # (they used to come back as unflagged prior draws)
    assert np.isnan(bad.z[4]).all() and not np.isfinite(bad.info["logdensity"][4]).any()
    lp = bad.info["logdensity"][np.arange(6) != 4]
    assert np.isfinite(lp).all()
    # a NaN region is a region of zero density to a sampler: its proposals are
    # rejected, so row 3 is answered from z_0 <= 5 (documented in at_finite_density)
    assert np.isfinite(bad.z[3]).all() and (bad.z[3][..., 0] <= NAN_FROM).all()
    if "diverging" in bad.info:
        assert bad.info["diverging"][3].any()
    _assert_others_identical(bad, good, np.arange(6) >= 3)
    stats = bad.to_arviz(log_likelihood=False).sample_stats
    assert stats["failed"].values[0, 0].tolist() == bad.failed.tolist()
    lp_stats = np.moveaxis(bad.info["logdensity"], 0, -1)
    np.testing.assert_array_equal(stats["lp"].values, lp_stats)


def test_a_diverging_learning_rate_fails_only_its_own_rows():
    hp = dict(num_steps=10, num_samples=4, learning_rate=3.0)
    with pytest.warns(vq.InferenceWarning, match="queries"):
        post = VAE.given(GOOD).infer("gaussian", key=3, num_draws=10, **hp)
    failed = post.failed
    assert 0 < failed.sum() < 6  # the test needs some of each
    bad_z = ~np.isfinite(post.z).all(axis=(1, 2)) | ~np.isfinite(post.loss).all(1)
    np.testing.assert_array_equal(failed, bad_z)
    # the failed rows replaced by prior queries (all NaN), which survive this rate
    calm = np.where(failed[:, None], np.nan, GOOD)
    ref = VAE.given(calm).infer("gaussian", key=3, num_draws=10, **hp)
    assert not ref.failed.any()
    _assert_others_identical(post, ref, failed)
