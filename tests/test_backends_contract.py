"""One table over the whole backend registry (Optax style): shapes, determinism,
finite output and a single compilation per batch shape."""

import numpy as np
import pytest

import vaequery as vq
from vaequery import fit
from vaequery.testing import LinearGaussian

from .conftest import FAST

ORACLE = LinearGaussian.random(3, num_features=6, latent_dim=2, sigma=0.5)


def _query(n=5, seed=0):
    _, x = ORACLE.sample(seed, n)
    obs = np.random.default_rng(seed).random(x.shape) < 0.5
    obs[0] = False  # an all-unobserved row is legal: the prior
    return ORACLE.vae(), np.where(obs, x, np.nan)


def _tiny_guide(vae, name):
    """A barely trained guide of kind ``name`` (the contract needs one, not a good one)."""
    import jax

    from vaequery.decoder import MLPEncoder

    opts = dict(num_steps=20, eval_every=10, progress=False)
    if name == "posterior_matching":
        _, x = ORACLE.sample(4, 64)
        vq.guides.train_posterior_matching(vae, x, width=8, num_blocks=1, **opts)
    elif name == "decoder_only":
        vq.guides.train_decoder_only(vae, width=8, num_blocks=1, **opts)
    elif name == "retuned_encoder":  # the oracle's encoder is exact, not an MLP: use a fresh one
        d, D = ORACLE.latent_dim, ORACLE.num_features
        net = MLPEncoder(D, d, (8,), key=jax.random.key(0))
        arch = {"class": "MLPEncoder", "num_features": D, "latent_dim": d, "hidden": [8]}
        vae.guides[name] = vq.guides.Guide(name, net, vae.feature_names, d, arch)
    else:
        raise AssertionError(f"no tiny guide recipe for {name!r}")


def _vae_for(name):
    vae, X = _query()
    cls = vq.backends._base._REGISTRY[name]
    guide = None
    if issubclass(cls, vq.backends.AmortizedBackend) and "guide" in cls.__dataclass_fields__:
        guide = cls.__dataclass_fields__["guide"].default  # the guide it reads from the model
    if cls.needs_encoder or guide is not None:
        vae = ORACLE.vae_with_encoder()
    if isinstance(guide, str):
        _tiny_guide(vae, guide)
    if getattr(cls, "needs_hierarchy", False):  # latent layers: a linear HVAE, d = 1 + 1
        vae = vq.testing.linear_hvae([[0.8]], [0.6], ORACLE.W[:, :1], ORACLE.b, ORACLE.sigma)
    return vae, X


def test_every_backend_has_fast_settings():
    missing = sorted(set(vq.backends.available()) - set(FAST))
    assert not missing, f"add FAST settings in tests/conftest.py for {missing}"


@pytest.mark.parametrize("name", vq.backends.available())
def test_contract(name):
    vae, X = _vae_for(name)
    hp = FAST[name]
    q = vae.given(X)
    p1 = q.infer(name, key=7, num_draws=11, **hp)
    d, D, N = ORACLE.latent_dim, ORACLE.num_features, X.shape[0]
    family = vq.backends._base._REGISTRY[name].family
    lead = (N, 11) if family == "vi" else (N, p1.z.shape[1], 11)
    assert p1.z.shape == lead + (d,)
    assert p1.x.shape == lead + (D,)
    assert np.isfinite(p1.z).all() and np.isfinite(p1.x).all()
    assert p1.loss.shape[0] == N and np.isfinite(p1.loss).all()
    # observed entries are copied through
    obs = ~np.isnan(X)
    xf = p1.x.reshape(N, -1, D)
    np.testing.assert_allclose(xf[:, 0][obs], X[obs], rtol=1e-5)
    # same key -> same answer; different key -> different draws
    p2 = q.infer(name, key=7, num_draws=11, **hp)
    np.testing.assert_array_equal(p1.z, p2.z)
    p3 = q.infer(name, key=8, num_draws=11, **hp)
    assert not np.array_equal(p1.z, p3.z)
    # a new batch of the same shape reuses the compiled program
    _, X2 = _query(seed=1)
    before = fit._run_batch._cached._cache_size()
    vae.given(X2).infer(name, key=1, num_draws=11, **hp)
    assert fit._run_batch._cached._cache_size() == before
    # likelihood estimates are finite
    ll = p1.log_likelihood(np.nan_to_num(X, nan=0.0) + 0.1, num_samples=16)
    assert ll.shape == (N,) and np.isfinite(ll).all()


@pytest.mark.parametrize("name", ["gaussian", "hmc"])
def test_chunked_rows_give_the_same_answer(name):
    # chunks of 2 rows (with a remainder) must reproduce the all-at-once result;
    # XLA may vectorise float32 sums differently per batch size, and an MCMC
    # chain amplifies such last-bit differences a little, hence its looser atol
    vae, X = _vae_for(name)
    q = vae.given(X)
    full = q.infer(name, key=3, num_draws=7, **FAST[name])
    chunked = q.infer(name, key=3, num_draws=7, chunk_size=2, **FAST[name])
    atol = 1e-5 if name == "gaussian" else 1e-2
    np.testing.assert_allclose(chunked.z, full.z, rtol=1e-4, atol=atol)
    _, X_true = ORACLE.sample(0, X.shape[0])
    np.testing.assert_allclose(
        chunked.log_likelihood(X_true, num_samples=16, key=1, chunk_size=2),
        full.log_likelihood(X_true, num_samples=16, key=1),
        rtol=1e-3,
        atol=atol,
    )
