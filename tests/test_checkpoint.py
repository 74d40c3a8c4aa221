"""Streaming inference in blocks with checkpoints (issue: reliability, item 8).

A run cut short and resumed from its checkpoint gives bit-identical answers to
an uninterrupted one and to ``Query.infer`` with the same ``chunk_size``; a
damaged checkpoint or one of another run is refused with a clear message.
"""

import jax
import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian

ORACLE = LinearGaussian.random(3, num_features=6, latent_dim=2, sigma=0.5)
#: one model object for every test: its compiled block program is reused
VAE = ORACLE.vae()
HP = dict(num_steps=15, num_samples=8, num_draws=12)
#: 50 rows in blocks of 16 (chunks of 8): four blocks, the last one padded
STREAM = dict(block_size=16, chunk_size=8, **HP)


class Interrupted(Exception):
    pass


def _stop_after(index, seen):
    def callback(info):
        seen.append(info.index)
        if info.index == index:
            raise Interrupted

    return callback


@pytest.fixture(scope="module")
def data():
    _, x = ORACLE.sample(5, 50)
    observed = np.random.default_rng(6).random(x.shape) < 0.5
    observed[7] = False  # a row without evidence: the prior
    query = VAE.given(np.where(observed, x, np.nan))
    return query, x


@pytest.fixture(scope="module")
def plain(data):
    query, _ = data
    return query.infer("gaussian", key=3, chunk_size=8, **HP)


def _assert_same_posterior(a, b):
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.failed, b.failed)
    assert a.info.keys() == b.info.keys()
    for k in a.info:
        np.testing.assert_array_equal(a.info[k], b.info[k])
    for u, v in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_interrupted_run_resumes_bit_identical(data, plain, tmp_path):
    query, _ = data
    ckpt = tmp_path / "run.vqckpt"
    seen = []
    with pytest.raises(Interrupted):
        query.infer_stream(
            "gaussian",
            key=3,
            keep="posterior",
            checkpoint=ckpt,
            callback=_stop_after(1, seen),
            **STREAM,
        )
    assert seen == [0, 1]
    assert sorted(p.name for p in ckpt.glob("block_*.zip")) == [
        "block_000000.zip",
        "block_000001.zip",
    ]
    seen.clear()
    resumed = query.infer_stream(
        "gaussian",
        key=3,
        keep="posterior",
        checkpoint=ckpt,
        callback=_stop_after(-1, seen),
        **STREAM,
    )
    assert seen == [2, 3]  # the finished blocks were read, not recomputed
    assert isinstance(resumed, vq.Posterior) and resumed.num_queries == 50
    _assert_same_posterior(resumed, plain)
    uninterrupted = query.infer_stream("gaussian", key=3, keep="posterior", **STREAM)
    _assert_same_posterior(uninterrupted, plain)
    # a finished checkpoint answers again without computing anything
    seen.clear()
    again = query.infer_stream(
        "gaussian",
        key=3,
        keep="posterior",
        checkpoint=ckpt,
        callback=_stop_after(-1, seen),
        **STREAM,
    )
    assert seen == []
    _assert_same_posterior(again, plain)


def test_summary_keeps_bounded_arrays_equal_to_the_posterior(data, plain, tmp_path):
    query, x = data
    ckpt = tmp_path / "summary.vqckpt"
    with pytest.raises(Interrupted):
        query.infer_stream(
            "gaussian",
            key=3,
            checkpoint=ckpt,
            X_true=x,
            iwae_samples=64,
            callback=_stop_after(2, []),
            **STREAM,
        )
    s = query.infer_stream("gaussian", key=3, checkpoint=ckpt, X_true=x, iwae_samples=64, **STREAM)
    assert isinstance(s, vq.stream.StreamSummary)
    assert s.mean.shape == s.sd.shape == (50, 6) and s.z_mean.shape == (50, 2)
    assert not hasattr(s, "z") and not s.failed.any()
    # the same numbers as the full posterior's, read from its draws
    assert s.summary().equals(plain.summary())
    np.testing.assert_array_equal(s.loss, plain.loss[:, -1])
    np.testing.assert_array_equal(s.z_mean, plain.z.mean(1))
    np.testing.assert_array_equal(
        s.log_likelihood, plain.log_likelihood(x, num_samples=64, chunk_size=8)
    )
    # the prior row: sd of the latent draws near 1, of an observed feature 0
    assert 0.6 < s.z_sd[7].mean() < 1.4
    obs = query.observed_mask
    assert (s.sd[obs] == 0).all() and (s.sd[~obs] > 0).all()


