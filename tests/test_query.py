"""The query DSL: evidence by array or by name, targets, and clear errors."""

import numpy as np
import pytest

import vaequery as vq
from vaequery.schema import Feature


@pytest.fixture()
def vae(oracle):
    return oracle.vae(names=["a", "b", "c", "d", "e", "f", "g", "h"])


def test_named_evidence_builds_one_row(vae):
    q = vae.given(a=1.0, c=-2.0)
    assert q.single and q.num_queries == 1
    assert q.observed_mask[0].tolist() == [True, False, True] + [False] * 5
    assert q.target_mask[0].tolist() == [False, True, False] + [True] * 5
    q2 = q.predict("b", "e")
    assert np.flatnonzero(q2.target_mask[0]).tolist() == [1, 4]
    assert np.flatnonzero(q.target_mask[0]).tolist() == [1, 3, 4, 5, 6, 7]  # unchanged
    assert repr(q2) == "Query: 1 row; given a = 1, c = -2; predict b, e"


def test_array_evidence_with_nan_and_explicit_masks(vae):
    X = np.arange(16.0).reshape(2, 8)
    X[0, 3] = np.nan
    q = vae.given(X)
    assert q.observed_mask.sum() == 15 and not q.observed_mask[0, 3]
    obs = np.zeros((2, 8), bool)
    obs[:, :2] = True
    q = vae.given(X, observed=obs).predict(target=np.arange(8) >= 6)
    assert q.target_mask.sum() == 4 and q.observed_mask.sum() == 4
    assert q.x[0, 3] == 0.0  # unobserved entries carry nothing


def test_unknown_feature_name_is_named(vae):
    with pytest.raises(KeyError, match="unknown feature 'z'.*Known features"):
        vae.given(z=1.0)
    with pytest.raises(KeyError, match="'q'"):
        vae.given(a=1.0).predict("q")


def test_wrong_width(vae):
    with pytest.raises(ValueError, match=r"shape \[N, 8\].*got shape \(2, 5\)"):
        vae.given(np.zeros((2, 5)))


def test_observed_target_overlap(vae):
    with pytest.raises(ValueError, match="feature 'a' is both observed and a target in row 0"):
        vae.given(a=1.0).predict("a")


def test_non_finite_observed_value(vae):
    X = np.zeros((3, 8))
    X[2, 4] = np.inf
    with pytest.raises(ValueError, match="feature 'e' in row 2 is inf"):
        vae.given(X)
    with pytest.raises(ValueError, match="feature 'b' in row 0 is nan"):
        vae.given(np.full(8, np.nan), observed=np.arange(8) == 1)


def test_non_numeric_named_value(vae):
    with pytest.raises(TypeError, match="feature 'a' must be a number"):
        vae.given(a="high")


def test_array_and_names_together_is_an_error(vae):
    with pytest.raises(TypeError, match="not both"):
        vae.given(np.zeros(8), a=1.0)


def test_categorical_and_binary_levels_are_checked():
    schema = vq.Schema(
        (Feature("r"), Feature("flag", "binary"), Feature("colour", "categorical", num_levels=3))
    )
    vae = vq.from_decoder(
        lambda z: {"real": z[..., :1], "binary": z[..., 1:2], "categorical": z[..., None, :3]},
        latent_dim=3,
        features=schema,
        likelihood="mixed",
    )
    vae.given(np.array([0.3, 1, 2]))
    with pytest.raises(
        ValueError, match="'colour' .* row 0 has value 3.0; accepted values are integers 0..2"
    ):
        vae.given(np.array([0.3, 1, 3]))
    with pytest.raises(ValueError, match="'flag' .* accepted values are 0 or 1"):
        vae.given(flag=0.5)


def test_unknown_backend_and_hyperparameter(vae):
    q = vae.given(a=1.0)
    with pytest.raises(ValueError, match="unknown backend 'nope'; available: .*gaussian"):
        q.infer("nope")
    with pytest.raises(TypeError, match="no hyper-parameter.*'num_stepz'.*accepted"):
        q.infer("gaussian", num_stepz=3)


def test_numpyro_model_needs_a_row_for_batches(vae):
    q = vae.given(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="pass row=i"):
        q.numpyro_model()
    model, kwargs = q.numpyro_model(row=2)
    assert set(kwargs) == {"x", "observed"}


def test_nan_loss_is_reported_not_returned():
    def bad_decoder(z):
        return z[..., :1] * np.nan + z[..., :1]

    # from_decoder refuses a decoder that is NaN at z = 0; build the model directly
    vae = vq.VAE(bad_decoder, 1, vq.Schema.from_names(["a"]), vq.likelihoods.Gaussian())
    with pytest.raises(vq.InferenceError, match="non-finite loss or draws for 1 of 1"):
        vae.given(a=1.0).infer("gaussian", num_steps=5, num_samples=4, on_error="raise")
