"""From a VAE to a NumPyro model, and from the NumPyro model to a :class:`Target`.

The query model is an ordinary NumPyro model::

    z ~ N(0, I_d)            or the sites of a custom latent prior (LatentPrior)
    x_k ~ p_k(x_k | decode(z))   masked to the observed features, obs=x
    factor log P(lo_k <= x_k <= hi_k | decode(z))   summed over interval evidence
    factor f_i(E[x | z])                             soft constraints (Query.factor/where)

so NumPyro's ``MCMC``, ``SVI``, ``Predictive`` and effect handlers run on it.
Backends never see the decoder: they see a :class:`Target`, whose log-densities
are computed from that model with :func:`numpyro.infer.util.log_density`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.util import log_density


def build_numpyro_model(
    decode_fn, likelihood, latent_dim: int, factors=(), prior=None, conditional=None
):
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
    prior : LatentPrior, optional
        A custom latent prior: its NumPyro model runs unchanged inside the
        query model (its sites keep their names) and the decoder receives the
        flat vector :meth:`LatentPrior.ravel` of their values. Default: the
        single site ``"z" ~ N(0, I_d)``.
    conditional : EvidenceConditional, optional
        A model that conditions its latent prior and its decoder on the
        evidence (VAEAC): ``z ~ N(conditional.prior(x, cond))`` and
        ``params = conditional.decode(z, x, cond)``, where ``cond`` (the
        model's keyword argument, ``bool [D]``) marks the features conditioned
        on. Likelihood sites then cover ``observed & ~cond`` only: with
        ``observed == cond`` (a query) the evidence enters through the
        conditioning alone, and with ``observed`` widened to the targets the
        model is the joint of :math:`\log p(x_U \mid x_O)`'s IWAE.
        ``decode_fn`` and ``prior`` are then unused.

    Returns
    -------
    callable
        NumPyro model with keyword/positional arguments ``x: [D]`` (finite
        everywhere; unobserved entries are ignored) and ``observed: bool [D]``,
        and optionally interval (censored) evidence ``lo, hi: [D]`` (model
        units, ``-inf``/``inf`` for one-sided) with its mask ``interval: bool
        [D]``. Latent site ``"z"`` (or the custom prior's sites); observed
        sites ``"x"`` (one kind of feature) or ``"x_real"``, ``"x_binary"``,
        ``"x_categorical"`` (mixed kinds); interval evidence is the factor site ``"x_interval"``,
        :math:`\sum_k \log P(lo_k \le x_k \le hi_k \mid z)`
        (:meth:`vaequery.likelihoods.Likelihood.log_prob_interval`).
    """

    def model(x, observed, lo=None, hi=None, interval=None, cond=None):
        if conditional is not None:
            if cond is None:
                raise ValueError(
                    "this model conditions on the evidence: pass cond (bool [D], the features "
                    "conditioned on), as Query.data does"
                )
            loc, scale = conditional.prior(x, cond)
            z = numpyro.sample("z", dist.Normal(loc, scale).to_event(1))
            params = conditional.decode(z, x, cond)
            observed = observed & ~cond
        elif prior is None:
            z = numpyro.sample("z", dist.Normal(jnp.zeros(latent_dim), 1.0).to_event(1))
            params = decode_fn(z)
        else:
            tr = handlers.trace(prior.fn).get_trace()
            z = prior.ravel({n: tr[n]["value"] for n in prior.names})
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
    prior_start : (loc [d], tril [d, d]) or None
        Mean and Cholesky factor of the covariance of a custom latent prior
        (:attr:`LatentPrior.moments`), where variational backends start with
        ``init="prior"``; ``None`` for the standard-normal prior.
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
    prior_start: tuple | None = None

    def decode(self, z, row):
        """Decoder parameters of ``z [..., d]`` for one row (see :func:`decode_row`)."""
        return decode_row(self.decode_fn, z, row["x"], row.get("cond"))

    def encode(self, row):
        """The encoder's ``(loc, scale) [d]`` for one row (see :func:`encode_row`)."""
        return encode_row(self.encode_fn, row["x"], row.get("cond"), row.get("observed"))

    def loglik_fn(self, z, row):
        """``log p(x_O | z)`` for one row (log-density minus log-prior)."""
        return self.logdensity_fn(z, row) - self.logprior_fn(z, row)

    @property
    def num_queries(self) -> int:
        """Number of rows in ``data``."""
        return int(jax.tree_util.tree_leaves(self.data)[0].shape[0])


