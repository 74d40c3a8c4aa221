"""Checking user-supplied decoders and encoders once, when a model is built.

:func:`vaequery.from_decoder` calls :func:`check_decoder` and
:func:`check_encoder`: each traces the function with :func:`jax.eval_shape` on a
dummy batch (structure, shapes, floating dtype), then calls it once (finite
values, positive scales). Anything unexpected raises an error that shows what
came back and the forms that are accepted, instead of a silently wrong model.
A Gaussian decoder returning a ``(loc, scale)`` tuple is accepted explicitly and
wrapped in :class:`GaussianTupleDecoder`.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vaequery.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood, Mixed
from vaequery.schema import Schema

#: Batch size of the dummy input the decoder and encoder are checked on.
_CHECK_BATCH = 2


class GaussianTupleDecoder(eqx.Module):
    """Adapter for a Gaussian decoder returning a ``(loc, scale)`` tuple.

    :func:`from_decoder` wraps such a decoder in this module so that the
    likelihood sees ``{"loc": loc, "scale": scale}``. It is an equinox module,
    not a closure, so equal models stay equal and hashable and a compiled query
    is reused.

    Parameters
    ----------
    fn : callable
        The user's decoder ``z[..., d] -> (loc [..., D], scale [..., D])``.
    """

    fn: Callable

    def __call__(self, z):
        """``{"loc": loc, "scale": scale}`` from ``fn(z) = (loc, scale)``."""
        loc, scale = self.fn(z)
        return {"loc": loc, "scale": scale}


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _kind(x) -> str:
    return "a single array" if _is_array(x) else type(x).__name__


def _describe(tree) -> str:
    """Structure and shapes of a pytree, e.g. ``(float32[2, 8], float32[2, 8])``."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, tuple | list):
        inner = ", ".join(_describe(v) for v in tree)
        if isinstance(tree, list):
            return f"[{inner}]"
        return f"({inner},)" if len(tree) == 1 else f"({inner})"
    if _is_array(tree):
        return f"{np.dtype(tree.dtype).name}[{', '.join(str(n) for n in tree.shape)}]"
    return f"{type(tree).__name__} {tree!r}"[:80]


def _shape(shape) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


class _Checker:
    """Raises errors naming the problem, what came back and the accepted forms."""

    def __init__(self, who, given, got, likelihood, forms):
        self.who, self.given, self.got = who, given, got
        self.likelihood, self.forms = likelihood, forms

    def fail(self, exc, problem):
        lik = f" for the {self.likelihood} likelihood" if self.likelihood else ""
        raise exc(
            f"{self.who} output{lik} is not accepted: {problem}. "
            f"On {self.given} it returned {self.got}. Accepted forms: {self.forms}."
        )

    def array(self, leaf, what, shape, axis_names):
        """Check one leaf is a floating array of exactly ``shape``."""
        if not _is_array(leaf):
            self.fail(TypeError, f"{what} is a {type(leaf).__name__}, not an array")
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            self.fail(
                TypeError,
                f"{what} has dtype {np.dtype(leaf.dtype).name}; it must be floating point",
            )
        got = tuple(leaf.shape)
        if len(got) != len(shape):
            want = "[..., " + ", ".join(axis_names) + "]"
            self.fail(
                ValueError,
                f"{what} has {len(got)} {'axis' if len(got) == 1 else 'axes'}, shape "
                f"{_shape(got)}; expected {want} = {_shape(shape)}",
            )
        for k, name in enumerate(axis_names, start=len(shape) - len(axis_names)):
            if got[k] != shape[k]:
                self.fail(
                    ValueError,
                    f"{what} has {name} = {got[k]} (shape {_shape(got)}); "
                    f"expected {name} = {shape[k]}",
                )
        if got != tuple(shape):
            self.fail(
                ValueError,
                f"{what} has shape {_shape(got)}; expected {_shape(shape)}, one row per input row",
            )


def _gaussian_forms(D) -> str:
    return (
        f"the mean [..., {D}]; a dict {{'loc': [..., {D}], 'scale': [..., {D}]}}; "
        f"or a (loc, scale) tuple of two [..., {D}] arrays"
    )


def _check_gaussian(chk, spec, D, what="", allow_tuple=True) -> bool:
    """Structure/shape check of Gaussian params; True if a tuple must be wrapped."""
    B = _CHECK_BATCH
    pre = f"{what} " if what else ""
    if _is_array(spec):
        chk.array(spec, f"{pre}mean".strip(), (B, D), ["D"])
        return False
    if isinstance(spec, dict):
        if set(spec) != {"loc", "scale"}:
            chk.fail(
                TypeError,
                f"{pre}dict has keys {sorted(map(str, spec))}; expected exactly 'loc' and 'scale'",
            )
        chk.array(spec["loc"], f"{pre}'loc'".strip(), (B, D), ["D"])
        _check_scale_shape(chk, spec["scale"], f"{pre}'scale'".strip(), D)
        return False
    if allow_tuple and isinstance(spec, tuple | list):
        if len(spec) != 2:
            chk.fail(TypeError, f"a tuple must be (loc, scale), got {len(spec)} elements")
        chk.array(spec[0], "loc (tuple element 0)", (B, D), ["D"])
        _check_scale_shape(chk, spec[1], "scale (tuple element 1)", D)
        return True
    chk.fail(TypeError, f"{pre}unsupported output type {type(spec).__name__}".strip())


