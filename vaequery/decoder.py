"""Decoder protocol and the MLP encoder/decoder networks vaequery trains.

A decoder is any callable ``decode(z[..., d]) -> params`` whose output matches the
model's likelihood (see :mod:`vaequery.likelihoods`). vaequery's own networks are
small equinox modules; users may bring Flax/Haiku/Equinox functions instead.
"""

from __future__ import annotations

from typing import Protocol

import equinox as eqx
import jax
import jax.numpy as jnp


class Decoder(Protocol):
    """Anything that maps latent codes to likelihood parameters."""

    def __call__(self, z: jax.Array):  # z: [..., d]
        ...


def skeleton(build, *args, **kwargs):
    """The module ``build(*args, **kwargs, key=...)`` would return, without computing it.

    Loading a saved model needs only the *structure* of its networks: every
    array is then read from disk. Building them for real runs (and compiles)
    one random initialiser per layer, most of a second per network on CPU.
    :func:`equinox.filter_eval_shape` traces the constructor instead, so the
    array leaves come back as :class:`jax.ShapeDtypeStruct` placeholders that
    :func:`equinox.tree_deserialise_leaves` fills with the saved weights.

    Parameters
    ----------
    build : callable
        A module class or factory taking a ``key=`` keyword argument.
    *args, **kwargs
        Its other arguments.

    Returns
    -------
    equinox.Module
        Same structure and static fields as the real module; array leaves are
        ``jax.ShapeDtypeStruct``.

    Examples
    --------
    >>> from vaequery.decoder import MLPDecoder, skeleton
    >>> dec = skeleton(MLPDecoder, 2, 3, (8,))
    >>> dec.net.layers[0].weight
    ShapeDtypeStruct(shape=(8, 2), dtype=float32)
    """
    # the key is made inside the traced function: nothing runs eagerly
    return eqx.filter_eval_shape(lambda: build(*args, **kwargs, key=jax.random.key(0)))


def _mlp(key, sizes, activation):
    return eqx.nn.MLP(
        in_size=sizes[0],
        out_size=sizes[-1],
        width_size=sizes[1] if len(sizes) > 2 else 1,
        depth=len(sizes) - 2,
        activation=activation,
        key=key,
    )


def _apply(mlp, x):
    """Apply an eqx MLP over any number of leading batch axes."""
    flat = x.reshape((-1, x.shape[-1]))
    out = jax.vmap(mlp)(flat)
    return out.reshape(x.shape[:-1] + out.shape[-1:])


class MLPDecoder(eqx.Module):
    """``z -> {"loc", "scale"}`` Gaussian decoder (QAVI: d->128->128->2D, ReLU).

    The scale is per feature and per sample: ``softplus(raw) + min_scale``.

    Parameters
    ----------
    latent_dim, num_features : int
    hidden : tuple of int
        Hidden widths (all equal; eqx.nn.MLP uses one width).
    min_scale : float
        QAVI adds 0.001 to the softplus scale.
    key : PRNG key
    """

    net: eqx.nn.MLP
    num_features: int = eqx.field(static=True)
    min_scale: float = eqx.field(static=True)

    def __init__(self, latent_dim, num_features, hidden=(128, 128), *, min_scale=1e-3, key):
        self.net = _mlp(key, (latent_dim, *hidden, 2 * num_features), jax.nn.relu)
        self.num_features = num_features
        self.min_scale = min_scale

    def __call__(self, z):
        out = _apply(self.net, z)
        loc, raw = jnp.split(out, 2, axis=-1)
        return {"loc": loc, "scale": jax.nn.softplus(raw) + self.min_scale}


class MLPEncoder(eqx.Module):
    """``x -> (loc, scale)`` diagonal Gaussian encoder (QAVI: D->128->128->2d).

    Unobserved inputs are zero-filled (the standardised mean) before encoding,
    as QAVI does when initialising from the encoder.
    """

    net: eqx.nn.MLP
    latent_dim: int = eqx.field(static=True)

    def __init__(self, num_features, latent_dim, hidden=(128, 128), *, key):
        self.net = _mlp(key, (num_features, *hidden, 2 * latent_dim), jax.nn.relu)
        self.latent_dim = latent_dim

    def __call__(self, x):
        out = _apply(self.net, x)
        loc, raw = jnp.split(out, 2, axis=-1)
        return loc, jax.nn.softplus(raw) + 1e-4
