"""VAE training: masked ELBO, determinism, improvement over initialisation."""

import json

import numpy as np
import pytest

import vaequery as vq
from vaequery.train import evaluate_elbo, train

TINY = dict(latent_dim=2, hidden=(16,), batch_size=32, progress=False)


@pytest.fixture(scope="module")
def splits():
    return [vq.datasets.load("banknote", s)[:200] for s in ("train", "val", "test")]


def test_training_improves_test_elbo_over_initialisation(splits):
    tr, va, te = splits
    init = train(tr, va, te, num_epochs=0, key=0, **TINY)
    vae = train(tr, va, te, num_epochs=15, patience=15, key=0, **TINY)
    assert vae.encode_fn is not None and vae.latent_dim == 2
    assert vae.metadata["test_elbo"] > init.metadata["test_elbo"] + 1.0
    assert evaluate_elbo(vae, te, key=1) > evaluate_elbo(init, te, key=1) + 1.0
    r = vae.metadata["recipe"]
    assert r["dataset"] == "banknote" and 1 <= r["best_epoch"] <= r["epochs_run"] <= 15


def test_same_key_same_model_and_nan_rows(splits):
    tr, va, _ = splits
    X = tr.X.copy()
    X[::3, 1] = np.nan  # unobserved training entries drop out of the likelihood
    a = train(X, schema=tr.schema, num_epochs=2, key=5, **TINY)
    b = train(X, schema=tr.schema, num_epochs=2, key=5, **TINY)
    z = np.linspace(-2, 2, 10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(np.asarray(a.decode_mean(z)), np.asarray(b.decode_mean(z)))
    assert np.isfinite(evaluate_elbo(a, X))
    assert a.metadata["test_elbo"] is None


def test_train_validates_inputs(splits):
    with pytest.raises(TypeError, match="schema"):
        train(splits[0].X, num_epochs=1, **TINY)


def test_a_table_with_kind_overrides_is_reinferred(splits):
    tr = splits[0]
    vae = train(tr, kinds={"class": "binary"}, num_epochs=1, key=0, **TINY)
    assert vae.schema.kinds == ["real"] * 4 + ["binary"]
    assert vae.metadata["recipe"]["likelihood"] == "mixed"
    # re-inferred scaling comes from these (training) rows, not the whole dataset
    np.testing.assert_allclose(vae.schema.loc[:4], tr.X[:, :4].mean(0))
    assert not np.allclose(vae.schema.loc[:4], tr.schema.loc[:4])


def test_train_pretrained_writes_a_loadable_model(tmp_path):
    from vaequery.train import train_pretrained

    vae = train_pretrained("yeast", tmp_path, num_epochs=2, hidden=(8,), progress=False)
    back = vq.load(tmp_path / "yeast")
    info = json.loads((tmp_path / "yeast" / "metrics.json").read_text())
    assert info["test_elbo"] == pytest.approx(vae.metadata["test_elbo"])
    assert back.metadata["recipe"]["max_epochs"] == 2 and back.latent_dim == 4
    with pytest.raises(ValueError, match="known: .*yeast"):
        train_pretrained("iris")
