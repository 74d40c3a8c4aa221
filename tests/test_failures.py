"""One failing query never costs the others: non-finite rows are flagged, the
rest of the batch is returned unchanged (issue: reliability, item 2)."""

import warnings

import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian

ORACLE = LinearGaussian.random(7, num_features=5, latent_dim=2, sigma=0.5)


def _batch(bad_value):
    _, x = ORACLE.sample(0, 6)
    x[:, 3:] = np.nan
    x[2, 0] = bad_value  # a finite value so far out that log p(x_O | z) overflows float32
    return x


@pytest.mark.parametrize("backend", ["gaussian", "fullrank"])
def test_a_failing_row_is_flagged_and_the_others_are_unchanged(backend):
    vae = ORACLE.vae_with_encoder()
    hp = dict(num_steps=30, num_samples=8)
    with pytest.warns(vq.InferenceWarning, match=r"1 of 6 queries \(rows \[2\]\)"):
        bad = vae.given(_batch(1e30)).infer(backend, key=4, **hp)
    good = vae.given(_batch(0.3)).infer(backend, key=4, **hp)
    assert bad.failed.tolist() == [False, False, True, False, False, False]
    assert (bad.converged == ~bad.failed).all() and not good.failed.any()
    keep = ~bad.failed
    # same program, same per-row keys: the other rows are bit-identical
    np.testing.assert_array_equal(bad.z[keep], good.z[keep])
    np.testing.assert_array_equal(bad.x[keep], good.x[keep])
    stats = bad.to_arviz(log_likelihood=False).sample_stats
    assert stats["failed"].values[0, 0].tolist() == bad.failed.tolist()


def test_on_error_raise_and_ignore():
    q = ORACLE.vae().given(_batch(1e30))
    with pytest.raises(vq.InferenceError, match=r"rows \[2\]"):
        q.infer("gaussian", num_steps=5, num_samples=4, on_error="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post = q.infer("gaussian", num_steps=5, num_samples=4, on_error="ignore")
    assert post.failed.sum() == 1
    with pytest.raises(ValueError, match="on_error must be one of"):
        q.infer("gaussian", on_error="skip")
