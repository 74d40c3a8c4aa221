r"""Factorised per-feature likelihoods p(x | params) with masks.

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

Interval (censored) evidence
----------------------------
``log_prob_interval(lo, hi, params, mask)`` is the log-probability that each
masked-in feature lies in ``[lo_j, hi_j]`` (bounds may be infinite), summed the
same way: :math:`\log(\Phi(b) - \Phi(a))` for a Gaussian, computed in log space
(:func:`log_ndtr_diff`), and an exact sum over the codes in the interval for
Bernoulli and categorical features (bounds inclusive).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr

from vaequery.schema import Schema

_LOG_2PI = math.log(2 * math.pi)
#: Stand-in for an infinite interval bound (model units): the probability of a
#: Gaussian beyond a million scales is 0 in any float, and it keeps gradients finite.
BIG_BOUND = 1e6
#: Below this width (in likelihood standard deviations) an interval's probability is
#: taken from the midpoint density: the CDF difference loses digits to cancellation.
NARROW_WIDTH = 1e-2


def _log1mexp(u):
    """``log(1 - exp(u))`` for ``u < 0`` (Maechler 2012), gradients finite everywhere."""
    u = jnp.minimum(u, -jnp.finfo(jnp.result_type(u)).tiny)
    near = u > -math.log(2.0)
    # both branches are evaluated: feed each a harmless value where it is not used
    u_near = jnp.where(near, u, -1.0)
    u_far = jnp.where(near, -1.0, u)
    return jnp.where(near, jnp.log(-jnp.expm1(u_near)), jnp.log1p(-jnp.exp(u_far)))


def log_ndtr_diff(a, b):
    r"""``log(Phi(b) - Phi(a))`` for standard-normal bounds ``a < b``, stably.

    The interval is reflected to the side of zero where its CDF values are
    small (:math:`\Phi(b) - \Phi(a) = \Phi(-a) - \Phi(-b)`), so both
    :func:`jax.scipy.special.log_ndtr` terms are accurate and
    :math:`\log\Phi(h) + \log(1 - e^{\log\Phi(l) - \log\Phi(h)})` loses
    nothing to cancellation, in either tail (``above(8 sd)`` gives
    :math:`\log(6.2\cdot 10^{-16})`, not ``-inf``). Intervals narrower than
    :data:`NARROW_WIDTH` use the midpoint rule with its second-order correction,
    :math:`\log w + \log\varphi(m) + \log(1 + (m^2 - 1) w^2 / 24)`.

    Parameters
    ----------
    a, b : array
        Standardised bounds, finite (use about :math:`\pm 10^6` for
        :math:`\pm\infty`), ``a < b``.

    Returns
    -------
    array
        Same shape as ``a`` and ``b``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from vaequery.likelihoods import log_ndtr_diff
    >>> float(log_ndtr_diff(jnp.float32(8.0), jnp.float32(1e6)))  # log P(Z > 8)
    -35.01343...
    """
    upper = a + b > 0
    h = jnp.where(upper, -a, b)
    lo = jnp.where(upper, -b, a)
    log_h = log_ndtr(h)
    wide = log_h + _log1mexp(log_ndtr(lo) - log_h)
    w, m = b - a, 0.5 * (a + b)
    narrow = w < NARROW_WIDTH
    w = jnp.where(narrow, w, 1.0)
    m = jnp.where(narrow, m, 0.0)
    mid = jnp.log(w) - 0.5 * m**2 - 0.5 * _LOG_2PI + jnp.log1p((m**2 - 1.0) * w**2 / 24.0)
    return jnp.where(narrow, mid, wide)


def _codes_in(lo, hi, num_codes, dtype):
    """``bool [..., K]``: which codes ``0..K-1`` lie in ``[lo, hi]`` (bounds ``[...]``)."""
    k = jnp.arange(num_codes, dtype=dtype)
    return (k >= lo[..., None]) & (k <= hi[..., None])


class Likelihood(eqx.Module):
    """Abstract factorised likelihood over the ``D`` columns of a schema."""

    def log_prob_features(self, x, params):
        """Per-feature log-densities ``[..., D]`` (``x`` must be finite everywhere)."""
        raise NotImplementedError

    def log_prob_interval_features(self, lo, hi, params):
        """Per-feature ``log P(lo_j <= x_j <= hi_j)`` ``[..., D]`` (finite bounds, ``lo < hi``)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no interval probabilities (interval evidence needs "
            "log_prob_interval_features)"
        )

    @property
    def supports_intervals(self) -> bool:
        """Whether :meth:`log_prob_interval_features` is implemented."""
        return type(self).log_prob_interval_features is not Likelihood.log_prob_interval_features

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

    def log_prob_interval(self, lo, hi, params, mask):
        """Sum of ``log P(lo_j <= x_j <= hi_j | params)`` over features with ``mask[..., j]``.

        Parameters
        ----------
        lo, hi : array ``[..., D]``
            Bounds in model units; ``-inf`` / ``inf`` for a one-sided interval.
            Entries outside ``mask`` may hold anything (NaN included).
        params : pytree
            Decoder output.
        mask : bool array ``[..., D]``

        Returns
        -------
        array ``[...]``
        """
        mask = jnp.asarray(mask, bool)
        # infinite bounds become +-BIG_BOUND and unmasked entries a harmless
        # (-1, 1): no inf or NaN can reach a value or a gradient
        lo = jnp.where(mask, jnp.clip(jnp.nan_to_num(lo, nan=-1.0), -BIG_BOUND, BIG_BOUND), -1.0)
        hi = jnp.where(mask, jnp.clip(jnp.nan_to_num(hi, nan=1.0), -BIG_BOUND, BIG_BOUND), 1.0)
        return jnp.sum(jnp.where(mask, self.log_prob_interval_features(lo, hi, params), 0.0), -1)


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

    def log_prob_interval_features(self, lo, hi, params):
        loc, scale = self._loc_scale(params)
        return log_ndtr_diff((lo - loc) / scale, (hi - loc) / scale)

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

    def log_prob_interval_features(self, lo, hi, params):
        logits = jnp.asarray(params)
        log_p = jnp.stack([-jnp.logaddexp(0.0, logits), -jnp.logaddexp(0.0, -logits)], -1)
        inside = _codes_in(lo, hi, 2, logits.dtype)
        return jax.nn.logsumexp(jnp.where(inside, log_p, -jnp.inf), -1)

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

    def log_prob_interval_features(self, lo, hi, params):
        log_p = jax.nn.log_softmax(jnp.asarray(params), -1)
        inside = _codes_in(lo, hi, log_p.shape[-1], log_p.dtype)
        return jax.nn.logsumexp(jnp.where(inside, log_p, -jnp.inf), -1)

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

    def log_prob_interval_features(self, lo, hi, params):
        parts = {
            k: h.log_prob_interval_features(self._gather(lo, k), self._gather(hi, k), params[k])
            for k, h in self.heads.items()
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
