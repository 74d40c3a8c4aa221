"""Reading array leaves written by :func:`equinox.tree_serialise_leaves`.

Below :mod:`vaequery.io` and the guides, which both read weights with it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np


def _deserialise_leaf(f, x):
    # jax.numpy.load would convert each array with a compiled op (one compile per
    # shape, ~0.25 s per model); a plain transfer gives the same jax.Array.
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        return jax.device_put(np.load(f))
    return eqx.default_deserialise_filter_spec(f, x)


def read_leaves(path_or_file, like):
    """Read array leaves written by :func:`equinox.tree_serialise_leaves` into ``like``.

    Parameters
    ----------
    path_or_file : str, Path or binary file
    like : pytree
        The skeleton: a module whose array leaves may be
        :class:`jax.ShapeDtypeStruct` (see :func:`vaequery.decoder.skeleton`).

    Returns
    -------
    pytree
        ``like`` with every array leaf read from ``path_or_file`` as a
        :class:`jax.Array`; shapes and dtypes are checked against ``like``.
    """
    return eqx.tree_deserialise_leaves(path_or_file, like, filter_spec=_deserialise_leaf)
