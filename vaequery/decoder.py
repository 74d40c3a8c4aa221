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
    as QAVI does when initialising from the encoder. With ``mask_input=True``
    the network also reads the observed mask (input ``[x, mask]``, ``2D``
    wide), so a zero-filled entry is told apart from an observed zero. The
    backends hand it the query's mask (:func:`vaequery.model.encode_row`);
    called without ``mask`` it reads the mask off the zero-filled row as
    ``x != 0``.
    """

    net: eqx.nn.MLP
    latent_dim: int = eqx.field(static=True)
    mask_input: bool = eqx.field(static=True, default=False)

    def __init__(self, num_features, latent_dim, hidden=(128, 128), *, key, mask_input=False):
        n_in = 2 * num_features if mask_input else num_features
        self.net = _mlp(key, (n_in, *hidden, 2 * latent_dim), jax.nn.relu)
        self.latent_dim = latent_dim
        self.mask_input = bool(mask_input)

    def __call__(self, x, mask=None):
        if self.mask_input:
            mask = (x != 0) if mask is None else jnp.broadcast_to(mask, x.shape)
            x = jnp.concatenate([x, mask.astype(x.dtype)], -1)
        out = _apply(self.net, x)
        loc, raw = jnp.split(out, 2, axis=-1)
        return loc, jax.nn.softplus(raw) + 1e-4


#: Logit of the padding levels of categorical features with fewer than ``K``
#: levels: probability 0 in any float, yet finite (``0 * pad`` stays 0).
PAD_LOGIT = -1e9


class MixedMLPDecoder(eqx.Module):
    """``z -> {"real": {"loc", "scale"}, "binary": logits, "categorical": logits}``.

    One MLP (``d -> hidden -> out``) whose output is split per feature kind,
    in the layout :class:`vaequery.likelihoods.Mixed` reads: Gaussian location
    and scale (``softplus + min_scale``) for the real columns, Bernoulli
    logits for the binary ones, and categorical logits ``[..., n_cat, K]``
    (``K`` the most levels; a feature's unused levels hold :data:`PAD_LOGIT`).
    Only the kinds present are returned.

    Parameters
    ----------
    latent_dim : int
    kinds : sequence of str
        The schema's kinds, one per column.
    num_levels : sequence of int
        The schema's ``num_levels``, one per column (used for categoricals).
    hidden : tuple of int
    min_scale : float
    key : PRNG key
    """

    net: eqx.nn.MLP
    kinds: tuple = eqx.field(static=True)
    num_levels: tuple = eqx.field(static=True)
    min_scale: float = eqx.field(static=True)

    def __init__(self, latent_dim, kinds, num_levels, hidden=(128, 128), *, min_scale=1e-3, key):
        self.kinds = tuple(str(k) for k in kinds)
        self.num_levels = tuple(int(n) for n in num_levels)
        n_out = sum(
            2 if k == "real" else 1 if k == "binary" else n
            for k, n in zip(self.kinds, self.num_levels)
        )
        self.net = _mlp(key, (latent_dim, *hidden, n_out), jax.nn.relu)
        self.min_scale = min_scale

    @property
    def num_features(self) -> int:
        """Number of columns ``D``."""
        return len(self.kinds)

    def __call__(self, z):
        out = _apply(self.net, z)
        n_real = self.kinds.count("real")
        n_bin = self.kinds.count("binary")
        levels = [n for k, n in zip(self.kinds, self.num_levels) if k == "categorical"]
        params = {}
        if n_real:
            params["real"] = {
                "loc": out[..., :n_real],
                "scale": jax.nn.softplus(out[..., n_real : 2 * n_real]) + self.min_scale,
            }
        if n_bin:
            params["binary"] = out[..., 2 * n_real : 2 * n_real + n_bin]
        if levels:
            flat = out[..., 2 * n_real + n_bin :]
            pad = jnp.full(flat.shape[:-1] + (1,), PAD_LOGIT, flat.dtype)
            flat = jnp.concatenate([flat, pad], -1)
            K, start, idx = max(levels), 0, []
            for n in levels:  # static layout: a gather index [n_cat, K], pads at the end
                idx.append([start + i if i < n else sum(levels) for i in range(K)])
                start += n
            params["categorical"] = flat[..., jnp.asarray(idx)]
        return params
