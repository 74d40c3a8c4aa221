"""Save / load round trip, format versioning and the shipped models."""

import json

import numpy as np
import pytest

import vaequery as vq
from vaequery.io import available_pretrained
from vaequery.train import evaluate_elbo

FAST = dict(num_steps=10, num_samples=4)


@pytest.fixture(scope="module")
def tiny():
    tr = vq.datasets.load("banknote", "train")[:128]
    return vq.train(tr, latent_dim=2, hidden=(16, 16), num_epochs=2, progress=False, key=1)


def test_round_trip_identical_outputs(tiny, tmp_path):
    tiny.save(tmp_path / "m")
    back = vq.load(tmp_path / "m")
    assert back.schema == tiny.schema and back.latent_dim == tiny.latent_dim
    assert back.metadata == json.loads(json.dumps(tiny.metadata))
    z = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    for k in ("loc", "scale"):
        np.testing.assert_array_equal(
            np.asarray(tiny.decode_fn(z)[k]), np.asarray(back.decode_fn(z)[k])
        )
    x = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    for a, b in zip(tiny.encode_fn(x), back.encode_fn(x)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    masked = vq.datasets.load("banknote", "test").with_missing(key=0, max_rows=50)
    assert evaluate_elbo(tiny, masked.X, key=3) == evaluate_elbo(back, masked.X, key=3)
    assert vq.load(tmp_path / "m" / "model.json").latent_dim == 2


def test_incompatible_format_version_is_refused(tiny, tmp_path):
    path = tiny.save(tmp_path / "m")
    info = json.loads((path / "model.json").read_text())
    info["format_version"] = 99
    (path / "model.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="format version 99"):
        vq.load(path)
    with pytest.raises(FileNotFoundError, match="model.json"):
        vq.load(tmp_path / "nowhere")


def test_only_vaequery_networks_can_be_saved(tmp_path):
    vae = vq.from_decoder(lambda z: z, 2, ["a", "b"])
    with pytest.raises(TypeError, match="from_decoder"):
        vae.save(tmp_path / "m")


@pytest.mark.parametrize("name", vq.datasets.BUNDLED)
def test_every_bundled_dataset_has_a_pretrained_model(name):
    vae = vq.pretrained(name)
    info = json.loads((vq.io.PRETRAINED_DIR / name / "metrics.json").read_text())
    assert info["test_elbo"] == pytest.approx(vae.metadata["test_elbo"])
    test = vq.datasets.load(name, "test")
    assert vae.feature_names == test.feature_names and vae.encode_fn is not None
    np.testing.assert_allclose(vae.schema.loc, test.schema.loc)
    # the shipped weights reproduce their recorded test ELBO (other draws of z)
    assert evaluate_elbo(vae, test, key=7) == pytest.approx(info["test_elbo"], abs=0.5)


def test_pretrained_unknown_name():
    # a model per bundled dataset, and the hierarchical VAE of the digits
    assert set(available_pretrained()) == set(vq.datasets.BUNDLED) | {"digits_hvae"}
    with pytest.raises(ValueError, match="available: .*white_wine"):
        vq.pretrained("mnist")


def test_pretrained_answers_a_query():
    vae = vq.pretrained("breast_cancer")
    test = vq.datasets.load("breast_cancer", "test")
    masked = test.with_missing(key=0, max_rows=4)
    post = vae.given(masked).infer("gaussian", key=0, **FAST)
    assert np.isfinite(post.x).all() and post.x.shape[0] == 4
    # the imputations beat predicting the feature means (NRMSE < 1 on average)
    assert np.nanmean(post.nrmse(test.X[:4], reduce="mean")) < 1.0
