"""Edge queries (everything / nothing / one feature observed, d = 1, D = 1) and determinism.

Edge queries are checked against the exact posterior of linear-Gaussian oracles,
with the mean-field ``"gaussian"`` backend (exact here: d = 1, or the posterior is
the prior). Determinism: the same key gives bit-identical answers, a row's answer
does not depend on the other rows' contents, and with ``chunk_size`` it does not
depend on the number of rows either (every chunk is padded to full width); see
docs/query_language.md, "Determinism", for what is only equal to float rounding.
"""

import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian

# enough steps for the mean-field optimum at d <= 2 (measured: mean error
# < 0.02 sd, variance error < 3 %); the tolerances below are 5x that
FIT = dict(num_steps=200, num_samples=32, num_draws=400)


def _fitted(post):
    loc = np.asarray(post.state["loc"], float)
    var = np.exp(2 * np.asarray(post.state["log_scale"], float))
    return loc, var


def _assert_mean_field(post, oracle, x, observed):
    mu, var = oracle.mean_field(x, observed)
    loc, fvar = _fitted(post)
    assert (np.abs(loc - mu) / np.sqrt(var)).max() < 0.1
    assert np.abs(fvar / var - 1).max() < 0.15


@pytest.mark.parametrize("num_features, latent_dim", [(1, 1), (3, 2)])
def test_nothing_one_and_everything_observed(num_features, latent_dim):
    oracle = LinearGaussian.random(4, num_features=num_features, latent_dim=latent_dim)
    vae = oracle.vae()
    _, x = oracle.sample(5, 3)
    observed = np.zeros((3, num_features), bool)
    observed[1, 0] = True  # one feature
    observed[2] = True  # every feature
    post = vae.given(np.where(observed, x, np.nan)).infer("gaussian", key=0, **FIT)
    assert post.z.shape == (3, 400, latent_dim) and not post.failed.any()
    _assert_mean_field(post, oracle, x, observed)
    # nothing observed: the posterior is the prior, the imputations the prior predictive
    z0 = post.z[0]
    assert np.abs(z0.mean(0)).max() < 4 / np.sqrt(400)
    assert np.abs(z0.std(0) - 1).max() < 0.15
    np.testing.assert_allclose(post.x[0], np.asarray(oracle.decode(z0)), rtol=1e-5, atol=1e-5)
    # everything observed: no targets, so the predictive is empty, not an error
    assert post.query.target_mask[2].sum() == 0
    assert 2 not in post.summary().index.get_level_values("query")
    np.testing.assert_allclose(post.x[2], np.broadcast_to(x[2], post.x[2].shape), atol=1e-5)


# ------------------------------------------------------------------ determinism
ORACLE = LinearGaussian.random(0, num_features=5, latent_dim=2, sigma=0.5)
_, _X = ORACLE.sample(1, 7)
X = np.where(np.random.default_rng(2).random(_X.shape) < 0.5, _X, np.nan)
VAE = ORACLE.vae_with_encoder()  # one model: equal shapes reuse one compiled program
HP = dict(num_steps=5, num_samples=4, num_draws=5)


def test_same_key_same_bits_and_other_rows_do_not_matter(backend="gaussian"):
    vae = VAE
    a = vae.given(X).infer(backend, key=1, **HP)
    b = vae.given(X).infer(backend, key=1, **HP)
    for u, v in [(a.z, b.z), (a.x, b.x), (a.loss, b.loss)]:
        np.testing.assert_array_equal(u, v)
    other = X.copy()
    other[1:] = np.where(np.isnan(other[1:]), 0.5, np.nan)  # every other row changed
    c = vae.given(other).infer(backend, key=1, **HP)
    np.testing.assert_array_equal(c.z[0], a.z[0])
    d = vae.given(X).infer(backend, key=2, **HP)
    assert not np.allclose(d.z, a.z)  # the key does matter


def test_with_chunk_size_a_row_does_not_depend_on_the_batch_length():
    vae = VAE
    ref = vae.given(X).infer("gaussian", key=1, chunk_size=3, **HP)  # last chunk: 1 row
    for n in (5,):  # last chunk: 2 rows
        part = vae.given(X[:n]).infer("gaussian", key=1, chunk_size=3, **HP)
        np.testing.assert_array_equal(part.z, ref.z[:n])
        np.testing.assert_array_equal(part.loss, ref.loss[:n])
    # across chunk sizes (other vmap widths) only float rounding may differ
    whole = vae.given(X).infer("gaussian", key=1, **HP)
    np.testing.assert_allclose(ref.z, whole.z, rtol=1e-5, atol=1e-5)


def test_row_keys_do_not_depend_on_the_batch_length():
    # row i always gets split(key, N)[i], the same for every N: short and long
    # batches answer their common rows alike (to float rounding without chunks)
    vae = VAE
    short = vae.given(X[:2]).infer("gaussian", key=3, **HP)
    long = vae.given(X).infer("gaussian", key=3, **HP)
    np.testing.assert_allclose(short.z, long.z[:2], rtol=1e-5, atol=1e-5)
    assert isinstance(short, vq.Posterior)
