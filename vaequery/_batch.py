"""Helpers every layer shares: PRNG keys, positive-int checks, row batching.

The bottom of the package: it imports no other vaequery module, so the driver
(:mod:`vaequery.fit`), the metrics, the posterior and the dataset generators
can all use it without importing each other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def as_key(key):
    """An int seed or a JAX key -> a new-style typed PRNG key.

    Parameters
    ----------
    key : int or jax PRNG key
        A Python/NumPy integer (64 bits at most), a typed key
        (:func:`jax.random.key`) or a legacy ``uint32 [2]`` key
        (:func:`jax.random.PRNGKey`), each a single key.

    Returns
    -------
    jax.Array
        A scalar typed PRNG key.

    Raises
    ------
    TypeError
        Anything else (a float, a string, ``None``, an array of several keys).
    """
    accepted = (
        "accepted: an int seed, jax.random.key(seed) or jax.random.PRNGKey(seed) (one key; "
        "each query row gets its own key split from it)"
    )
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        try:
            return jax.random.key(int(key))
        except OverflowError:
            raise TypeError(
                f"key {key} does not fit in a signed 64-bit integer; {accepted}"
            ) from None
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"key must be an int or a jax.random.key, got {key!r}; {accepted}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(
                f"key must be a single PRNG key, got an array of shape {key.shape}; {accepted}"
            )
        return key
    if key.shape == (2,) and key.dtype == np.uint32:  # legacy PRNGKey
        return jax.random.wrap_key_data(jnp.asarray(key))
    raise TypeError(f"key must be an int or a jax.random.key, got {key!r}; {accepted}")


def _positive_int(name, value):
    """``value`` as an int >= 1: a bool, float or string is a ``TypeError``, 0 a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an integer >= 1 (or None for the default), got "
            f"{type(value).__name__} {value!r}"
        )
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (or None for the default), got {value}")
    return int(value)


def map_rows(fn, xs, chunk_size=None):
    """``vmap(fn)(*xs)`` over the leading (row) axis, ``chunk_size`` rows at a time.

    Chunks run one after another under ``lax.map``, each one ``vmap`` of
    ``chunk_size`` rows. The last chunk is padded to full width with copies of
    the first row (their outputs are dropped), so every row goes through the
    same ``chunk_size``-wide program: a row's answer does not depend on the
    number of rows, and a batch of any length compiles one chunk body. Done by
    hand rather than with ``lax.map(batch_size=...)``, which fails on outputs
    with a zero-size axis (MCMC backends return an empty loss trace).
    """
    if chunk_size is None:
        return jax.vmap(fn)(*xs)
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n

    def chunks(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
        return a.reshape((n_chunks, chunk_size) + a.shape[1:])

    out = jax.lax.map(lambda a: jax.vmap(fn)(*a), jax.tree.map(chunks, xs))
    return jax.tree.map(lambda y: y.reshape((n_chunks * chunk_size,) + y.shape[2:])[:n], out)
