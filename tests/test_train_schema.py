"""Your own table in: schema inference, and mixed Gaussian/Bernoulli/categorical VAEs.

The mixed model is checked against facts of the synthetic table it was trained
on, computed without the model: the binary column's frequency, the categorical
level a real feature determines, and the conditional mean of that feature.
"""

import json
import pickle

import numpy as np
import pandas as pd
import pytest

import vaequery as vq
from vaequery.decoder import MixedMLPDecoder, MLPDecoder
from vaequery.schema import encode, infer_schema
from vaequery.train import evaluate_elbo, train

P_FLAG = 0.3
CUTS = (-0.5, 0.5)  # colour = red / green / blue as the latent factor crosses these


def _table(n, seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    colour = np.where(u < CUTS[0], "red", np.where(u < CUTS[1], "green", "blue"))
    df = pd.DataFrame(
        {
            "size": 10.0 + 2.0 * u,  # determines colour
            "weight": 3.0 * u + rng.normal(0, 0.5, n) - 1.0,
            "flag": (rng.random(n) < P_FLAG).astype(int),  # independent of the rest
            "colour": colour,
        }
    )
    df.loc[::9, "weight"] = np.nan  # missing training entries drop out of the ELBO
    return df


@pytest.fixture(scope="module")
def mixed():
    df = _table(1000, 0)
    vae = train(df, latent_dim=2, hidden=(32, 32), num_epochs=40, progress=False, key=0)
    return df, vae


# ------------------------------------------------------------------ inference
def test_kinds_levels_and_scaling_inferred_from_a_dataframe():
    df = pd.DataFrame(
        {
            "age": [30.0, np.nan, 50.0, 40.0],
            "smoker": [0, 1, 1, 0],
            "vegan": [True, False, False, True],
            "city": ["Oslo", "Bergen", None, "Oslo"],
            "tier": pd.Categorical(["b", "a", "c", "a"]),
            "grade": [3, 1, 2, 3],
        }
    )
    s = infer_schema(df)
    assert s.kinds == ["real", "binary", "binary", "categorical", "categorical", "real"]
    f = {f.name: f for f in s}
    assert f["city"].levels == ("Bergen", "Oslo") and f["tier"].levels == ("a", "b", "c")
    # standardisation from the observed values only (the NaN is ignored)
    assert f["age"].loc == pytest.approx(40.0)
    assert f["age"].scale == pytest.approx(np.std([30.0, 50.0, 40.0]))
    X = encode(df, s)
    np.testing.assert_array_equal(X[:, 3], [1, 0, np.nan, 1])
    np.testing.assert_array_equal(X[:, 4], [1, 0, 2, 0])
    np.testing.assert_array_equal(X[:, 2], [1, 0, 0, 1])
    # overrides: a numeric column made categorical is named by its values
    s2 = infer_schema(df, kinds={"grade": "categorical", "smoker": "real"})
    g = s2.features[5]
    assert g.kind == "categorical" and g.levels == ("1", "2", "3")
    assert s2.kinds[1] == "real"
    np.testing.assert_array_equal(encode(df, s2)[:, 5], [2, 0, 1, 2])


def test_arrays_with_names_and_the_errors_that_remain():
    X = np.array([[1.0, 0.0], [3.0, 1.0], [5.0, 1.0]])
    s = infer_schema(X, names=["a", "b"])
    assert s.kinds == ["real", "binary"] and s.features[0].loc == pytest.approx(3.0)
    with pytest.raises(TypeError, match=r"names=\[\.\.\.\] \(2 strings"):
        infer_schema(X)
    with pytest.raises(TypeError, match="names="):
        train(X, num_epochs=1, progress=False)
    with pytest.raises(ValueError, match="'b'.*no observed value"):
        infer_schema(np.array([[1.0, np.nan], [2.0, np.nan]]), names=["a", "b"])
    with pytest.raises(ValueError, match="'c'.*text.*cannot be 'real'"):
        infer_schema(pd.DataFrame({"c": ["x", "y"]}), kinds={"c": "real"})
    with pytest.raises(ValueError, match=r"do not exist: \['nope'\]"):
        infer_schema(pd.DataFrame({"c": ["x", "y"]}), kinds={"nope": "real"})
    with pytest.raises(ValueError, match="'c'.*single value"):
        infer_schema(pd.DataFrame({"c": ["x", "x"]}))
    s = infer_schema(pd.DataFrame({"c": ["x", "y"]}))
    with pytest.raises(ValueError, match=r"'c' in row 1 has the value 'z'.*\['x', 'y'\]"):
        encode(pd.DataFrame({"c": ["x", "z"]}), s)
    with pytest.raises(TypeError, match="either schema= .* or kinds="):
        train(pd.DataFrame({"c": ["x", "y"]}), schema=s, kinds={"c": "binary"})


def test_a_real_dataframe_trains_the_gaussian_model_in_standardised_units():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(100, 15, 64), "y": rng.normal(-3, 0.01, 64)})
    vae = train(df, latent_dim=1, hidden=(8,), num_epochs=1, progress=False)
    assert isinstance(vae.decode_fn, MLPDecoder) and vae.metadata["recipe"]["likelihood"] == (
        "gaussian"
    )
    np.testing.assert_allclose(vae.schema.loc, df.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(vae.schema.scale, df.std(ddof=0).to_numpy(), rtol=1e-12)


def test_shipped_models_save_to_the_same_files():
    # the saver learned a second decoder class; Gaussian models must not notice
    shipped = vq.io.PRETRAINED_DIR / "banknote"
    files = vq.io.model_files(vq.pretrained("banknote"))
    assert files["weights.eqx"] == (shipped / "weights.eqx").read_bytes()
    a = json.loads(files["model.json"])
    b = json.loads((shipped / "model.json").read_text())
    a.pop("vaequery_version"), b.pop("vaequery_version")
    assert a == b


# ---------------------------------------------------------------- mixed VAEs
def test_mixed_vae_recovers_the_binary_frequency(mixed):
    df, vae = mixed
    assert isinstance(vae.decode_fn, MixedMLPDecoder)
    assert vae.schema.kinds == ["real", "real", "binary", "categorical"]
    # decoded predictive marginal: E_z[sigmoid(logit(z))] over prior draws of z
    import jax

    z = jax.random.normal(jax.random.key(3), (20_000, 2))
    p_model = float(np.mean(np.asarray(vae.decode_mean(z))[:, 2]))
    freq = df["flag"].mean()
    se = np.sqrt(P_FLAG * (1 - P_FLAG) / len(df))  # sampling error of the table's frequency
    assert abs(freq - P_FLAG) < 4 * se  # the table is what it claims to be
    assert abs(p_model - freq) < 0.03, (p_model, freq)


def test_mixed_vae_predicts_the_level_a_real_feature_determines(mixed):
    df, vae = mixed
    held = _table(200, 7)
    u = (held["size"].to_numpy() - 10.0) / 2.0
    clear = np.min(np.abs(u[:, None] - np.array(CUTS)), 1) > 0.15  # not on a boundary
    rows = held[clear].iloc[:40]
    X = np.full((len(rows), 4), np.nan)
    X[:, 0] = rows["size"]
    post = vae.given(X).predict("colour").infer("gaussian", key=0)
    draws = np.asarray(post.x)[..., 3].astype(int)  # codes; levels sorted: blue, green, red
    votes = np.stack([(draws == k).mean(1) for k in range(3)], 1)
    levels = np.array(vae.schema.features[3].levels)[votes.argmax(1)]
    accuracy = np.mean(levels == rows["colour"].to_numpy())
    assert accuracy >= 0.9, accuracy


def test_a_query_by_level_name_matches_the_tables_conditional_mean(mixed):
    df, vae = mixed
    post = vae.given(colour="red").predict("size").infer("gaussian", key=0)
    mean = float(post.summary().loc["size", "mean"])
    truth = df.loc[df["colour"] == "red", "size"].mean()  # about 10 + 2 E[u | u < -0.5]
    spread = df.loc[df["colour"] == "red", "size"].std()
    assert abs(mean - truth) < 0.35 * spread, (mean, truth)
    assert mean < 10.0 + 2.0 * CUTS[0]  # inside the red region


def test_mixed_vae_saves_loads_and_answers_identically(mixed, tmp_path):
    df, vae = mixed
    back = vq.load(vae.save(tmp_path / "m"))
    assert isinstance(back.likelihood, vq.likelihoods.Mixed)
    assert back.schema == vae.schema
    a = vae.given(size=12.0, colour="blue").infer("gaussian", key=1, num_steps=20)
    b = back.given(size=12.0, colour="blue").infer("gaussian", key=1, num_steps=20)
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    assert evaluate_elbo(back, df, key=2) == pytest.approx(evaluate_elbo(vae, df, key=2))
    again = pickle.loads(pickle.dumps(vae))  # through the same file format
    assert isinstance(again.decode_fn, MixedMLPDecoder) and again.schema == vae.schema
