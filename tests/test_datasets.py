"""Offline loaders, deterministic splits and missingness generators."""

import gzip

import numpy as np
import pytest

import vaequery as vq
from vaequery import datasets

SIZES = {
    "breast_cancer": (569, 30),
    "white_wine": (4898, 12),
    "red_wine": (1599, 12),
    "banknote": (1372, 5),
    "concrete": (1030, 9),
    "yeast": (1484, 8),
    "digits": (1797, 64),
    "penguins": (344, 7),
}


@pytest.mark.parametrize("name", datasets.BUNDLED)
def test_bundled_table_shapes_splits_and_scaling(name):
    full = datasets.load(name, "all")
    assert full.shape == SIZES[name]
    assert name == "penguins" or not np.isnan(full.X).any()  # penguins keeps its NA as NaN
    parts = [datasets.load(name, s) for s in ("train", "val", "test")]
    n = len(full)
    assert [len(p) for p in parts] == [
        int(0.65 * n),
        int(0.15 * n),
        n - int(0.65 * n) - int(0.15 * n),
    ]
    idx = np.concatenate([p.index for p in parts])
    assert np.array_equal(np.sort(idx), np.arange(n))  # disjoint and complete
    np.testing.assert_array_equal(parts[2].X, full.X[parts[2].index])
    # stable: a second load gives the same rows
    np.testing.assert_array_equal(datasets.load(name, "test").index, parts[2].index)
    if full.image_shape is None:  # QAVI: whole-dataset mean / std of the real columns
        real = np.array([k == "real" for k in full.schema.kinds])
        np.testing.assert_allclose(full.schema.loc[real], np.nanmean(full.X[:, real], 0))
        np.testing.assert_allclose(full.schema.scale[real], np.nanstd(full.X[:, real], 0))
    else:
        assert full.standardised().max() == pytest.approx(1.0)


def test_names_and_errors():
    assert datasets.load("white_wine").feature_names[-2:] == ["alcohol", "quality"]
    assert "class" not in datasets.load("yeast").feature_names
    with pytest.raises(ValueError, match="known datasets: .*white_wine"):
        datasets.load("whitewine")
    with pytest.raises(ValueError, match="split"):
        datasets.load("banknote", "validation")


def test_penguins_codes_levels_and_missing_match_the_csv():
    import csv

    rows = list(csv.DictReader((datasets._tables.DATA_DIR / "penguins.csv").open()))
    t = datasets.load("penguins", "all")
    assert t.feature_names == [
        "species",
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
    ]
    assert t.schema.kinds == ["categorical"] * 2 + ["real"] * 4 + ["categorical"]
    f = {f.name: f for f in t.schema}
    assert f["species"].levels == ("Adelie", "Chinstrap", "Gentoo")
    assert f["sex"].levels == ("female", "male") and f["sex"].num_levels == 2
    for j, name in enumerate(t.feature_names):
        for r in (0, 3, 200, 343):  # row 3 is all NA but species / island
            raw = rows[r][name]
            if raw == "NA":
                assert np.isnan(t.X[r, j]), (r, name)
            elif f[name].kind == "real":
                assert t.X[r, j] == float(raw)
            else:
                assert f[name].levels[int(t.X[r, j])] == raw
    assert int(np.isnan(t.X).sum()) == sum(
        v == "NA" for row in rows for k, v in row.items() if k != "year"
    )
    assert "penguins" in (datasets._tables.DATA_DIR / "SOURCES.md").read_text()


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_from_user_path(tmp_path, monkeypatch):
    monkeypatch.delenv("VAEQUERY_MNIST_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        datasets.load("mnist")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train-images-idx3-ubyte.gz")):
        datasets.load("mnist", path=tmp_path)
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (12, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 12))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 5))
    test = datasets.load("mnist", "test", path=tmp_path)
    assert test.shape == (5, 784) and test.image_shape == (28, 28)
    assert len(datasets.load("mnist", "train", path=tmp_path)) == 10
    np.savez(
        tmp_path / "f.npz",
        x_train=np.zeros((6, 28, 28)),
        y_train=np.zeros(6),
        x_test=np.ones((3, 28, 28)),
        y_test=np.zeros(3),
    )
    fm = datasets.load("fashion_mnist", "test", path=tmp_path / "f.npz")
    assert fm.shape == (3, 784) and fm.X.max() == 1.0


def test_half_features_exact_count_and_determinism():
    t = datasets.load("white_wine", "test")
    X, target = t.with_missing(key=3)
    assert (target.sum(1) == 6).all()
    assert np.array_equal(np.isnan(X), target)
    np.testing.assert_array_equal(X[~target], t.X[~target])
    X2, target2 = t.with_missing(key=3)
    assert np.array_equal(target, target2)
    assert not np.array_equal(target, t.with_missing(key=4).target_mask)
    # every feature is hidden about half the time (uniform subsets)
    freq = target.mean(0)
    assert np.all(np.abs(freq - 0.5) < 5 * np.sqrt(0.25 / len(t)))


def test_bernoulli_rate():
    t = datasets.load("white_wine", "all")
    X, target = t.with_missing(rate=0.3, key=0)
    n = target.size
    assert abs(target.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n)
    assert t.with_missing(rate=0.0, key=0).target_mask.sum() == 0


def test_image_patterns():
    t = datasets.load("digits", "test")
    _, tm = t.with_missing(pattern="patches", key=0)
    counts = tm.sum(1)
    assert counts.min() >= 9 and counts.max() <= 18  # two 3x3 patches, maybe overlapping
    assert (counts < 18).any() and (counts == 18).any()
    _, th = t.with_missing(pattern="rotating_half", key=0)
    assert np.all(np.abs(th.sum(1) - 32) <= 4)
    assert len({tuple(r) for r in th}) > 20  # the angle really varies
    with pytest.raises(ValueError, match="image dataset"):
        datasets.load("banknote").with_missing(pattern="patches")


def test_existing_nan_is_never_a_target():
    X = np.array([[1.0, np.nan, 3.0, 4.0]] * 50)
    Xo, tm = datasets.bernoulli(X, 0.5, key=1)
    assert not tm[:, 1].any() and np.isnan(Xo[:, 1]).all()


def test_masked_table_feeds_a_query():
    masked = datasets.load("banknote", "test").with_missing(key=0, max_rows=7)
    X, target = masked
    assert X.shape == (7, 5)
    vae = vq.from_decoder(lambda z: z @ np.ones((2, 5), np.float32), 2, masked_names())
    q = vae.given(masked)
    np.testing.assert_array_equal(q.target_mask, target)
    np.testing.assert_array_equal(q.observed_mask, ~np.isnan(X))


def masked_names():
    return datasets.load("banknote").schema
