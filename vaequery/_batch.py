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


def map_rows(fn, xs, chunk_size=None, sharding=None):
    """``vmap(fn)(*xs)`` over the leading (row) axis, ``chunk_size`` rows at a time.

    Chunks run one after another under ``lax.map``, each one ``vmap`` of
    ``chunk_size`` rows. The last chunk is padded to full width with copies of
    the first row (their outputs are dropped), so every row goes through the
    same ``chunk_size``-wide program: a row's answer does not depend on the
    number of rows, and a batch of any length compiles one chunk body. Done by
    hand rather than with ``lax.map(batch_size=...)``, which fails on outputs
    with a zero-size axis (MCMC backends return an empty loss trace).

    With ``sharding`` (a :class:`jax.sharding.NamedSharding` of a 1-D mesh,
    ``PartitionSpec("q")``), the rows ``[N]`` are split over the mesh's
    ``n_dev`` devices and ``chunk_size`` counts rows *per device*: each
    ``lax.map`` step runs ``chunk_size`` of every device's own rows, so no row
    moves between devices. ``N`` must then be a multiple of ``n_dev`` (of
    ``n_dev * chunk_size`` when chunked); :func:`vaequery.fit.run` pads to it.
    """
    if sharding is not None:
        return _map_rows_sharded(fn, xs, chunk_size, sharding)
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


def _map_rows_sharded(fn, xs, chunk_size, sharding):
    """:func:`map_rows` with the row axis split over ``sharding``'s devices."""
    P = jax.sharding.PartitionSpec
    mesh = sharding.mesh
    (axis,) = mesh.axis_names
    n_dev = mesh.devices.size
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    width = n_dev * (chunk_size or 1)
    if n % width:
        raise ValueError(f"{n} rows do not split into {n_dev} devices x {chunk_size} rows")

    def constrain(tree, spec):
        return jax.tree.map(
            lambda a: jax.lax.with_sharding_constraint(a, jax.sharding.NamedSharding(mesh, spec)),
            tree,
        )

    xs = constrain(xs, P(axis))
    if chunk_size is None:
        return constrain(jax.vmap(fn)(*xs), P(axis))
    # device j holds rows [j m, (j + 1) m), m = n / n_dev; chunk c takes rows
    # j m + c chunk_size + [0, chunk_size) of every device j: a local reshape and
    # transpose, so the layout change costs no communication
    n_chunks = n // width

    def chunks(a):
        a = a.reshape((n_dev, n_chunks, chunk_size) + a.shape[1:]).swapaxes(0, 1)
        return a.reshape((n_chunks, width) + a.shape[3:])

    def unchunk(y):
        y = y.reshape((n_chunks, n_dev, chunk_size) + y.shape[2:]).swapaxes(0, 1)
        return y.reshape((n,) + y.shape[3:])

    out = jax.lax.map(
        lambda a: constrain(jax.vmap(fn)(*constrain(a, P(axis))), P(axis)),
        constrain(jax.tree.map(chunks, xs), P(None, axis)),
    )
    return constrain(jax.tree.map(unchunk, out), P(axis))
