"""Per-feature likelihoods against SciPy, masking, and NaN-safety of gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vaequery as vq
from vaequery import likelihoods as L
from vaequery.schema import Feature


def test_gaussian_fixed_and_learned_scale():
    rng = np.random.default_rng(0)
    x, loc, sc = rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), rng.uniform(0.5, 2, (3, 5))
    mask = rng.random((3, 5)) < 0.6
    ref = np.where(mask, stats.norm(loc, sc).logpdf(x), 0).sum(-1)
    got = L.Gaussian().log_prob(x, {"loc": loc, "scale": sc}, mask)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    ref2 = np.where(mask, stats.norm(loc, 0.3).logpdf(x), 0).sum(-1)
    np.testing.assert_allclose(L.Gaussian(scale=0.3).log_prob(x, loc, mask), ref2, rtol=1e-5)


def test_bernoulli_and_categorical():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 6))
    x = (rng.random((4, 6)) < 0.5).astype(float)
    mask = rng.random((4, 6)) < 0.7
    p = 1 / (1 + np.exp(-logits))
    ref = np.where(mask, stats.bernoulli(p).logpmf(x), 0).sum(-1)
    np.testing.assert_allclose(L.Bernoulli().log_prob(x, logits, mask), ref, rtol=1e-5)

    clog = rng.normal(size=(4, 6, 3))
    xc = rng.integers(0, 3, (4, 6)).astype(float)
    lp = clog - np.log(np.exp(clog).sum(-1, keepdims=True))
    ref = np.where(mask, np.take_along_axis(lp, xc.astype(int)[..., None], -1)[..., 0], 0).sum(-1)
    np.testing.assert_allclose(L.Categorical().log_prob(xc, clog, mask), ref, rtol=1e-5)


def test_nan_outside_the_mask_does_not_leak_into_value_or_gradient():
    x = jnp.array([1.0, jnp.nan, 0.5])
    mask = jnp.array([True, False, True])

    def f(loc):
        return L.Gaussian(scale=1.0).log_prob(x, loc, mask)

    v, g = jax.value_and_grad(f)(jnp.zeros(3))
    assert np.isfinite(v) and np.isfinite(g).all() and g[1] == 0


def test_mixed_heads_match_their_parts():
    schema = vq.Schema((Feature("r1"), Feature("b", "binary"), Feature("r2"),
                        Feature("c", "categorical", num_levels=3)))
    lik = L.make_likelihood("mixed", schema, scale=0.5)
    params = {"real": jnp.array([0.1, -0.2]), "binary": jnp.array([0.3]),
              "categorical": jnp.array([[0.0, 1.0, -1.0]])}
    x = jnp.array([0.0, 1.0, 0.5, 2.0])
    mask = jnp.array([True, True, False, True])
    ref = (stats.norm(0.1, 0.5).logpdf(0.0) + np.log(1 / (1 + np.exp(-0.3)))
           + (-1.0 - np.log(np.exp([0.0, 1.0, -1.0]).sum())))
    np.testing.assert_allclose(lik.log_prob(x, params, mask), ref, rtol=1e-5)
    assert lik.mean(params).shape == (4,)
    assert lik.sample(jax.random.key(0), params).shape == (4,)


def test_unknown_likelihood_name():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'; accepted"):
        vq.from_decoder(lambda z: z, 1, ["a"], likelihood="poisson")
