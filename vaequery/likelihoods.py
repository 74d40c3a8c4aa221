"""Factorised per-feature likelihoods p(x | params) with masks.

Every likelihood works on a full row ``x: [..., D]`` and a boolean ``mask: [..., D]``;
``log_prob`` sums only the masked-in features, so features that are neither
observed nor queried are marginalised exactly by omission (the likelihood
factorises over features given ``z``).

Decoder output conventions (``params``)
---------------------------------------
* :class:`Gaussian` -- an array ``loc: [..., D]`` (scale fixed by the likelihood) or a
  dict ``{"loc": [..., D], "scale": [..., D]}`` (learned, per-sample scale).
* :class:`Bernoulli` -- an array of ``logits: [..., D]``.
* :class:`Categorical` -- an array of ``logits: [..., D, K]`` (``K`` = max levels).
* :class:`Mixed` -- a dict with one entry per head present in the schema:
  ``{"real": <Gaussian params over the real columns>, "binary": <logits over the
  binary columns>, "categorical": <logits [..., n_cat, K]>}``, columns in schema order.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from vaequery.schema import Schema

_LOG_2PI = math.log(2 * math.pi)


class Likelihood(eqx.Module):
    """Abstract factorised likelihood over the ``D`` columns of a schema."""

    def log_prob_features(self, x, params):
        """Per-feature log-densities ``[..., D]`` (``x`` must be finite everywhere)."""
        raise NotImplementedError

    def mean(self, params):
        """Per-feature predictive mean / most likely value ``[..., D]``."""
        raise NotImplementedError

    def sample(self, key, params):
        """One draw of ``x: [..., D]`` from ``p(x | params)``."""
        raise NotImplementedError

    def numpyro_sites(self, params):
        """``[(site_suffix, column_indices, distribution)]`` for the NumPyro model.

        Each distribution has batch shape ``[..., len(column_indices)]``.
        """
        raise NotImplementedError

    def log_prob(self, x, params, mask):
        """Sum of ``log p(x_j | params)`` over features with ``mask[..., j]`` true.

        Parameters
        ----------
        x : array ``[..., D]``
            Values; entries outside ``mask`` may hold anything (NaN included).
        params : pytree
            Decoder output.
        mask : bool array ``[..., D]``

        Returns
        -------
        array ``[...]``
        """
        mask = jnp.asarray(mask, bool)
        # Unmasked entries are replaced before evaluation so a NaN there can
        # neither leak into the sum nor into its gradient (jnp.where's NaN trap).
        x = jnp.where(mask, x, 0.0)
        return jnp.sum(jnp.where(mask, self.log_prob_features(x, params), 0.0), -1)


class Gaussian(Likelihood):
    """Independent Gaussians ``N(x_j | loc_j, scale_j)``.

    Parameters
    ----------
    scale : float or array ``[D]``, optional
        Fixed observation scale, used when the decoder returns only ``loc``.
    min_scale : float
        Added to a learned scale (QAVI: softplus(raw) + 0.001).
    """

    scale: jax.Array | float = 1.0
    min_scale: float = 0.0

    def _loc_scale(self, params):
        if isinstance(params, dict):
            return params["loc"], params["scale"] + self.min_scale
        loc = jnp.asarray(params)
        return loc, jnp.broadcast_to(jnp.asarray(self.scale, loc.dtype), loc.shape)

    def log_prob_features(self, x, params):
        loc, scale = self._loc_scale(params)
        return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * _LOG_2PI

    def mean(self, params):
        return self._loc_scale(params)[0]

    def sample(self, key, params):
        loc, scale = self._loc_scale(params)
        return loc + scale * jax.random.normal(key, loc.shape, loc.dtype)

    def numpyro_sites(self, params):
        loc, scale = self._loc_scale(params)
        return [("real", None, dist.Normal(loc, scale))]


class Bernoulli(Likelihood):
    """Independent Bernoulli features with decoder logits."""

    def log_prob_features(self, x, params):
        logits = jnp.asarray(params)
        return x * logits - jnp.logaddexp(0.0, logits)

    def mean(self, params):
        return jax.nn.sigmoid(jnp.asarray(params))

    def sample(self, key, params):
        p = jax.nn.sigmoid(jnp.asarray(params))
        return jax.random.bernoulli(key, p).astype(p.dtype)

    def numpyro_sites(self, params):
        return [("binary", None, dist.Bernoulli(logits=jnp.asarray(params)))]


class Categorical(Likelihood):
    """Independent categorical features; ``x_j`` holds an integer level code.

    The decoder returns ``logits: [..., D, K]``; features with fewer than ``K``
    levels should put ``-inf`` (or a large negative number) on unused levels.
    """

    def log_prob_features(self, x, params):
        logits = jax.nn.log_softmax(jnp.asarray(params), -1)
        idx = jnp.clip(x, 0, logits.shape[-1] - 1).astype(jnp.int32)
        return jnp.take_along_axis(logits, idx[..., None], -1)[..., 0]

    def mean(self, params):
        logits = jnp.asarray(params)
        return jnp.argmax(logits, -1).astype(logits.dtype)

    def sample(self, key, params):
        logits = jnp.asarray(params)
        return jax.random.categorical(key, logits).astype(logits.dtype)

    def numpyro_sites(self, params):
        return [("categorical", None, dist.Categorical(logits=jnp.asarray(params)))]


_HEADS = {"real": Gaussian, "binary": Bernoulli, "categorical": Categorical}


class Mixed(Likelihood):
    """Per-kind heads over the columns of a schema with mixed feature kinds.

    Parameters
    ----------
    schema : Schema
    scale : float
        Fixed Gaussian scale for the real head when the decoder returns only
        ``loc`` for it.
    min_scale : float
        Floor added to a learned Gaussian scale.
    """

    heads: dict
    columns: dict = eqx.field(static=True)
    num_features: int = eqx.field(static=True)

    def __init__(self, schema: Schema, scale=1.0, min_scale=0.0):
        self.columns = {
            k: tuple(int(i) for i in schema.indices(k)) for k in _HEADS if len(schema.indices(k))
        }
        self.heads = {
            k: (Gaussian(scale, min_scale) if k == "real" else _HEADS[k]()) for k in self.columns
        }
        self.num_features = len(schema)

    def _scatter(self, parts, batch_shape):
        out = jnp.zeros(batch_shape + (self.num_features,))
        for k, v in parts.items():
            out = out.at[..., np.array(self.columns[k])].set(v)
        return out

    def _gather(self, x, kind):
        return x[..., np.array(self.columns[kind])]

    def _batch_shape(self, params):
        k = next(iter(self.columns))
        leaf = params[k]["loc"] if isinstance(params[k], dict) else params[k]
        return leaf.shape[:-2] if k == "categorical" else leaf.shape[:-1]

    def log_prob_features(self, x, params):
        parts = {
            k: h.log_prob_features(self._gather(x, k), params[k]) for k, h in self.heads.items()
        }
        return self._scatter(parts, self._batch_shape(params))

    def mean(self, params):
        parts = {k: h.mean(params[k]) for k, h in self.heads.items()}
        return self._scatter(parts, self._batch_shape(params))

    def sample(self, key, params):
        keys = jax.random.split(key, len(self.heads))
        parts = {k: h.sample(kk, params[k]) for kk, (k, h) in zip(keys, self.heads.items())}
        return self._scatter(parts, self._batch_shape(params))

    def numpyro_sites(self, params):
        return [
            (k, np.array(self.columns[k]), h.numpyro_sites(params[k])[0][2])
            for k, h in self.heads.items()
        ]


def make_likelihood(spec, schema: Schema, scale=1.0, min_scale=0.0) -> Likelihood:
    """Build a likelihood from a user spec.

    Parameters
    ----------
    spec : {"gaussian", "bernoulli", "categorical", "mixed"} or Likelihood
        A name, or a ready :class:`Likelihood`. ``"mixed"`` uses the schema's
        feature kinds (real -> Gaussian, binary -> Bernoulli, categorical ->
        Categorical).
    schema : Schema
    scale, min_scale : float
        Gaussian fixed scale / learned-scale floor.
    """
    if isinstance(spec, Likelihood):
        return spec
    names = {
        "gaussian": Gaussian,
        "normal": Gaussian,
        "bernoulli": Bernoulli,
        "categorical": Categorical,
        "mixed": Mixed,
    }
    if spec not in names:
        raise ValueError(
            f"unknown likelihood {spec!r}; accepted: {sorted(names)} or a "
            "vaequery.likelihoods.Likelihood instance"
        )
    if spec == "mixed":
        return Mixed(schema, scale, min_scale)
    if spec in ("gaussian", "normal"):
        return Gaussian(scale, min_scale)
    return names[spec]()