def _check_scale_shape(chk, leaf, what, D):
    """A scale: floating, ``[2, D]`` or broadcastable to it (e.g. ``[D]``)."""
    B = _CHECK_BATCH
    if not _is_array(leaf):
        chk.fail(TypeError, f"{what} is a {type(leaf).__name__}, not an array")
    if leaf.ndim >= 1 and leaf.shape[-1] not in (1, D):
        chk.fail(
            ValueError,
            f"{what} has D = {leaf.shape[-1]} (shape {_shape(leaf.shape)}); expected D = {D}",
        )
    try:
        ok = np.broadcast_shapes(tuple(leaf.shape), (B, D)) == (B, D)
    except ValueError:
        ok = False
    if not ok:
        chk.fail(
            ValueError,
            f"{what} has shape {_shape(leaf.shape)}; expected {_shape((B, D))} "
            "(or broadcastable to it)",
        )
    chk.array(jax.ShapeDtypeStruct((B, D), leaf.dtype), what, (B, D), ["D"])


def _num_levels(schema: Schema):
    levels = [f.num_levels for f in schema if f.kind == "categorical"]
    return max(levels) if levels else None


def _check_categorical(chk, spec, n, K, what="logits"):
    B = _CHECK_BATCH
    if not _is_array(spec):
        chk.fail(TypeError, f"{what} must be one array, got {type(spec).__name__}")
    if spec.ndim == 3 and K is None:
        if spec.shape[-1] < 2:
            chk.fail(ValueError, f"{what} has K = {spec.shape[-1]} levels; need K >= 2")
        K = spec.shape[-1]
    chk.array(spec, what, (B, n, K if K is not None else 2), ["D", "K"])


def _forms(lik, schema: Schema) -> tuple[str, str]:
    """(likelihood name, accepted decoder outputs) for error messages."""
    D = len(schema)
    if isinstance(lik, Gaussian):
        return "Gaussian", _gaussian_forms(D)
    if isinstance(lik, Bernoulli):
        return "Bernoulli", f"logits [..., {D}]"
    if isinstance(lik, Categorical):
        K = _num_levels(schema)
        return "categorical", f"logits [..., {D}, K] with K = {K if K else 'the number of levels'}"
    if isinstance(lik, Mixed):
        parts = []
        for k, cols in lik.columns.items():
            n = len(cols)
            if k == "real":
                parts.append(f"'real': [..., {n}] or {{'loc': [..., {n}], 'scale': [..., {n}]}}")
            elif k == "binary":
                parts.append(f"'binary': logits [..., {n}]")
            else:
                parts.append(f"'categorical': logits [..., {n}, {_num_levels(schema)}]")
        return "mixed", "a dict {" + ", ".join(parts) + "} (columns in schema order)"
    return type(lik).__name__, f"params for which likelihood.mean(params) is [..., {D}]"


def _failed(who, what, x, e) -> ValueError:
    return ValueError(
        f"the {who} failed on {what} of shape {_shape(x.shape)}: "
        f"{type(e).__name__}: {str(e).rstrip('.')}. "
        f"It must accept a batch of inputs {what}[..., {x.shape[-1]}] (check the latent "
        "dimension and the number of features)."
    )


def _call(fn, x, who, what):
    try:
        return fn(x)
    except Exception as e:
        raise _failed(who, what, x, e) from e


