"""Training on small, incomplete tables (issue 18): MIWAE, mask encoder, held-out entries, search.

Exact answers come from the linear-Gaussian oracle (:mod:`vaequery.testing`):
``log p(x_O)`` for the importance-weighted bound and ``E[x_U | x_O]`` for
imputation.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaequery as vq
from vaequery._elbo import _model_units, _row_elbo
from vaequery.testing import LinearGaussian
from vaequery.train import _iw_bound, train
from vaequery.tuning import tune_candidates

TINY = dict(hidden=(16,), batch_size=32, progress=False)


@pytest.fixture(scope="module")
def oracle_rows():
    """A 5-feature linear-Gaussian oracle, 300 rows with 30 % of entries missing."""
    lg = LinearGaussian.random(seed=3, num_features=5, latent_dim=2, sigma=0.4)
    _, x = lg.sample(0, 300)
    mask = np.random.default_rng(1).random(x.shape) > 0.3
    mask[:, 0] = True  # no empty row
    return lg, x, mask


class _WideExactEncoder:
    """The exact ``p(z | x_O)``'s marginals, widened 1.5x: a proposal IS can correct."""

    mask_input = True

    def __init__(self, lg, x, mask):
        mean, cov = lg.posterior(x, mask)
        self.loc = jnp.asarray(mean, jnp.float32)
        self.scale = jnp.asarray(1.5 * np.sqrt(np.diagonal(cov, axis1=1, axis2=2)), jnp.float32)

    def __call__(self, x, mask):
        return self.loc, self.scale


def test_miwae_bound_is_the_elbo_at_k1_and_tends_to_log_marginal(oracle_rows):
    lg, x, mask = oracle_rows
    x, mask = x[:40], mask[:40]
    enc = _WideExactEncoder(lg, x, mask)
    lik = lg.vae().likelihood
    xs, ms = jnp.asarray(np.where(mask, x, 0.0), jnp.float32), jnp.asarray(mask)
    args = (enc, lg.decode, lik)
    # K = 1: an unbiased estimate of the masked ELBO (analytic KL), per row
    draws = jax.vmap(lambda k: _iw_bound(*args, k, xs, ms, 1))(
        jax.random.split(jax.random.key(0), 2000)
    )
    elbo = _row_elbo(lambda v: enc(v, ms), lg.decode, lik, jax.random.key(1), xs, ms, 2000)
    se = draws.std(0) / np.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(0) - elbo) < 5 * se + 0.02)
    # larger K: tighter, and up to Monte-Carlo error the exact log p(x_O)
    exact = float(np.mean(lg.log_marginal(x, mask)))
    b = {K: float(_iw_bound(*args, jax.random.key(2), xs, ms, K).mean()) for K in (1, 10, 2000)}
    assert exact - float(elbo.mean()) > 0.05  # a gap for K to close
    assert b[1] < b[10] < b[2000] <= exact + 0.01
    assert exact - b[2000] < 0.1 * (exact - b[1])
    # the trainer's objective is this bound, with the KL weight on log p(z) - log q(z)
    from vaequery.train import _row_bound

    k = jax.random.key(3)
    np.testing.assert_allclose(_row_bound(*args, k, xs, ms, 10), _iw_bound(*args, k, xs, ms, 10))


@pytest.fixture(scope="module")
def miwae_model(oracle_rows):
    lg, x, mask = oracle_rows
    X = np.where(mask, x, np.nan)
    vae = train(
        X,
        names=[f"x{i}" for i in range(5)],
        latent_dim=2,
        num_importance=5,
        encoder_mask=True,
        holdout=0.15,
        weight_decay=1e-4,
        num_epochs=150,
        patience=30,
        learning_rate=1e-2,
        key=1,
        **TINY,
    )
    return vae


def test_imputation_approaches_the_exact_conditional_mean(oracle_rows, miwae_model):
    lg, _, _ = oracle_rows
    _, x = lg.sample(7, 60)
    obs = np.random.default_rng(8).random(x.shape) > 0.4
    obs[:, 0] = True
    X = np.where(obs, x, np.nan)
    mean_z, _ = lg.posterior(x, obs)
    exact = mean_z @ lg.W.T + lg.b  # E[x | x_O], every feature
    post = miwae_model.given(X).infer("gaussian", key=0, num_draws=100)
    imp = post.impute()
    col_means = np.nanmean(np.where(np.isnan(X), np.nan, x), 0)
    err_vq = np.sqrt(np.mean((imp - exact)[~obs] ** 2))
    err_mean = np.sqrt(np.mean((col_means[None, :] - exact)[~obs] ** 2))
    assert err_vq < 0.5 * err_mean, (err_vq, err_mean)


def test_early_stopping_keeps_the_best_held_out_epoch(oracle_rows, miwae_model):
    r = miwae_model.metadata["recipe"]
    hist = r["holdout_history"]
    assert r["num_importance"] == 5 and r["encoder_mask"] and "held out" in r["early_stopping"]
    assert len(hist) == r["epochs_run"] and r["best_epoch"] == int(np.argmax(hist)) + 1
    assert r["holdout_score"] == pytest.approx(max(hist), abs=1e-4)
    # it stopped after `patience` epochs without improvement, before the cap
    assert r["epochs_run"] == r["best_epoch"] + 30 < 150
    assert max(hist) > hist[0] + 0.05  # training improved the held-out entries' likelihood