def test_corrupted_checkpoint_is_refused_with_the_file_named(data, tmp_path):
    query, _ = data
    ckpt = tmp_path / "c"
    with pytest.raises(Interrupted):
        query.infer_stream(
            "gaussian", key=3, checkpoint=ckpt, callback=_stop_after(1, []), **STREAM
        )
    block = ckpt / "block_000001.zip"
    good = block.read_bytes()
    block.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=r"block_000001\.zip is truncated or corrupted"):
        query.infer_stream("gaussian", key=3, checkpoint=ckpt, **STREAM)
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0xFF  # one altered byte: the CRC check fails
    block.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="delete that file and run again"):
        query.infer_stream("gaussian", key=3, checkpoint=ckpt, **STREAM)
    block.write_bytes(good)
    (ckpt / "checkpoint.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"checkpoint\.json is corrupted"):
        query.infer_stream("gaussian", key=3, checkpoint=ckpt, **STREAM)


def test_a_block_of_another_run_is_refused(data, tmp_path):
    query, _ = data
    a, b = tmp_path / "a", tmp_path / "b"
    for path, key in ((a, 3), (b, 4)):
        with pytest.raises(Interrupted):
            query.infer_stream(
                "gaussian", key=key, checkpoint=path, callback=_stop_after(0, []), **STREAM
            )
    (a / "block_000000.zip").replace(b / "block_000000.zip")
    with pytest.raises(ValueError, match="belongs to another run"):
        query.infer_stream("gaussian", key=4, checkpoint=b, **STREAM)


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(key=4), "key"),
        (dict(backend="fullrank"), "backend"),
        (dict(num_steps=16), "hyperparameter num_steps"),
        (dict(block_size=24), "block_size"),
        (dict(keep="posterior"), "keep"),
        (dict(rows=slice(1, None)), "num_queries"),
        (dict(rows=np.r_[1, 0, 2:50]), "query_sha256"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(data, tmp_path, change, field):
    query, _ = data
    ckpt = tmp_path / "c"
    with pytest.raises(Interrupted):
        query.infer_stream(
            "gaussian", key=3, checkpoint=ckpt, callback=_stop_after(0, []), **STREAM
        )
    kw = {"backend": "gaussian", "key": 3, **STREAM, **change}
    rows = kw.pop("rows", None)
    if rows is not None:
        query = query.model.given(np.where(query.observed_mask, np.asarray(query.x), np.nan)[rows])
    with pytest.raises(ValueError, match=f"written by a different run \\({field}: checkpoint"):
        query.infer_stream(checkpoint=ckpt, **kw)


def test_failing_rows_are_flagged_per_block(tmp_path):
    _, x = ORACLE.sample(0, 20)
    x[:, 4:] = np.nan
    x[13, 0] = 1e30  # log p(x_O | z) overflows float32 in block 1 only
    query = VAE.given(x)
    with pytest.warns(vq.InferenceWarning, match=r"1 of 20 queries \(rows \[13\]\)"):
        s = query.infer_stream("gaussian", key=1, **STREAM)
    assert np.flatnonzero(s.failed).tolist() == [13]
    ckpt = tmp_path / "c"
    with pytest.raises(vq.InferenceError, match=r"rows \[13\]"):
        query.infer_stream("gaussian", key=1, checkpoint=ckpt, on_error="raise", **STREAM)
    assert (ckpt / "block_000000.zip").exists()  # the good block before it is kept


def test_bad_arguments():
    query = VAE.given(ORACLE.sample(0, 4)[1])
    with pytest.raises(ValueError, match="keep must be one of"):
        query.infer_stream(keep="draws")
    with pytest.raises(TypeError, match="block_size must be an integer"):
        query.infer_stream(block_size=2.5)
    with pytest.raises(ValueError, match="X_true= adds log-likelihoods to keep='summary'"):
        query.infer_stream(keep="posterior", X_true=np.zeros((4, 6)))
