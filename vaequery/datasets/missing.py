"""Missingness generators: turn complete rows into query evidence.

Every generator is a pure function of ``(X, key)``: the same key gives the same
mask. Each returns a :class:`~vaequery.datasets.MaskedTable` ``(X_observed,
target_mask)`` where ``X_observed`` is ``X`` with NaN at the hidden entries and
``target_mask`` marks them. Entries already NaN in ``X`` stay unobserved and are
never targets.

Protocols
---------
* :func:`half_features` -- QAVI (tabular): every row loses exactly
  ``floor(D / 2)`` features chosen uniformly without replacement.
* :func:`bernoulli` -- VAEAC and posterior matching: each entry is hidden
  independently with probability ``rate`` (both papers use 0.5).
* :func:`random_patches` -- QAVI section 5: two randomly placed square patches
  (10x10 on 28x28 MNIST; scaled to the image size by default, 3x3 on 8x8 digits).
* :func:`rotating_half` -- QAVI section 5: the pixels on one side of a line
  through the image centre at a uniformly random angle.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaequery._batch import as_key


class MaskedTable(NamedTuple):
    """Query evidence with a target mask, as produced by :meth:`Table.with_missing`.

    Unpacks as ``X, target_mask = masked`` and is accepted directly by
    :meth:`vaequery.VAE.given`, which then predicts exactly ``target_mask``.

    Attributes
    ----------
    X : ndarray ``[N, D]``
        Evidence in raw units, NaN where unobserved.
    target_mask : bool ndarray ``[N, D]``
        The entries that were removed (and should be predicted).
    """

    X: np.ndarray
    target_mask: np.ndarray

    @property
    def observed_mask(self) -> np.ndarray:
        """``~isnan(X)``: the entries given as evidence."""
        return ~np.isnan(self.X)


def _key(key):
    return as_key(key)


def _apply(X, hide) -> MaskedTable:
    X = np.array(X, dtype=float, copy=True)
    hide = np.asarray(hide, bool) & ~np.isnan(X)
    X[hide] = np.nan
    return MaskedTable(X, hide)


def _as_2d(X):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must have shape [N, D], got {X.shape}")
    return X


def half_features(X, key=0, num_missing=None) -> MaskedTable:
    """Hide exactly ``floor(D / 2)`` features of every row (QAVI).

    Parameters
    ----------
    X : array ``[N, D]``
    key : int or jax PRNG key
    num_missing : int, optional
        Features hidden per row; default ``floor(D / 2)``.

    Returns
    -------
    MaskedTable
    """
    X = _as_2d(X)
    n, d = X.shape
    k = d // 2 if num_missing is None else int(num_missing)
    if not 0 <= k <= d:
        raise ValueError(f"num_missing must be in 0..{d}, got {k}")
    u = jax.random.uniform(_key(key), (n, d))
    # The k smallest of D iid uniforms are a uniform k-subset without replacement.
    rank = jnp.argsort(jnp.argsort(u, axis=1), axis=1)
    return _apply(X, np.asarray(rank < k))


def bernoulli(X, rate=0.5, key=0) -> MaskedTable:
    """Hide each entry independently with probability ``rate`` (MCAR).

    Parameters
    ----------
    X : array ``[N, D]``
    rate : float in [0, 1]
    key : int or jax PRNG key

    Returns
    -------
    MaskedTable
    """
    X = _as_2d(X)
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    hide = jax.random.uniform(_key(key), X.shape) < rate
    return _apply(X, np.asarray(hide))


def _check_image(X, image_shape):
    X = _as_2d(X)
    h, w = (int(s) for s in image_shape)
    if h * w != X.shape[1]:
        raise ValueError(f"image_shape {image_shape} does not match {X.shape[1]} columns")
    return X, h, w


def random_patches(X, image_shape, key=0, num_patches=2, size=None) -> MaskedTable:
    """Hide ``num_patches`` randomly placed square patches per image (QAVI section 5).

    Parameters
    ----------
    X : array ``[N, H * W]``
        Row-major flattened images.
    image_shape : (H, W)
    key : int or jax PRNG key
    num_patches : int
        QAVI uses 2.
    size : int, optional
        Patch side. Default ``round(10 / 28 * min(H, W))``: QAVI's 10x10 on MNIST.
        Patches may overlap; each lies wholly inside the image.

    Returns
    -------
    MaskedTable
    """
    X, h, w = _check_image(X, image_shape)
    s = max(1, round(10 / 28 * min(h, w))) if size is None else int(size)
    if not 1 <= s <= min(h, w):
        raise ValueError(f"patch size must be in 1..{min(h, w)}, got {s}")
    n = X.shape[0]
    k1, k2 = jax.random.split(_key(key))
    top = jax.random.randint(k1, (n, num_patches, 1, 1), 0, h - s + 1)
    left = jax.random.randint(k2, (n, num_patches, 1, 1), 0, w - s + 1)
    i = jnp.arange(h)[:, None]
    j = jnp.arange(w)[None, :]
    inside = (i >= top) & (i < top + s) & (j >= left) & (j < left + s)
    return _apply(X, np.asarray(inside.any(1)).reshape(n, h * w))


def rotating_half(X, image_shape, key=0) -> MaskedTable:
    """Hide the half of each image on one side of a randomly rotated line (QAVI section 5).

    The line passes through the image centre at an angle drawn uniformly from
    ``[0, 2 pi)``; pixels whose centre lies strictly on the far side are hidden.

    Parameters
    ----------
    X : array ``[N, H * W]``
    image_shape : (H, W)
    key : int or jax PRNG key

    Returns
    -------
    MaskedTable
    """
    X, h, w = _check_image(X, image_shape)
    n = X.shape[0]
    theta = jax.random.uniform(_key(key), (n, 1, 1), maxval=2 * math.pi)
    i = jnp.arange(h)[:, None] - (h - 1) / 2
    j = jnp.arange(w)[None, :] - (w - 1) / 2
    hide = jnp.cos(theta) * j + jnp.sin(theta) * i > 0
    return _apply(X, np.asarray(hide).reshape(n, h * w))