class EvidenceConditional(eqx.Module):
    """Base of models whose latent prior and decoder read the evidence (VAEAC).

    Subclasses implement :meth:`prior` and :meth:`decode`. Such a module is
    the model's ``decode_fn`` and ``encode_fn``: :func:`decode_row` and
    :func:`encode_row` hand it the row's evidence, and variational backends
    start from :meth:`prior` (the model's own answer without further evidence).
    """

    reads_evidence = True

    def prior(self, x, cond):
        """``(loc, scale) [..., d]`` of ``p(z | x_cond)``; ``x [..., D]``, ``cond`` bool."""
        raise NotImplementedError

    def decode(self, z, x, cond):
        """Likelihood parameters of ``p(x | z, x_cond)``."""
        raise NotImplementedError


def decode_row(decode_fn, z, x, cond=None):
    """Decoder parameters of ``z [..., d]``, given one row's evidence where the model reads it.

    Parameters
    ----------
    decode_fn : callable or EvidenceConditional
        A model's ``decode_fn``.
    z : array ``[..., d]``
    x : array ``[D]``
        The row, model units (unobserved entries ignored).
    cond : bool array ``[D]``, optional
        The features the model conditions on (required by an
        :class:`EvidenceConditional`).

    Returns
    -------
    pytree
        Parameters for the model's likelihood.
    """
    if getattr(decode_fn, "reads_evidence", False):
        if cond is None:
            raise ValueError("this model's decoder reads the evidence: pass cond=")
        return decode_fn.decode(z, x, cond)
    return decode_fn(z)


def encode_row(encode_fn, x, cond=None, observed=None):
    """An encoder's ``(loc, scale) [d]`` for one row (the prior network for VAEAC models).

    Parameters
    ----------
    encode_fn : callable or EvidenceConditional
        A model's ``encode_fn``.
    x : array ``[D]``
        The row, model units, unobserved entries zero-filled.
    cond : bool array ``[D]``, optional
        Required by an :class:`EvidenceConditional`.
    observed : bool array ``[D]``, optional
        The row's observed mask, handed to an encoder that reads it
        (``MLPEncoder(mask_input=True)``); without it such an encoder reads
        the mask off the zero-filled row as ``x != 0``.

    Returns
    -------
    (loc, scale)
    """
    if getattr(encode_fn, "reads_evidence", False):
        if cond is None:
            raise ValueError("this model's encoder reads the evidence: pass cond=")
        return encode_fn.prior(x, cond)
    if observed is not None and getattr(encode_fn, "mask_input", False):
        return encode_fn(jnp.where(observed, x, 0.0), observed)
    return encode_fn(x)


class DecoderSampler(eqx.Module):
    """``(key, z[..., d]) -> x[..., D]``: a draw from ``p(x | z)``.

    A module, not a closure, so that equal models give equal (hashable) targets
    and a jitted backend is not recompiled for every query.
    """

    decode_fn: Callable
    likelihood: object

    def __call__(self, key, z):
        return self.likelihood.sample(key, self.decode_fn(z))


class ConstrainedDecoder(eqx.Module):
    """The decoder of a model whose latent prior has constrained sites, on unconstrained ``z``.

    ``z [..., d]`` (the flat unconstrained vector the backends work in) is
    mapped to the sites' own values by :meth:`LatentPrior.constrain`, then
    decoded. What ``VAE.decode_fn`` is for such a model, so that every
    consumer of ``post.z`` (imputations, predictive draws, IWAE) decodes it
    the same way.

    Parameters
    ----------
    decode_fn : callable
        The user's decoder, on the sites' own (constrained) values.
    prior : LatentPrior
    """

    decode_fn: Callable
    prior: LatentPrior = eqx.field(static=True)

    def __call__(self, z):
        """Decode unconstrained ``z [..., d]``."""
        return self.decode_fn(self.prior.constrain(z))