def _check_finite(chk, out, categorical_paths=(), at="z = 0"):
    """Every float leaf finite (categorical logits may be -inf on unused levels)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        name = jax.tree_util.keystr(path) or "the output"
        a = np.asarray(leaf)
        if not np.issubdtype(a.dtype, np.floating):
            continue
        bad = np.isnan(a) | (a == np.inf)
        if name not in categorical_paths:
            bad |= a == -np.inf
        if bad.any():
            chk.fail(
                ValueError,
                f"{name} is not finite at {at} ({int(bad.sum())} of {a.size} entries are nan/inf)",
            )


def _check_positive(chk, scale, min_scale, what, at="z = 0"):
    s = np.asarray(scale) + min_scale
    if (s <= 0).any():
        chk.fail(
            ValueError,
            f"{what} must be > 0, got min {float(s.min()):.3g} at {at} "
            "(if it is a log-scale, return its exp)",
        )


def check_decoder(decode_fn: Callable, latent_dim: int, schema: Schema, likelihood: Likelihood):
    """Check a decoder against its likelihood on a dummy batch ``z = zeros([2, d])``.

    Parameters
    ----------
    decode_fn : callable
        ``z[..., d] -> params``.
    latent_dim : int
    schema : Schema
    likelihood : Likelihood

    Returns
    -------
    callable
        ``decode_fn`` itself, or a :class:`GaussianTupleDecoder` around it
        when a Gaussian decoder returns a ``(loc, scale)`` tuple.

    Raises
    ------
    ValueError, TypeError
        With what the decoder returned and the accepted forms.
    """
    B, D = _CHECK_BATCH, len(schema)
    z = jnp.zeros((B, latent_dim))
    try:
        spec = jax.eval_shape(decode_fn, z)
    except Exception as e:
        raise _failed("decoder", "z", z, e) from e
    name, forms = _forms(likelihood, schema)
    chk = _Checker("decoder", f"z of shape {_shape(z.shape)}", _describe(spec), name, forms)
    wrap = False
    cat_paths = ()
    if isinstance(likelihood, Gaussian):
        wrap = _check_gaussian(chk, spec, D)
    elif isinstance(likelihood, Bernoulli):
        chk.array(spec, "logits", (B, D), ["D"])
    elif isinstance(likelihood, Categorical):
        _check_categorical(chk, spec, D, _num_levels(schema))
        cat_paths = ("the output",)
    elif isinstance(likelihood, Mixed):
        if not isinstance(spec, dict) or set(spec) != set(likelihood.columns):
            got = sorted(map(str, spec)) if isinstance(spec, dict) else _kind(spec)
            chk.fail(
                TypeError, f"expected a dict with keys {sorted(likelihood.columns)}, got {got}"
            )
        for k, cols in likelihood.columns.items():
            n = len(cols)
            if k == "real":
                _check_gaussian(chk, spec[k], n, "'real'", allow_tuple=False)
            elif k == "binary":
                chk.array(spec[k], "'binary' logits", (B, n), ["D"])
            else:
                _check_categorical(chk, spec[k], n, _num_levels(schema), "'categorical' logits")
        cat_paths = ("['categorical']",)
    fn = GaussianTupleDecoder(decode_fn) if wrap else decode_fn
    try:
        mean = jax.eval_shape(lambda z: likelihood.mean(fn(z)), z)
    except Exception as e:
        chk.fail(TypeError, f"the likelihood cannot read it ({type(e).__name__}: {e})")
    if not _is_array(mean) or tuple(mean.shape) != (B, D):
        chk.fail(ValueError, f"its predictive mean is {_describe(mean)}; expected {_shape((B, D))}")

    out = _call(fn, z, "decoder", "z")
    chk.got = _describe(out)
    _check_finite(chk, out, cat_paths)
    if isinstance(likelihood, Gaussian) and isinstance(out, dict):
        _check_positive(chk, out["scale"], likelihood.min_scale, "scale")
    if isinstance(likelihood, Mixed) and isinstance(out.get("real"), dict):
        _check_positive(
            chk, out["real"]["scale"], likelihood.heads["real"].min_scale, "'real' scale"
        )
    return fn


def check_encoder(encode_fn: Callable, latent_dim: int, num_features: int) -> None:
    """Check an encoder on a dummy batch ``x = zeros([2, D])``.

    Parameters
    ----------
    encode_fn : callable
        ``x[..., D] -> (loc [..., d], scale [..., d])``.
    latent_dim : int
    num_features : int

    Raises
    ------
    ValueError, TypeError
        With what the encoder returned and the accepted form.
    """
    B, d = _CHECK_BATCH, latent_dim
    x = jnp.zeros((B, num_features))
    try:
        spec = jax.eval_shape(encode_fn, x)
    except Exception as e:
        raise _failed("encoder", "x", x, e) from e
    forms = f"a (loc, scale) tuple of two arrays [..., {d}] with scale > 0"
    chk = _Checker("encoder", f"x of shape {_shape(x.shape)}", _describe(spec), "", forms)
    if not isinstance(spec, tuple | list) or len(spec) != 2:
        what = (
            f"{len(spec)} elements"
            if isinstance(spec, tuple | list)
            else (type(spec).__name__ if not _is_array(spec) else "a single array")
        )
        chk.fail(TypeError, f"expected a (loc, scale) tuple, got {what}")
    chk.array(spec[0], "loc", (B, d), ["d"])
    chk.array(spec[1], "scale", (B, d), ["d"])
    out = _call(encode_fn, x, "encoder", "x")
    chk.got = _describe(out)
    _check_finite(chk, out, at="x = 0")
    _check_positive(chk, out[1], 0.0, "scale", at="x = 0")