def test_the_mask_input_is_saved_and_old_models_read_values_only(miwae_model, tmp_path):
    back = vq.load(miwae_model.save(tmp_path / "m"))
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["architecture"]["encoder"]["inputs"] == "values_and_mask"
    assert back.encode_fn.mask_input and back.encode_fn.net.in_size == 10
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5)), jnp.float32)
    m = jnp.asarray([[True, False, True, True, False]] * 4)
    xm = jnp.where(m, x, 0.0)
    for a, b in zip(miwae_model.encode_fn(xm, m), back.encode_fn(xm, m)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # called without a mask (as backends do) it reads zero-filled entries as missing
    for a, b in zip(back.encode_fn(xm), back.encode_fn(xm, m)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    old = vq.pretrained("banknote")  # a file without "inputs": values only
    assert not old.encode_fn.mask_input and old.encode_fn.net.in_size == old.num_features


def test_search_is_deterministic_and_never_reads_val_or_test_rows(oracle_rows):
    lg, x, mask = oracle_rows
    X = np.where(mask, x, np.nan)[:96]
    names = [f"x{i}" for i in range(5)]
    spec = {"latent_dim": [1, 2], "hidden": [(8,)], "num_epochs": 4}
    poison = np.full((20, 5), 1e6)  # a search that read these would change
    a = train(X, names=names, tune=spec, key=1, progress=False, batch_size=32)
    b = train(X, poison, poison, names=names, tune=spec, key=1, progress=False, batch_size=32)
    ta, tb = a.metadata["recipe"]["tune"], b.metadata["recipe"]["tune"]
    assert ta == tb and len(ta["candidates"]) == 2
    scores = [c["score"] for c in ta["candidates"]]
    assert ta["selected"]["latent_dim"] == [1, 2][int(np.argmax(scores))]
    z = np.zeros((3, a.latent_dim), np.float32)
    np.testing.assert_array_equal(np.asarray(a.decode_mean(z)), np.asarray(b.decode_mean(z)))
    assert b.metadata["test_elbo"] < -1e6  # the poison was only evaluated afterwards
    # the default grid: a handful of configurations, relative to D, deduplicated
    base = dict(latent_dim=16, hidden=(128, 128), beta=1.0, holdout=0.0, num_importance=1)
    grid = tune_candidates(30, True, base)
    assert 3 <= len(grid) <= 8 and grid == tune_candidates(30, True, base)
    assert all(c["holdout"] > 0 and c["latent_dim"] <= 30 for c in grid)


@pytest.mark.parametrize(
    "opts, err, match",
    [
        (dict(num_importance=0), ValueError, "num_importance must be >= 1"),
        (dict(num_importance=2.5), TypeError, "num_importance must be a positive integer"),
        (dict(beta=-1.0), ValueError, "beta"),
        (dict(holdout=1.0), ValueError, "holdout must be a fraction"),
        (dict(weight_decay=-0.1), ValueError, "weight_decay"),
        (dict(select_by="mse"), ValueError, "select_by must be one of"),
        (dict(tune={"width": [8]}), ValueError, "unknown key.*accepted"),
        (dict(tune="yes"), TypeError, "tune must be True, False or a dict"),
        (dict(tune={"latent_dim": []}), ValueError, "empty"),
    ],
)
def test_bad_options_are_refused_clearly(opts, err, match):
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(err, match=match):
        train(X, names=["a", "b", "c"], num_epochs=1, **TINY, **opts)


def test_the_mask_encoder_is_refused_on_mixed_tables():
    X = np.column_stack([np.random.default_rng(0).standard_normal(20), np.arange(20) % 2])
    with pytest.raises(ValueError, match="encoder_mask=True needs a table whose features are all"):
        train(X, names=["a", "b"], kinds={"b": "binary"}, encoder_mask=True, num_epochs=1, **TINY)


def test_default_options_leave_the_recipe_as_it_was(oracle_rows):
    lg, x, mask = oracle_rows
    vae = train(np.where(mask, x, np.nan)[:64], names=list("abcde"), num_epochs=1, **TINY)
    r = vae.metadata["recipe"]
    assert not {"num_importance", "holdout", "tune", "encoder_mask", "beta"} & set(r)
    assert r["optimizer"].startswith("adam(")
    assert _model_units is not None


def test_backends_hand_a_mask_reading_encoder_the_querys_own_mask():
    """An observed exact 0 is observed: fill_zeros and VI starts pass the query's mask."""
    from vaequery.decoder import MLPDecoder, MLPEncoder

    D, d = 4, 2
    enc = MLPEncoder(D, d, (8,), key=jax.random.key(0), mask_input=True)
    dec = MLPDecoder(d, D, (8,), key=jax.random.key(1))
    vae = vq.from_decoder(dec, d, D, encode_fn=enc)
    x = np.array([[0.0, 1.5, np.nan, np.nan]])  # feature 0 observed at exactly 0
    obs = np.array([True, True, False, False])
    loc, scale = enc(jnp.asarray(np.nan_to_num(x[0]), jnp.float32), jnp.asarray(obs))
    wrong, _ = enc(jnp.asarray(np.nan_to_num(x[0]), jnp.float32))  # reads x != 0 as the mask
    assert np.abs(np.asarray(loc - wrong)).max() > 1e-3  # the two readings differ here
    post = vae.given(x).infer("fill_zeros", num_draws=20000, key=0)
    z = np.asarray(post.z)[0]
    np.testing.assert_allclose(z.mean(0), loc, atol=4 * float(scale.max()) / np.sqrt(20000))
    state = post.state
    np.testing.assert_allclose(np.asarray(state["loc"])[0], loc, rtol=1e-5, atol=1e-6)