@dataclasses.dataclass(frozen=True)
class LatentPrior:
    """A latent prior given as a NumPyro model, seen by backends as one flat vector.

    The prior model takes no arguments and has one or several continuous
    sample sites (a hierarchy ``z1 ~ p(z1)``, ``z2 ~ p(z2 | z1)``, ...). The
    flat latent vector ``z [d]`` that the backends see concatenates the sites'
    values **in the order the sites are sampled**, each ravelled in row-major
    (C) order: ``z = concat([z1.ravel(), z2.ravel(), ...])``.

    Sites may have a constrained support whose bijection to the real line
    keeps their shape (positive: ``HalfNormal``, ``LogNormal``, ``Gamma``;
    an interval: ``Beta``, ``Uniform``; bounds that depend on earlier sites
    too). Backends then work in NumPyro's **unconstrained** space: the flat
    ``z`` holds each site mapped to the real line by
    ``numpyro.distributions.biject_to(support).inv`` (``log s`` for a
    positive ``s``), the log-density carries the log-Jacobian
    (:func:`numpyro.infer.util.potential_energy`), the decoder receives the
    constrained values (:meth:`constrain`), and ``Posterior.z_sites`` gives
    them back in the sites' own units. Sites whose bijection changes their
    shape (a simplex, a correlation matrix) are refused.

    Build one with :meth:`from_fn`; hashable (the function's identity and
    tuples), so equal models share compiled programs.

    Attributes
    ----------
    fn : callable
        The NumPyro model ``fn()``.
    names : tuple of str
        Latent sample sites, in sampling order.
    shapes : tuple of tuple of int
        Each site's value shape.
    constrained : bool
        Whether any site's support is not the whole real line.
    """

    fn: Callable
    names: tuple
    shapes: tuple
    constrained: bool = False

    @classmethod
    def from_fn(cls, fn) -> LatentPrior:
        """Trace ``fn`` once and check its sites.

        Parameters
        ----------
        fn : callable
            NumPyro model with no arguments.

        Returns
        -------
        LatentPrior

        Raises
        ------
        TypeError
            ``fn`` is not callable.
        ValueError
            ``fn`` raised, has no sample site, or a site is observed,
            discrete or has a support other than the real line.
        """
        if not callable(fn):
            raise TypeError(
                f"prior must be a NumPyro model function with no arguments, got {type(fn).__name__}"
            )
        try:
            tr = handlers.trace(handlers.seed(fn, 0)).get_trace()
        except Exception as e:
            raise ValueError(
                f"the latent prior {_fn_name(fn)} raised when called with no arguments under "
                f"a NumPyro seed ({type(e).__name__}: {e}); a prior is a NumPyro model fn() "
                "whose latent variables are numpyro.sample sites"
            ) from e
        names, shapes, constrained = [], [], False
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            if site.get("is_observed"):
                raise ValueError(
                    f"site {name!r} of the latent prior {_fn_name(fn)} is observed; a prior holds "
                    "latent sites only (evidence belongs to the query)"
                )
            support = site["fn"].support
            shape = tuple(int(n) for n in jnp.shape(site["value"]))
            if support.is_discrete:
                raise ValueError(
                    f"site {name!r} of the latent prior {_fn_name(fn)} is discrete (support "
                    f"{support}); latent sites must be continuous (sum a discrete variable out "
                    "inside the prior, or use a continuous relaxation)"
                )
            real = _is_real(support)
            if not real and not _shape_preserving(support, shape):
                raise ValueError(
                    f"site {name!r} of the latent prior {_fn_name(fn)} has support {support}, "
                    "whose map to the real line changes its shape (a simplex or a matrix "
                    "constraint); accepted: the real line, or supports mapped elementwise "
                    "(positive, an interval, a lower or upper bound: HalfNormal, LogNormal, "
                    "Gamma, Beta, Uniform, ...). Reparameterise the site as a transform of "
                    "real ones (numpyro.deterministic)"
                )
            constrained = constrained or not real
            names.append(name)
            shapes.append(shape)
        if not names:
            raise ValueError(f"the latent prior {_fn_name(fn)} has no numpyro.sample site")
        return cls(fn, tuple(names), tuple(shapes), constrained)

    @property
    def sizes(self) -> tuple:
        """Number of entries of each site."""
        return tuple(int(math.prod(s)) for s in self.shapes)

    @property
    def dim(self) -> int:
        """Length ``d`` of the flat latent vector."""
        return sum(self.sizes)

    def ravel(self, values: dict):
        """``{site: [..., *shape]}`` -> flat ``[..., d]`` (sites in sampling order).

        Parameters
        ----------
        values : dict
            Every site's value; leading batch dimensions are kept.

        Returns
        -------
        array
        """
        parts = []
        for name, shape in zip(self.names, self.shapes):
            v = jnp.asarray(values[name])
            batch = v.shape[: v.ndim - len(shape)]
            parts.append(v.reshape(batch + (-1,)))
        return jnp.concatenate(parts, axis=-1)

    def unravel(self, z) -> dict:
        """Flat ``[..., d]`` -> ``{site: [..., *shape]}`` (NumPy in, NumPy out).

        Parameters
        ----------
        z : array ``[..., d]``

        Returns
        -------
        dict
        """
        out, start = {}, 0
        batch = z.shape[:-1]
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = z[..., start : start + size].reshape(batch + shape)
            start += size
        return out

    def _map(self, fn, z):
        z = jnp.asarray(z)
        flat = z.reshape((-1, z.shape[-1]))
        out = jax.vmap(lambda u: self.ravel(fn(self.fn, (), {}, self.unravel(u))))(flat)
        return out.reshape(z.shape)

    def constrain(self, z):
        """Unconstrained flat ``[..., d]`` -> the sites' own values, flat ``[..., d]``.

        The identity for a prior whose sites are all real. Bounds that depend
        on earlier sites are honoured (the prior model runs with the values
        substituted, :func:`numpyro.infer.util.constrain_fn`).

        Parameters
        ----------
        z : array ``[..., d]``

        Returns
        -------
        array ``[..., d]``
        """
        if not self.constrained:
            return z
        from numpyro.infer.util import constrain_fn

        return self._map(constrain_fn, z)

    def unconstrain(self, x):
        """The inverse of :meth:`constrain`.

        Parameters
        ----------
        x : array ``[..., d]``
            Site values (inside their supports), flat.

        Returns
        -------
        array ``[..., d]``
        """
        if not self.constrained:
            return x
        from numpyro.infer.util import unconstrain_fn

        return self._map(unconstrain_fn, x)

    def sites(self, z) -> dict:
        """Unconstrained flat ``[..., d]`` -> ``{site: values in its own units}``.

        Parameters
        ----------
        z : array ``[..., d]``

        Returns
        -------
        dict
            NumPy arrays ``[..., *shape]`` per site.
        """
        import numpy as np

        return self.unravel(np.asarray(self.constrain(z)))

    def moments(self, num_draws: int = 4096, seed: int = 0):
        """Mean ``[d]`` and Cholesky factor ``[d, d]`` of the prior, from its draws.

        In the unconstrained space the backends work in (see the class
        docstring).

        Where variational backends start with ``init="prior"`` (a start only:
        the answer comes from the prior's density, not from these moments).

        Parameters
        ----------
        num_draws : int
        seed : int

        Returns
        -------
        (ndarray, ndarray)
        """
        import numpy as np
        from numpyro.infer import Predictive

        draws = Predictive(self.fn, num_samples=num_draws)(jax.random.PRNGKey(seed))
        z = self.ravel({n: draws[n] for n in self.names})
        z = np.asarray(self.unconstrain(z), np.float64)
        cov = np.atleast_2d(np.cov(z, rowvar=False)) + 1e-9 * np.eye(z.shape[-1])
        return z.mean(0), np.linalg.cholesky(cov)


