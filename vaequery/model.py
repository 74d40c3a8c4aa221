"""From a VAE to a NumPyro model, and from the NumPyro model to a :class:`Target`.

The query model is an ordinary NumPyro model::

    z ~ N(0, I_d)
    x_k ~ p_k(x_k | decode(z))   masked to the observed features, obs=x
    factor log P(lo_k <= x_k <= hi_k | decode(z))   summed over interval evidence
    factor f_i(E[x | z])                             soft constraints (Query.factor/where)

so NumPyro's ``MCMC``, ``SVI``, ``Predictive`` and effect handlers run on it.
Backends never see the decoder: they see a :class:`Target`, whose log-densities
are computed from that model with :func:`numpyro.infer.util.log_density`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.util import log_density


def build_numpyro_model(decode_fn, likelihood, latent_dim: int, factors=()):
    r"""Return ``model(x, observed)`` for a decoder and a factorised likelihood.

    Parameters
    ----------
    decode_fn : callable
        ``z[..., d] -> params`` for ``likelihood``.
    likelihood : vaequery.likelihoods.Likelihood
    latent_dim : int
    factors : tuple of callable
        Extra soft evidence ``fn(x_mean[D]) -> log-factor`` (``x_mean`` the
        decoded mean in model units) added with :func:`numpyro.factor` as the
        sites ``"factor_0"``, ``"factor_1"``, ... (:class:`SoftFactor`, used by
        ``Query.factor`` and ``Query.where``). Like every observed site they
        count in the log-likelihood, not in the log-prior.

    Returns
    -------
    callable
        NumPyro model with keyword/positional arguments ``x: [D]`` (finite
        everywhere; unobserved entries are ignored) and ``observed: bool [D]``,
        and optionally interval (censored) evidence ``lo, hi: [D]`` (model
        units, ``-inf``/``inf`` for one-sided) with its mask ``interval: bool
        [D]``. Latent site ``"z"``; observed sites ``"x"`` (one kind of
        feature) or ``"x_real"``, ``"x_binary"``, ``"x_categorical"`` (mixed
        kinds); interval evidence is the factor site ``"x_interval"``,
        :math:`\sum_k \log P(lo_k \le x_k \le hi_k \mid z)`
        (:meth:`vaequery.likelihoods.Likelihood.log_prob_interval`).
    """

    def model(x, observed, lo=None, hi=None, interval=None):
        z = numpyro.sample("z", dist.Normal(jnp.zeros(latent_dim), 1.0).to_event(1))
        params = decode_fn(z)
        for kind, cols, d in likelihood.numpyro_sites(params):
            xs = x if cols is None else x[..., cols]
            ms = observed if cols is None else observed[..., cols]
            xs = jnp.where(ms, xs, 0)
            if kind == "categorical":
                xs = xs.astype(jnp.int32)
            name = "x" if cols is None else f"x_{kind}"
            # .mask() before .to_event(): the order that gives the right density
            # (API_NOTES: a mask outside to_event is silently wrong).
            numpyro.sample(name, d.mask(ms).to_event(1), obs=xs)
        if interval is not None:
            # censored evidence has no density to observe: it is a likelihood
            # factor, which log_density counts and the prior-only block hides
            numpyro.factor("x_interval", likelihood.log_prob_interval(lo, hi, params, interval))
        if factors:
            x_mean = likelihood.mean(params)
            for i, fn in enumerate(factors):
                numpyro.factor(f"factor_{i}", fn(x_mean))

    return model


def _is_observed(msg) -> bool:
    return bool(msg.get("is_observed"))


class Target(NamedTuple):
    """What backends see: a batch of per-query log-densities over ``z``.

    Attributes
    ----------
    logdensity_fn : callable
        ``(z[d], row) -> log p(z) + log p(x_O | z)`` (plus soft-evidence factors).
    logprior_fn : callable
        ``(z[d], row) -> log p(z)``; backends use it for the β-weighted KL.
    latent_dim : int
    decode_fn : callable
        ``z[..., d] -> params`` (for imputations, not for inference).
    encode_fn : callable or None
        ``x[..., D] -> (loc, scale)`` if the model has an encoder.
    data : dict
        ``{"x": [N, D], "observed": bool [N, D]}``; a *row* is one slice of it.
        A query with interval evidence adds ``"lo"``, ``"hi"`` ``[N, D]`` and
        ``"interval"`` ``bool [N, D]`` (the model's optional arguments); a
        backend that evaluates the log-density on a row of its own making must
        carry them over (``{**row, "x": ...}``).
        It may also hold ``"start"`` (``{"loc": [N, d], "tril": [N, d, d]}``),
        the precomputed start of variational backends (``init=``).
    sample_x_fn : callable or None
        ``(key, z[d]) -> x[D]``: one draw of every feature from ``p(x | z)``
        in model units (Gibbs-type backends impute with it); ``None`` if the
        model cannot sample.
    numpyro_model : callable or None
        The query's NumPyro model ``model(x, observed)`` (latent site ``"z"``)
        for backends that run NumPyro's own inference on it; ``None`` for a
        target built without one.
    """

    logdensity_fn: Callable
    logprior_fn: Callable
    latent_dim: int
    decode_fn: Callable
    encode_fn: Callable | None
    data: dict
    sample_x_fn: Callable | None = None
    numpyro_model: Callable | None = None

    def loglik_fn(self, z, row):
        """``log p(x_O | z)`` for one row (log-density minus log-prior)."""
        return self.logdensity_fn(z, row) - self.logprior_fn(z, row)

    @property
    def num_queries(self) -> int:
        """Number of rows in ``data``."""
        return int(jax.tree_util.tree_leaves(self.data)[0].shape[0])


class DecoderSampler(eqx.Module):
    """``(key, z[..., d]) -> x[..., D]``: a draw from ``p(x | z)``.

    A module, not a closure, so that equal models give equal (hashable) targets
    and a jitted backend is not recompiled for every query.
    """

    decode_fn: Callable
    likelihood: object

    def __call__(self, key, z):
        return self.likelihood.sample(key, self.decode_fn(z))


#: Row fields that belong to inference, not to the model (a VI start, see ``init=``).
RESERVED_ROW_KEYS = ("start",)


def model_args(row: dict) -> dict:
    """The fields of a row that are the NumPyro model's keyword arguments."""
    return {k: v for k, v in row.items() if k not in RESERVED_ROW_KEYS}


def target_functions(numpyro_model, latent_site: str = "z"):
    """Log-density functions over the latent site of a NumPyro model.

    Parameters
    ----------
    numpyro_model : callable
        A model with a single unconstrained latent sample site ``latent_site``
        whose keyword arguments are the fields of a row.
    latent_site : str

    Returns
    -------
    (logdensity_fn, logprior_fn)
        Both ``(z[d], row_dict) -> scalar``.
    """
    prior_only = handlers.block(numpyro_model, hide_fn=_is_observed)

    def logdensity_fn(z, row):
        return log_density(numpyro_model, (), model_args(row), {latent_site: z})[0]

    def logprior_fn(z, row):
        # The observed sites are hidden from the trace; the decoder call inside
        # the blocked model is dead code that XLA removes.
        return log_density(prior_only, (), model_args(row), {latent_site: z})[0]

    return logdensity_fn, logprior_fn


# ------------------------------------------------------------ soft factors
class FeatureView(Mapping):
    """One row's features by name, in raw units: ``x["density"]``.

    What the functions of :meth:`vaequery.Query.factor`, :meth:`~vaequery.Query.where`
    and derived targets (:meth:`~vaequery.Query.predict`) receive. Each value
    is a scalar (the functions are vmapped over query rows and draws), so write
    them for one row: ``lambda x: x["a"] / x["b"]``.

    Parameters
    ----------
    names : sequence of str
        Feature names in column order.
    x : array ``[D]``
        The row, raw units (binary/categorical features: their code, or for a
        decoded mean the probability of 1 / the most likely code).
    record : list, optional
        Column indices are appended as they are read (to learn which
        features a function uses).

    Attributes
    ----------
    array : array ``[D]``
        The whole row, columns in schema order.
    """

    def __init__(self, names, x, record=None):
        self._names = tuple(names)
        self._index = {n: j for j, n in enumerate(self._names)}
        self.array = x
        self._record = record

    def __getitem__(self, name):
        from vaequery.schema import UnknownFeatureError

        j = self._index.get(name)
        if j is None:
            raise UnknownFeatureError(
                f"unknown feature {name!r}. Known features: {list(self._names)}"
            )
        if self._record is not None:
            self._record.append(j)
        return self.array[j]

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __repr__(self):
        return f"FeatureView({list(self._names)})"


@dataclasses.dataclass(frozen=True)
class SoftFactor:
    r"""A user's function of the decoded mean as a log-factor of the query model.

    Called with the decoded mean ``E[x | z]`` in model units ``[D]``; converts
    it to raw units, hands it to ``fn`` as a :class:`FeatureView` and returns

    * ``kind="factor"``: ``fn(x)`` itself (a log-weight);
    * ``kind="where"``, ``fn`` real-valued (a margin ``m``, the condition is
      ``m > 0``): :math:`\log \sigma(s\,m)` with ``log_weight=None``, else
      ``log_weight`` :math:`\cdot\, \sigma(-s\,m)` (0 where satisfied,
      ``log_weight`` where badly violated); ``s`` is ``sharpness``;
    * ``kind="where"``, ``fn`` boolean: 0 where true, ``log_weight`` where
      false.

    Hashable (tuples and the function's identity) so that equal queries share
    one compiled program.

    Attributes
    ----------
    fn : callable
    kind : {"factor", "where"}
    sharpness : float
    log_weight : float or None
    names : tuple of str
    loc, scale : tuple of float
        Per feature; raw = model * scale + loc on real features.
    real : tuple of bool
    step : bool
        ``fn`` returns booleans: the factor is a step, with no gradient.
    """

    fn: Callable
    kind: str
    sharpness: float
    log_weight: float | None
    names: tuple
    loc: tuple
    scale: tuple
    real: tuple
    step: bool = False

    def raw(self, x_mean):
        """Model units ``[..., D]`` -> raw units."""
        real = jnp.asarray(self.real)
        scale = jnp.asarray(self.scale, x_mean.dtype)
        loc = jnp.asarray(self.loc, x_mean.dtype)
        return jnp.where(real, x_mean * scale + loc, x_mean)

    def __call__(self, x_mean):
        return self.transform(self.fn(FeatureView(self.names, self.raw(x_mean))))

    def transform(self, v):
        """The log-factor from ``fn``'s value ``v`` (see the class docstring)."""
        v = jnp.asarray(v)
        if self.kind == "factor":
            return v.astype(jnp.result_type(float))
        if v.dtype == jnp.bool_:
            return jnp.where(v, 0.0, self.log_weight)
        m = self.sharpness * v
        if self.log_weight is None:
            return jax.nn.log_sigmoid(m)
        return self.log_weight * jax.nn.sigmoid(-m)

    def describe(self) -> str:
        """A few words for ``repr(Query)``."""
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"{self.kind} {name}"
