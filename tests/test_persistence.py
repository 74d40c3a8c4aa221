"""Results save and load exactly; bad files give clear errors and never run code; pickling.

``Posterior.save`` / ``vq.load_posterior`` and ``pickle`` of a ``VAE`` or a
``Posterior`` all go through vaequery's own format (JSON + raw arrays): the
round trip is bit-exact, a truncated, altered or newer file is refused with a
message, and a file carrying a pickle payload is refused without running it.
"""

import io
import json
import multiprocessing
import pickle
import zipfile

import jax
import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian

FAST = dict(num_steps=5, num_samples=4, num_draws=3)


@pytest.fixture(scope="module")
def cancer():
    vae = vq.pretrained("breast_cancer")
    masked = vq.datasets.load("breast_cancer", "test").with_missing(key=0, max_rows=3)
    post = vae.given(masked).infer("gaussian", key=0, **FAST)
    return vae, masked, post


def _assert_same(a, b):
    for name in ("z", "x", "loss", "failed"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.info.keys() == b.info.keys()
    for u, v in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    np.testing.assert_array_equal(a.query.x, b.query.x)
    np.testing.assert_array_equal(a.query.target_mask, b.query.target_mask)
    assert a.backend == b.backend and a.query.single == b.query.single


def test_posterior_round_trip_is_exact(cancer, tmp_path):
    vae, masked, post = cancer
    back = vq.load_posterior(post.save(tmp_path / "answers.vqp"))
    _assert_same(post, back)  # the fitted state and the key too: derived numbers agree
    np.testing.assert_array_equal(jax.random.key_data(back._key), jax.random.key_data(post._key))
    assert back.summary().equals(post.summary())


def test_a_from_decoder_result_needs_its_model_and_cannot_be_pickled(tmp_path):
    oracle = LinearGaussian.random(0, num_features=3, latent_dim=2)
    vae = oracle.vae()
    post = vae.given(np.array([[0.5, np.nan, 1.0]])).infer("fullrank", key=1, **FAST)
    # a user's decoder function is code: it never travels, and the error says what to do
    with pytest.raises(TypeError, match=r"cannot pickle this VAE.*module-level function"):
        pickle.dumps(vae)
    with pytest.raises(TypeError, match=r"cannot pickle this Posterior.*load_posterior"):
        pickle.dumps(post)
    path = post.save(tmp_path / "p.vqp")
    with pytest.raises(ValueError, match=r"saved without its model.*model=vae"):
        vq.load_posterior(path)
    _assert_same(post, vq.load_posterior(path, model=vae))
    other = LinearGaussian.random(0, num_features=4, latent_dim=2).vae()
    with pytest.raises(ValueError, match=r"features \['x0', 'x1', 'x2'\].*the model given has"):
        vq.load_posterior(path, model=other)
    with pytest.raises(FileNotFoundError, match="no vaequery posterior"):
        vq.load_posterior(tmp_path / "nowhere.vqp")


def _rewrite(path, name, edit):
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files[name] = edit(files[name])
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)


def test_truncated_corrupted_and_newer_files_are_refused(cancer, tmp_path):
    _, _, post = cancer
    data = post.save(tmp_path / "p.vqp").read_bytes()
    (tmp_path / "cut.vqp").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        vq.load_posterior(tmp_path / "cut.vqp")
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside the compressed model weights
    (tmp_path / "flip.vqp").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupted"):
        vq.load_posterior(tmp_path / "flip.vqp")

    def newer(b):
        info = json.loads(b)
        info["format_version"] = 2
        return json.dumps(info).encode()

    (tmp_path / "new.vqp").write_bytes(data)
    _rewrite(tmp_path / "new.vqp", "posterior.json", newer)
    with pytest.raises(ValueError, match="posterior format version 2 .*reads version 1"):
        vq.load_posterior(tmp_path / "new.vqp")
    (tmp_path / "state.vqp").write_bytes(data)
    _rewrite(tmp_path / "state.vqp", "state.eqx", lambda b: b[:-7])
    with pytest.raises(ValueError, match="state.eqx is truncated or corrupted"):
        vq.load_posterior(tmp_path / "state.vqp")


def test_a_truncated_model_folder_is_refused(cancer, tmp_path):
    vae, _, _ = cancer
    path = vae.save(tmp_path / "m")
    weights = path / "weights.eqx"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="weights.eqx is truncated or corrupted"):
        vq.load(path)
    (path / "model.json").write_text('{"format": "vaequery.vae", "form')
    with pytest.raises(ValueError, match="model.json is corrupted"):
        vq.load(path)


class _Payload:
    """Unpickling this would create a file: loading must never do it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_loading_never_runs_code_from_the_file(cancer, tmp_path):
    _, _, post = cancer
    path = post.save(tmp_path / "p.vqp")
    marker = tmp_path / "pwned"

    def evil(_):
        buf = io.BytesIO()
        np.save(buf, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
        return buf.getvalue()

    _rewrite(path, "arrays/z.npy", evil)
    with pytest.raises(ValueError, match="arrays/z.npy is corrupted or unsafe"):
        vq.load_posterior(path)
    assert not marker.exists()


def test_models_and_results_pickle_through_the_safe_format(cancer):
    vae, masked, post = cancer
    back = pickle.loads(pickle.dumps(vae))
    assert back.feature_names == vae.feature_names and back.metadata == vae.metadata
    z = np.random.default_rng(0).normal(size=(4, vae.latent_dim)).astype(np.float32)
    for k in ("loc", "scale"):  # same weights, so the same answers
        np.testing.assert_array_equal(back.decode_fn(z)[k], vae.decode_fn(z)[k])
    x = np.nan_to_num(masked.X).astype(np.float32)
    for a, b in zip(back.encode_fn(x), vae.encode_fn(x)):
        np.testing.assert_array_equal(a, b)
    _assert_same(pickle.loads(pickle.dumps(post)), post)
    # the pickle carries bytes for vaequery's reader, not the network objects
    assert b"equinox" not in pickle.dumps(vae)


def _answer(vae, X):
    return vae.given(X).infer("gaussian", key=0, **FAST).z


def test_a_spawned_process_answers_with_a_pickled_model(cancer):
    vae, masked, post = cancer
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        z = pool.apply(_answer, (vae, masked.X))
    np.testing.assert_array_equal(z, post.z)