def _is_real(support) -> bool:
    """Whether ``support`` is the real line (possibly wrapped in ``independent``)."""
    from numpyro.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return type(support) is type(constraints.real)


def _shape_preserving(support, shape) -> bool:
    """Whether ``support``'s bijection to the real line keeps a value's shape."""
    from numpyro.distributions.transforms import biject_to

    try:
        t = biject_to(support)
        return tuple(t.inverse_shape(shape)) == tuple(shape)
    except NotImplementedError:
        return False


def _fn_name(fn) -> str:
    return repr(getattr(fn, "__name__", type(fn).__name__))


#: Row fields that belong to inference, not to the model (a VI start, see ``init=``).
RESERVED_ROW_KEYS = ("start",)


def model_args(row: dict) -> dict:
    """The fields of a row that are the NumPyro model's keyword arguments."""
    return {k: v for k, v in row.items() if k not in RESERVED_ROW_KEYS}


def target_functions(numpyro_model, latent_site: str = "z", prior=None):
    """Log-density functions over the latent site of a NumPyro model.

    Parameters
    ----------
    numpyro_model : callable
        A model with a single unconstrained latent sample site ``latent_site``
        whose keyword arguments are the fields of a row.
    latent_site : str
    prior : LatentPrior, optional
        The model's latent sites are those of this prior instead: ``z`` is
        their flat vector, split back into the sites with
        :meth:`LatentPrior.unravel` (unconstrained when the prior has
        constrained sites, the log-Jacobian included).

    Returns
    -------
    (logdensity_fn, logprior_fn)
        Both ``(z[d], row_dict) -> scalar``.
    """
    prior_only = handlers.block(numpyro_model, hide_fn=_is_observed)

    def sites(z):
        return {latent_site: z} if prior is None else prior.unravel(z)

    if prior is not None and prior.constrained:
        # z is unconstrained: NumPyro maps each site to its support and adds the
        # log-Jacobian (the density of z, not of the sites' values)
        from numpyro.infer.util import potential_energy

        def logdensity_fn(z, row):
            return -potential_energy(numpyro_model, (), model_args(row), sites(z))

        def logprior_fn(z, row):
            return -potential_energy(prior_only, (), model_args(row), sites(z))

        return logdensity_fn, logprior_fn

    def logdensity_fn(z, row):
        return log_density(numpyro_model, (), model_args(row), sites(z))[0]

    def logprior_fn(z, row):
        # The observed sites are hidden from the trace; the decoder call inside
        # the blocked model is dead code that XLA removes.
        return log_density(prior_only, (), model_args(row), sites(z))[0]

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
