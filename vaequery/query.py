"""The query language: ``model.given(...).predict(...)`` -> :class:`Query`.

A query is a batch of ``N`` rows over the model's ``D`` features, with an
``observed`` mask, a ``target`` mask and the observed values. All validation
happens here, once, so that nothing downstream fails deep inside JAX.
Features that are neither observed nor targets are marginalised out exactly.

Evidence is a value (``given(pH=3.2)``) or an interval
(``given(alcohol=vq.between(10, 12))``, :func:`above`, :func:`below`): the
latter adds ``log P(lo <= x_j <= hi | z)`` to the query's log-likelihood (see
:meth:`vaequery.likelihoods.Likelihood.log_prob_interval`), carried per row as
``lo``/``hi`` arrays and an ``interval_mask``.
"""

from __future__ import annotations

import dataclasses
import math
import weakref

import numpy as np

from vaequery.model import FeatureView, SoftFactor, Target


@dataclasses.dataclass(frozen=True)
class Interval:
    """Interval (censored) evidence ``lo <= x <= hi`` on one feature.

    Build with :func:`between`, :func:`above` or :func:`below`. Bounds are in
    the feature's raw units: numbers, ``-inf``/``inf``, level names of a
    binary/categorical feature, or arrays ``[N]`` (one interval per query row,
    in :meth:`Query.given`). They are checked when the query is built, where
    the feature and row can be named.

    For a real feature the interval's ends do not matter (``P(x = lo) = 0``);
    for binary and categorical features the bounds are inclusive, on the
    integer level codes: ``between(1, 3)`` is codes 1, 2 and 3, and
    ``above(0.5)`` on a binary feature means ``x = 1``.

    Attributes
    ----------
    lo, hi : float, str or array
    """

    lo: object = -math.inf
    hi: object = math.inf

    def __repr__(self) -> str:
        return _interval_words(self.lo, self.hi, "x")


def between(lo, hi) -> Interval:
    """Evidence that a feature lies in ``[lo, hi]`` (raw units).

    Parameters
    ----------
    lo, hi : float, str or array ``[N]``
        Bounds; ``lo < hi`` (checked when the query is built).

    Returns
    -------
    Interval

    Examples
    --------
    >>> import vaequery as vq
    >>> vq.between(40, 50)
    between(40, 50)
    """
    return Interval(lo, hi)


def above(lo) -> Interval:
    """Evidence that a feature is at least ``lo`` (raw units): ``between(lo, inf)``.

    Parameters
    ----------
    lo : float, str or array ``[N]``

    Returns
    -------
    Interval
    """
    return Interval(lo, math.inf)


def below(hi) -> Interval:
    """Evidence that a feature is at most ``hi`` (raw units): ``between(-inf, hi)``.

    Parameters
    ----------
    hi : float, str or array ``[N]``

    Returns
    -------
    Interval
    """
    return Interval(-math.inf, hi)


def _num(v) -> str:
    if isinstance(v, str):
        return v
    if np.ndim(v):
        return "[per row]"
    return f"{float(v):g}"


def _interval_words(lo, hi, name):
    """``between(lo, hi)`` / ``above(lo)`` / ``below(hi)`` (repr) or ``name in [lo, hi]``."""
    lo_inf = not isinstance(lo, str) and not np.ndim(lo) and float(lo) == -math.inf
    hi_inf = not isinstance(hi, str) and not np.ndim(hi) and float(hi) == math.inf
    if name == "x":
        if hi_inf and not lo_inf:
            return f"above({_num(lo)})"
        if lo_inf and not hi_inf:
            return f"below({_num(hi)})"
        return f"between({_num(lo)}, {_num(hi)})"
    if hi_inf and not lo_inf:
        return f"{name} >= {_num(lo)}"
    if lo_inf and not hi_inf:
        return f"{name} <= {_num(hi)}"
    return f"{name} in [{_num(lo)}, {_num(hi)}]"


def _feature_list(names):
    return ", ".join(repr(n) for n in names)


class Query:
    """A batch of conditional queries on one model.

    Do not build directly: use :meth:`vaequery.VAE.given`.

    Attributes
    ----------
    model : vaequery.VAE
    x : ndarray ``[N, D]``
        Evidence in model (standardised) units, 0 where unobserved; float32,
        or float64 when JAX runs with ``jax_enable_x64``.
    observed_mask, target_mask : bool ndarray ``[N, D]``
        Point evidence and targets.
    interval_mask : bool ndarray ``[N, D]``
        Interval evidence (:func:`between`, :func:`above`, :func:`below`); a
        feature has at most one kind of evidence in a row.
    lo, hi : ndarray ``[N, D]``
        Interval bounds in model units (``-inf``/``inf`` outside
        ``interval_mask`` and for one-sided intervals).
    single : bool
        True if the user gave one row (results are still batched ``[1, ...]``).
    factors : tuple of vaequery.model.SoftFactor
        Soft constraints on the decoded mean (:meth:`factor`, :meth:`where`),
        the same for every row.
    derived : dict
        Derived targets by name (:meth:`predict`), each a ``DerivedTarget``
        holding the user's function and the columns it reads.
    """

    def __init__(
        self,
        model,
        x,
        observed,
        target,
        single=False,
        *,
        lo=None,
        hi=None,
        interval=None,
        default_target=False,
        factors=(),
        derived=None,
    ):
        import jax

        self.model = model
        dtype = jax.dtypes.canonicalize_dtype(np.float64)
        # float32, or float64 under jax_enable_x64: evidence keeps the precision JAX computes in
        self.x = np.asarray(x, dtype)
        self.observed_mask = np.asarray(observed, bool)
        self.target_mask = np.asarray(target, bool)
        shape = self.observed_mask.shape
        self.interval_mask = (
            np.zeros(shape, bool) if interval is None else np.asarray(interval, bool)
        )
        self.lo = np.full(shape, -np.inf, dtype) if lo is None else np.asarray(lo, dtype)
        self.hi = np.full(shape, np.inf, dtype) if hi is None else np.asarray(hi, dtype)
        self.single = single
        # the target was not chosen: later evidence (Query.given) shrinks it
        self._default_target = bool(default_target)
        self.factors = tuple(factors)
        self.derived = dict(derived or {})

    # ------------------------------------------------------------------ build
    @classmethod
    def from_evidence(cls, model, X=None, *, observed=None, values=None):
        """Validate evidence and build a query (see :meth:`vaequery.VAE.given`)."""
        schema = model.schema
        D = len(schema)
        values = values or {}
        if X is not None and values:
            raise TypeError(
                "give evidence either as an array X or by feature name "
                f"({_feature_list(values)}), not both"
            )
        intervals = {}  # (row, column) -> Interval
        if X is None:
            raw = np.full((1, D), np.nan)
            for name, v in values.items():
                j = schema.index(name)
                if isinstance(v, Interval):
                    intervals[j] = (np.arange(1), _per_row(v.lo, 1, name), _per_row(v.hi, 1, name))
                else:
                    raw[0, j] = _scalar(schema.features[j], v)
            single = True
            if observed is not None:
                raise TypeError("observed= needs an array X")
        else:
            if hasattr(X, "values") and hasattr(X, "columns"):  # pandas-like
                X = _align_frame(X, schema)
            elif hasattr(X, "index") and hasattr(X, "to_dict") and hasattr(X, "values"):
                X = _align_series(X, schema)
            X, intervals = _pop_intervals(getattr(X, "X", X))
            raw = _as_float_array(X, schema)
            single = raw.ndim == 1
            if raw.ndim == 1:
                raw = raw[None]
            if raw.ndim != 2 or raw.shape[1] != D:
                raise ValueError(
                    f"evidence must have shape [N, {D}] or [{D}] (one column per "
                    f"feature: {schema.names}); got shape {np.shape(raw)}"
                )
        if observed is None:
            obs = ~np.isnan(raw)
        else:
            obs = _as_mask(observed, raw.shape, "observed")
        _check_values(raw, obs, schema)
        x = np.where(obs, schema.standardise(np.where(obs, raw, 0.0)), 0.0)
        lo, hi, itv = _interval_arrays(model, intervals, raw.shape)
        clash = itv & obs
        if clash.any():
            r, c = np.argwhere(clash)[0]
            raise ValueError(
                f"feature {schema.names[c]!r} in row {r} has both a value and an interval "
                "as evidence (through observed=); give one of them"
            )
        return cls(
            model, x, obs, ~(obs | itv), single, lo=lo, hi=hi, interval=itv, default_target=True
        )

    def given(self, **values):
        """Add evidence by feature name to every row; a new query, this one unchanged.

        Parameters
        ----------
        **values
            ``name=value`` in raw units: a number, a level name, an
            :class:`Interval` (:func:`between`, :func:`above`, :func:`below`),
            or an array ``[N]`` of numbers (one per row, NaN = no evidence in
            that row). A feature may not already have evidence in a row, nor
            be a target chosen with :meth:`predict`.

        Returns
        -------
        Query
            If the targets were never chosen (every unobserved feature), they
            shrink by the new evidence; chosen targets are kept.

        Examples
        --------
        >>> import vaequery as vq
        >>> vae = vq.testing.LinearGaussian.random(0, 3, 1).vae(names=["a", "b", "c"])
        >>> vae.given(a=1.0).given(b=vq.above(0)).predict("c")
        Query: 1 row; given a = 1, b >= 0; predict c
        """
        schema = self.model.schema
        N, D = self.observed_mask.shape
        raw = np.full((N, D), np.nan)
        intervals = {}
        for name, v in values.items():
            j = schema.index(name)
            f = schema.features[j]
            if isinstance(v, Interval):
                intervals[j] = (np.arange(N), _per_row(v.lo, N, name), _per_row(v.hi, N, name))
            elif np.ndim(v) == 0:
                raw[:, j] = _scalar(f, v)
            else:
                col = np.asarray(v, object).reshape(-1)
                if col.shape[0] != N:
                    raise ValueError(
                        f"evidence for feature {name!r} has {col.shape[0]} values; this query "
                        f"has {N} rows (give one value per row, NaN for none, or a scalar)"
                    )
                raw[:, j] = [
                    np.nan
                    if (c is None or (isinstance(c, float) and np.isnan(c)))
                    else _scalar(f, c)
                    for c in col
                ]
        obs = ~np.isnan(raw)
        _check_values(raw, obs, schema)
        lo, hi, itv = _interval_arrays(self.model, intervals, (N, D))
        new = obs | itv
        old = self.observed_mask | self.interval_mask
        for what, clash in (
            ("already has evidence", new & old),
            ("is a target", new & self.target_mask & ~self._default_target),
        ):
            if clash.any():
                r, c = np.argwhere(clash)[0]
                raise ValueError(
                    f"feature {schema.names[c]!r} {what} in row {r}; "
                    + (
                        "evidence is added, never replaced: start again from model.given(...)"
                        if what.startswith("already")
                        else "a target must be unobserved: choose targets after the evidence"
                    )
                )
        _check_derived_intervals(self.derived, itv, schema)
        x = np.where(obs, schema.standardise(np.where(obs, raw, 0.0)), self.x)
        target = self.target_mask & ~new
        return Query(
            self.model,
            x,
            self.observed_mask | obs,
            target,
            self.single,
            lo=np.where(itv, lo, self.lo),
            hi=np.where(itv, hi, self.hi),
            interval=self.interval_mask | itv,
            default_target=self._default_target,
            factors=self.factors,
            derived=self.derived,
        )

    def predict(self, *names, target=None, **derived):
        """Choose the target features, and functions of the features to predict.

        Parameters
        ----------
        *names : str
            Feature names to predict in every row. Default (no names, no
            ``target`` and no derived targets): every unobserved feature.
        target : bool array ``[N, D]`` or ``[D]``, optional
            Explicit target mask instead of names.
        **derived : callable
            Derived targets, ``name=fn`` with ``fn(x) -> scalar`` and ``x`` a
            :class:`vaequery.model.FeatureView` of one row in raw units
            (``ratio=lambda x: x["a"] / x["b"]``), written with ``jax.numpy``
            for one row (it is vmapped over rows and draws). After inference,
            ``Posterior.derived[name]`` ``[N, (chains,) S]`` holds ``fn`` of
            each posterior-predictive draw of ``x`` (``x ~ p(x | z)`` for each
            draw of ``z``, observed features at their observed values).
            Given alone, they are the only targets; a name may not be a
            feature's, and a function may not read a feature with interval
            evidence (its draws would ignore the interval).

        Returns
        -------
        Query
            A new query; this one is unchanged.

        Examples
        --------
        >>> import vaequery as vq
        >>> vae = vq.testing.LinearGaussian.random(0, 3, 1).vae(names=["a", "b", "c"])
        >>> vae.given(a=1.0).predict("b", diff=lambda x: x["b"] - x["c"])
        Query: 1 row; given a = 1; predict b, diff
        """
        schema = self.model.schema
        N, D = self.observed_mask.shape
        if names and target is not None:
            raise TypeError("give target features by name or as a mask, not both")
        new_derived = {k: _derived_target(self.model, k, fn) for k, fn in derived.items()}
        _check_derived_intervals(new_derived, self.interval_mask, schema)
        if target is not None:
            tgt = _as_mask(target, (N, D), "target")
        elif names:
            tgt = np.zeros((N, D), bool)
            for n in names:
                tgt[:, schema.index(n)] = True
        else:
            tgt = ~(self.observed_mask | self.interval_mask)
        both = tgt & self.observed_mask
        if both.any():
            r, c = np.argwhere(both)[0]
            raise ValueError(
                f"feature {schema.names[c]!r} is both observed and a target in row "
                f"{r} ({int(both.sum())} such entries); a target must be unobserved"
            )
        both = tgt & self.interval_mask
        if both.any():
            r, c = np.argwhere(both)[0]
            raise ValueError(
                f"feature {schema.names[c]!r} has interval evidence and is a target in row "
                f"{r}; a target must be unobserved (its predictive draws would ignore the "
                "interval)"
            )
        default = not names and target is None
        if default and derived:  # derived targets alone: no feature targets
            tgt, default = np.zeros((N, D), bool), False
        return self._replace(target=tgt.copy(), default_target=default, derived=new_derived)

    def _replace(self, **changes):
        """A copy with some constructor arguments changed."""
        args = {
            "x": self.x,
            "observed": self.observed_mask,
            "target": self.target_mask,
            "single": self.single,
            "lo": self.lo,
            "hi": self.hi,
            "interval": self.interval_mask,
            "default_target": self._default_target,
            "factors": self.factors,
            "derived": self.derived,
        }
        args.update(changes)
        return Query(self.model, **args)

    # ------------------------------------------------------ soft constraints
    def factor(self, fn):
        r"""Add a log-weight on the decoded data to every row; a new query.

        The query model gains the factor site ``numpyro.factor("factor_i",
        fn(x))`` with ``x`` the decoder's mean :math:`E[x \mid z]` in raw
        units, so the posterior becomes
        :math:`p(z \mid x_O)\, e^{fn(E[x \mid z])} / C`. A Gaussian
        ``-0.5 * ((x["density"] - 0.995) / 0.001) ** 2`` says "density is
        about 0.995, give or take 0.001", on the decoded mean rather than on a
        noisy draw.

        Parameters
        ----------
        fn : callable
            ``fn(x) -> scalar`` log-weight; ``x`` is a
            :class:`vaequery.model.FeatureView` of one row (``x["name"]``,
            raw units; a binary feature's mean is ``P(x = 1)``, a categorical
            one's its most likely code, which has no gradient). Written with
            ``jax.numpy`` for one row: it is vmapped over rows and draws. It
            is the same for every row.

        Returns
        -------
        Query

        Examples
        --------
        >>> import vaequery as vq
        >>> vae = vq.testing.LinearGaussian.random(0, 3, 1).vae(names=["a", "b", "c"])
        >>> def near_zero(x):
        ...     return -0.5 * (x["b"] / 0.1) ** 2
        >>> vae.given(a=1.0).factor(near_zero)
        Query: 1 row; given a = 1; predict b, c; factor near_zero
        """
        return self._add_factor(fn, "factor", 1.0, None)

    def where(self, fn, *, sharpness=1.0, log_weight=None):
        r"""Add a soft constraint ``fn(x) > 0`` on the decoded data; a new query.

        ``fn(x)`` is a margin ``m`` in raw units (positive where the
        constraint holds; "density below 0.995" is ``lambda x: 0.995 -
        x["density"]``) evaluated on the decoder's mean ``E[x | z]``. The
        query model gains the factor

        * :math:`\log \sigma(s\,m)` (``log_weight=None``): the constraint
          is observed through logistic noise of scale ``1 / sharpness``; 0
          when comfortably satisfied, about :math:`-s|m|` when violated;
        * :math:`w\,\sigma(-s\,m)` (``log_weight=w``, e.g. ``-10``): 0 when
          comfortably satisfied, ``w`` when violated, a smooth step of width
          about ``1 / sharpness`` between;
        * if ``fn`` returns booleans: 0 where true and ``log_weight``
          (required) where false: a hard step. It has no gradient, so the
          variational backends (which follow gradients and would not see it)
          refuse it; ``grid`` and the MCMC backends answer it.

        As ``sharpness`` grows either smooth form tends to the hard
        constraint. Express ``m`` in units where 1 is a meaningful violation,
        or set ``sharpness`` to one over that tolerance.

        Parameters
        ----------
        fn : callable
            ``fn(x) -> scalar``, real or boolean; ``x`` a
            :class:`vaequery.model.FeatureView` (see :meth:`factor`).
        sharpness : float
            ``s > 0``, in one over ``fn``'s units.
        log_weight : float, optional
            Finite; the log-weight of a violated constraint.

        Returns
        -------
        Query

        Examples
        --------
        >>> import vaequery as vq
        >>> vae = vq.testing.LinearGaussian.random(0, 3, 1).vae(names=["a", "b", "c"])
        >>> def b_positive(x):
        ...     return x["b"]
        >>> vae.given(a=1.0).where(b_positive, sharpness=5.0)
        Query: 1 row; given a = 1; predict b, c; where b_positive
        """
        try:
            s = float(sharpness)
        except (TypeError, ValueError):
            s = math.nan
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"sharpness must be a finite number > 0, got {sharpness!r}")
        if log_weight is not None:
            try:
                w = float(log_weight)
            except (TypeError, ValueError):
                w = math.nan
            if not math.isfinite(w):
                raise ValueError(
                    f"log_weight must be a finite number (e.g. -10.0), got {log_weight!r}; "
                    "a hard constraint is a large negative weight or a large sharpness"
                )
            log_weight = w
        return self._add_factor(fn, "where", s, log_weight)

    def _add_factor(self, fn, kind, sharpness, log_weight):
        schema = self.model.schema
        out = _trace_row_fn(self.model, fn, f"{kind}()")[0]
        if out.dtype == bool and (kind == "factor" or log_weight is None):
            raise TypeError(
                f"{kind}(): the function returns a boolean; "
                + (
                    "a factor is a real log-weight (use where(fn, log_weight=...) for a condition)"
                    if kind == "factor"
                    else "a boolean condition needs log_weight= (the log-weight where it is "
                    "false, e.g. -10.0)"
                )
            )
        f = SoftFactor(
            fn=fn,
            kind=kind,
            sharpness=sharpness,
            log_weight=log_weight,
            names=tuple(schema.names),
            loc=tuple(float(ft.loc) for ft in schema),
            scale=tuple(float(ft.scale) for ft in schema),
            real=tuple(ft.kind == "real" for ft in schema),
            step=out.dtype == bool,
        )
        return self._replace(factors=self.factors + (f,))

    @property
    def has_factors(self) -> bool:
        """Whether the query has soft constraints (:meth:`factor`, :meth:`where`)."""
        return bool(self.factors)

    def _rows(self, start, stop):
        """The query of rows ``start:stop``."""
        sl = slice(start, stop)
        return self._replace(
            x=self.x[sl],
            observed=self.observed_mask[sl],
            target=self.target_mask[sl],
            lo=self.lo[sl],
            hi=self.hi[sl],
            interval=self.interval_mask[sl],
        )

    # --------------------------------------------------------------- inspect
    @property
    def num_queries(self) -> int:
        """Number of rows ``N``."""
        return self.x.shape[0]

    def __len__(self) -> int:
        return self.num_queries

    @property
    def has_intervals(self) -> bool:
        """Whether any row has interval evidence."""
        return bool(self.interval_mask.any())

    @property
    def observed(self) -> list[dict]:
        """The evidence of each row, in raw units: ``[{name: value or Interval}]``.

        One dict per row (a one-row query gives a list of one), features in
        schema order; a binary/categorical value is its level name when the
        feature has level names. ``observed_mask`` and ``interval_mask`` are
        the same as ``[N, D]`` arrays.
        """
        schema = self.model.schema
        raw = schema.unstandardise(self.x)
        lo, hi = schema.unstandardise(self.lo), schema.unstandardise(self.hi)
        out = []
        for r in range(self.num_queries):
            row = {}
            for j, f in enumerate(schema):
                if self.observed_mask[r, j]:
                    row[f.name] = _raw_value(f, raw[r, j])
                elif self.interval_mask[r, j]:
                    row[f.name] = Interval(_raw_value(f, lo[r, j]), _raw_value(f, hi[r, j]))
            out.append(row)
        return out

    @property
    def targets(self) -> list[list[str]]:
        """The target feature names of each row (``target_mask`` as ``[N, D]`` booleans)."""
        names = self.model.schema.names
        return [[names[j] for j in np.flatnonzero(m)] for m in self.target_mask]

    def _row_words(self, r):
        ev = [
            _interval_words(v.lo, v.hi, k) if isinstance(v, Interval) else f"{k} = {_num(v)}"
            for k, v in self._observed_row(r).items()
        ]
        given = ", ".join(ev) if ev else "nothing"
        tg = ", ".join(self.targets[r] + list(self.derived)) or "nothing"
        soft = "".join(f"; {f.describe()}" for f in self.factors)
        return f"given {given}; predict {tg}{soft}"

    def _observed_row(self, r):
        return self._rows(r, r + 1).observed[0]

    def __repr__(self) -> str:
        name = self.model.metadata.get("recipe", {}).get("dataset")
        head = "Query" + (f" on {name}" if name else "")
        n = self.num_queries
        if n == 1:
            return f"{head}: 1 row; {self._row_words(0)}"
        shown = min(n, 3)
        lines = [f"{head}: {n} rows"]
        lines += [f"  row {r}: {self._row_words(r)}" for r in range(shown)]
        if n > shown:
            lines.append(
                f"  ... {n - shown} more; over all rows {self.observed_mask.mean():.0%} of "
                f"entries observed, {self.interval_mask.mean():.0%} intervals, "
                f"{self.target_mask.mean():.0%} targets"
            )
        return "\n".join(lines)

    @property
    def data(self) -> dict:
        """The arrays a backend consumes: the NumPyro model's arguments per row.

        ``{"x": [N, D], "observed": bool [N, D]}``, plus ``"lo"``, ``"hi"``
        ``[N, D]`` and ``"interval"`` ``bool [N, D]`` when some row has
        interval evidence, and ``"cond"`` ``bool [N, D]`` (the observed mask:
        what the prior and decoder read) for a model that conditions on the
        evidence (VAEAC).
        """
        out = {"x": self.x, "observed": self.observed_mask}
        if getattr(self.model, "conditional", None) is not None:
            out["cond"] = self.observed_mask  # what a VAEAC's prior and decoder read
        if self.has_intervals:
            out.update(lo=self.lo, hi=self.hi, interval=self.interval_mask)
        return out

    # ---------------------------------------------------------- as NumPyro
    def numpyro_model(self, row: int | None = None):
        """The query as a NumPyro model.

        Parameters
        ----------
        row : int, optional
            Which row's data to return. Default: row 0 of a one-row query;
            required for a batch.

        Returns
        -------
        (model_fn, kwargs)
            Run with ``MCMC(NUTS(model_fn)).run(key, **kwargs)`` or
            ``SVI(model_fn, guide, ...).run(key, steps, **kwargs)``.
        """
        if row is None:
            if self.num_queries != 1:
                raise ValueError(f"this query has {self.num_queries} rows: pass row=i to pick one")
            row = 0
        if not -self.num_queries <= row < self.num_queries:
            raise IndexError(f"row {row} out of range for {self.num_queries} queries")
        import jax.numpy as jnp

        model_fn = self._model_fns()[0]
        return model_fn, {k: jnp.asarray(v[row]) for k, v in self.data.items()}

    def _model_fns(self):
        """``(numpyro_model, (logdensity_fn, logprior_fn))`` with this query's factors."""
        if not self.factors:
            return self.model._numpyro_model, self.model._target_fns
        return _factor_model(self.model, self.factors)

    def target(self) -> Target:
        """The :class:`vaequery.model.Target` backends consume (all rows)."""
        import jax.numpy as jnp

        from vaequery.model import DecoderSampler

        numpyro_model, (logdensity_fn, logprior_fn) = self._model_fns()
        return Target(
            logdensity_fn=logdensity_fn,
            logprior_fn=logprior_fn,
            latent_dim=self.model.latent_dim,
            decode_fn=self.model.decode_fn,
            encode_fn=self.model.encode_fn,
            data={k: jnp.asarray(v) for k, v in self.data.items()},
            sample_x_fn=DecoderSampler(self.model.decode_fn, self.model.likelihood),
            numpyro_model=numpyro_model,
            prior_start=_prior_start(self.model),
        )

    # ----------------------------------------------------------------- infer
    def infer(
        self,
        backend="gaussian",
        key=0,
        *,
        num_draws=None,
        chunk_size=None,
        on_error="warn",
        devices=None,
        **hyperparameters,
    ):
        """Answer every row of the query with one inference backend.

        Parameters
        ----------
        backend : str or backend object
            A registry name (see :func:`vaequery.backends.available`) or an
            instance, e.g. ``vq.backends.Gaussian(num_steps=500)``.
        key : int or jax PRNG key
            Same key, same answer.
        num_draws : int, optional
            Posterior draws returned per query (default: the backend's).
        chunk_size : int, optional
            Rows processed together; bounds memory for large batches. With
            ``devices``, rows processed together *on each device*.
        on_error : {"warn", "raise", "ignore"}
            What to do when some rows yield a non-finite loss or draws. Rows
            are independent, so the others are unaffected: by default they are
            returned with the failing rows flagged in ``Posterior.failed`` and an
            :class:`~vaequery.fit.InferenceWarning`; ``"raise"`` raises
            :class:`vaequery.InferenceError` instead.
        devices : None, "all", int or list of jax.Device, optional
            Split the rows over several devices (a 1-D :class:`jax.sharding.Mesh`
            with axis ``"q"``; per-row inputs placed with
            ``NamedSharding(mesh, PartitionSpec("q"))``, one jitted program).
            ``"all"``: every device :func:`jax.devices` lists; an int: the first
            that many; a list: those devices. ``None`` (default): one device,
            as without the argument. The rows are padded (with copies of row 0,
            dropped from the answer) to a multiple of the device count -- of
            ``devices x chunk_size`` when ``chunk_size`` is given, which then
            counts rows per device. Each row keeps its own key, so the answer
            equals the single-device one up to float rounding. See
            ``docs/scale_out.md`` (multi-host runs included).
        init : str or Posterior, optional
            Variational backends only: where each query starts (``"auto"``,
            ``"prior"``, ``"encoder"``, ``"posterior_matching"``,
            ``"decoder_only"``, or a previous Posterior of the same rows).
        **hyperparameters
            Passed to the backend's constructor (with a name).

        Returns
        -------
        vaequery.Posterior
            With ``derived`` ``{name: [N, (chains,) S]}``, the draws of the
            derived targets chosen with :meth:`predict` (empty without).
        """
        from vaequery.fit import run

        self._check_backend(backend)
        post = run(
            self,
            backend,
            key,
            num_draws=num_draws,
            chunk_size=chunk_size,
            on_error=on_error,
            devices=devices,
            **hyperparameters,
        )
        if self.derived:
            post.derived = _derived_draws(self, post)
        return post

    def _check_backend(self, backend):
        """Refuse a backend that would silently drop interval evidence or soft factors.

        Backends that read only point evidence refuse both; gradient-based
        (variational) backends refuse a boolean :meth:`where`, whose step has
        no gradient. A model with a custom latent prior refuses the backends
        whose algorithm assumes the standard-normal prior (:data:`_STANDARD_PRIOR`).
        """
        prior = getattr(self.model, "prior", None)
        conditional = getattr(self.model, "conditional", None) is not None
        if not (self.has_intervals or self.has_factors or prior is not None or conditional):
            return
        from vaequery.backends import _base

        cls = _base._REGISTRY.get(backend) if isinstance(backend, str) else type(backend)
        if cls is None:
            return  # an unknown name: the registry's own error follows
        if conditional and (
            issubclass(cls, _base.AmortizedBackend) or cls.name in _STANDARD_PRIOR | _EVIDENCE_FREE
        ):
            ok = sorted(
                n
                for n, c in _base._REGISTRY.items()
                if not issubclass(c, _base.AmortizedBackend)
                and n not in _STANDARD_PRIOR | _EVIDENCE_FREE
            )
            raise ValueError(
                f"backend {cls.name!r} assumes the latent prior N(0, I) and a decoder of z "
                f"alone, but this model ({type(self.model).__name__}) conditions its prior and "
                f"decoder on the evidence; backends that answer it through its density: {ok}, "
                "and the model's own prior network"
            )
        if prior is not None and (
            issubclass(cls, _base.AmortizedBackend) or cls.name in _STANDARD_PRIOR
        ):
            ok = sorted(
                n
                for n, c in _base._REGISTRY.items()
                if not issubclass(c, _base.AmortizedBackend) and n not in _STANDARD_PRIOR
            )
            raise ValueError(
                f"backend {cls.name!r} assumes the latent prior N(0, I), but this model's prior "
                f"is a NumPyro model with sites {list(prior.names)}; backends that answer any "
                f"latent prior through its density: {ok}"
            )
        if not (self.has_intervals or self.has_factors):
            return
        if issubclass(cls, _base.AmortizedBackend) or cls.name in _NO_INTERVALS:
            ok = sorted(
                n
                for n, c in _base._REGISTRY.items()
                if not issubclass(c, _base.AmortizedBackend) and n not in _NO_INTERVALS
            )
            if self.has_intervals:
                r, c = np.argwhere(self.interval_mask)[0]
                what = f"the interval evidence on feature {self.model.schema.names[c]!r} (row {r})"
            else:
                what = f"the soft constraint '{self.factors[0].describe()}'"
            raise ValueError(
                f"backend {cls.name!r} reads only point evidence (x, observed) and would "
                f"ignore {what}; backends that answer interval evidence and soft "
                f"constraints: {ok}"
            )
        step = next((f for f in self.factors if f.step), None)
        if step is not None and issubclass(cls, _base.VIBackend):
            raise ValueError(
                f"backend {cls.name!r} follows gradients, and the boolean condition of "
                f"'{step.describe()}' is a step without one: the backend would not see it. "
                "Give where() a real margin (fn(x) > 0 where it holds, with sharpness=), or use "
                "a backend that evaluates the density itself ('grid', 'nuts', 'hmc', 'chees')"
            )

    def infer_stream(self, backend="gaussian", key=0, **kwargs):
        """Answer the rows block by block, in bounded memory, checkpointed and resumable.

        See :func:`vaequery.stream.infer_stream` (``checkpoint=``,
        ``block_size=``, ``keep="summary"`` or ``"posterior"``, ...).

        Parameters
        ----------
        backend : str or backend object
        key : int or jax PRNG key
        **kwargs
            Passed to :func:`vaequery.stream.infer_stream`.

        Returns
        -------
        vaequery.stream.StreamSummary or vaequery.Posterior
        """
        from vaequery.stream import infer_stream

        self._check_backend(backend)
        if self.derived:
            raise ValueError(
                f"infer_stream does not compute derived targets ({_feature_list(self.derived)}); "
                "use infer (with chunk_size= to bound memory), or predict features only"
            )
        return infer_stream(self, backend, key, **kwargs)

    def __getstate__(self):
        # a lambda or a local function cannot be pickled: say which one, and what works
        import pickle

        fns = [(f.describe(), f.fn) for f in self.factors]
        fns += [(f"derived target {k!r}", d.fn) for k, d in self.derived.items()]
        for what, fn in fns:
            try:
                pickle.dumps(fn)
            except Exception as e:
                raise TypeError(
                    f"cannot pickle this query: the function of its {what} cannot be pickled "
                    f"({type(e).__name__}: {e}). Define it with def at module level (or use "
                    "functools.partial of such a function) to pickle the query"
                ) from None
        return self.__dict__

    def next_feature(self, candidates=None, num_samples=10, backend="gaussian", key=0, **kwargs):
        """The feature each row should measure next (see :func:`vaequery.acquisition.next_feature`).

        Parameters
        ----------
        candidates : list of str, optional
        num_samples : int, default 10
        backend : str or backend object, default "gaussian"
        key : int or jax PRNG key
        **kwargs
            Passed to :func:`vaequery.acquisition.next_feature`.

        Returns
        -------
        vaequery.acquisition.FeatureChoice
        """
        from vaequery.acquisition import next_feature

        return next_feature(self, candidates, num_samples, backend, key, **kwargs)


#: Backends that complete the row with imputed values or encode it: they see only
#: ``x``/``observed`` (amortized backends are refused by class as well).
_NO_INTERVALS = frozenset({"mwg", "pseudo_gibbs", "feature_vi"})

#: Backends whose algorithm assumes the standard-normal latent prior (the grid's
#: box, the encoder-decoder Gibbs chains, feature-VI's KL to N(0, I), the numpyro
#: backend's guide on site "z"); amortized backends are refused by class as well.
_STANDARD_PRIOR = frozenset({"grid", "mwg", "pseudo_gibbs", "feature_vi", "numpyro"})

#: Refused, beside :data:`_STANDARD_PRIOR` and the amortized backends, for models
#: whose prior and decoder read the evidence (VAEAC): QAVI's hierarchical family
#: is built from an HVAE's own prior networks.
_EVIDENCE_FREE = frozenset({"hierarchical"})


# ------------------------------------------------- soft factors, derived targets
#: ``{VAE: {factors: (numpyro_model, target_fns)}}``: equal factors on one model
#: share one model function, so a second query with them does not recompile.
_FACTOR_MODELS = weakref.WeakKeyDictionary()


def _factor_model(model, factors):
    from vaequery.model import build_numpyro_model, target_functions

    cache = _FACTOR_MODELS.setdefault(model, {})
    if factors not in cache:
        prior = getattr(model, "prior", None)
        fn = build_numpyro_model(
            getattr(model, "site_decode_fn", model.decode_fn),  # the sites' own values
            model.likelihood,
            model.latent_dim,
            factors=factors,
            prior=prior,
            conditional=getattr(model, "conditional", None),
        )
        cache[factors] = (fn, target_functions(fn, prior=prior))
    return cache[factors]


def _prior_start(model):
    """``(loc [d], tril [d, d])`` of a custom latent prior (the VI start), else ``None``."""
    start = getattr(model, "prior_start", None)
    if start is None:
        return None
    import jax.numpy as jnp

    return tuple(jnp.asarray(a, jnp.result_type(float)) for a in start)


def _trace_row_fn(model, fn, what):
    """Evaluate ``fn`` abstractly on one row; ``(output ShapeDtypeStruct, columns read)``.

    Catches, at query time, a non-callable, an unknown feature name and a
    non-scalar output, naming ``what``.
    """
    import jax

    if not callable(fn):
        raise TypeError(f"{what} needs a function fn(x) -> scalar, got {type(fn).__name__}")
    names = model.schema.names
    used = []
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    try:
        out = jax.eval_shape(
            lambda x: fn(FeatureView(names, x, used)), jax.ShapeDtypeStruct((len(names),), dtype)
        )
    except KeyError as e:
        raise type(e)(f"{what}: {e.args[0] if e.args else e}") from None
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{what}: the function must return one number per row (shape ()), got {shape}; "
            'it sees one row: x["name"] is a scalar'
        )
    return out, tuple(sorted(set(used)))


@dataclasses.dataclass(frozen=True)
class DerivedTarget:
    """A derived target: the user's function and the feature columns it reads.

    Attributes
    ----------
    fn : callable
        ``fn(x) -> scalar`` on a :class:`vaequery.model.FeatureView`.
    columns : tuple of int
    """

    fn: object
    columns: tuple


def _derived_target(model, name, fn):
    if name in model.schema.names:
        raise ValueError(
            f"derived target {name!r} has the name of a feature; name it otherwise "
            f"(features: {model.schema.names})"
        )
    # a boolean output is fine: its draws are 0/1, their mean an event's probability
    _, cols = _trace_row_fn(model, fn, f"derived target {name!r}")
    return DerivedTarget(fn, cols)


def _check_derived_intervals(derived, interval_mask, schema):
    for name, d in derived.items():
        cols = list(d.columns)
        hit = interval_mask[:, cols] if cols else np.zeros((len(interval_mask), 0), bool)
        if hit.any():
            r, c = np.argwhere(hit)[0]
            raise ValueError(
                f"derived target {name!r} reads feature {schema.names[cols[c]]!r}, which has "
                f"interval evidence in row {r}; its predictive draws would ignore the interval "
                "(a derived target may read observed and unobserved features)"
            )


def _derived_draws(query, post):
    """``{name: [N, (chains,) S]}``: each derived target of each posterior-predictive draw."""
    import jax
    import jax.numpy as jnp

    from vaequery.report.imputation import predictive_draws

    schema = query.model.schema
    z = post.z
    lead = z.shape[:-1]
    if not z.size:  # an empty batch
        return {k: np.zeros(lead, z.dtype) for k in query.derived}
    # x ~ p(x | z) per draw, observed features held at their values (model units)
    x = jnp.asarray(predictive_draws(post, key=jax.random.fold_in(post._key, 2)), z.dtype)
    real = jnp.asarray([f.kind == "real" for f in schema])
    loc = jnp.asarray([float(f.loc) for f in schema], z.dtype)
    scale = jnp.asarray([float(f.scale) for f in schema], z.dtype)
    names = schema.names
    fns = {k: d.fn for k, d in query.derived.items()}

    def one_draw(xs):
        view = FeatureView(names, jnp.where(real, xs * scale + loc, xs))
        return {k: jnp.asarray(fn(view), z.dtype) for k, fn in fns.items()}

    out = jax.jit(jax.vmap(jax.vmap(one_draw)))(x)
    return {k: np.asarray(v).reshape(lead) for k, v in out.items()}


def _per_row(bound, n, name):
    """An interval bound as an object array ``[n]`` (a scalar is repeated)."""
    b = np.asarray(bound, object)
    if b.ndim == 0:
        return np.full(n, bound, object)
    b = b.reshape(-1)
    if b.shape[0] != n:
        raise ValueError(
            f"interval bounds for feature {name!r} have {b.shape[0]} values; this query has "
            f"{n} rows (give one bound per row, or a scalar)"
        )
    return b


def _pop_intervals(X):
    """Take :class:`Interval` cells out of array evidence.

    Returns ``(X, intervals)``: ``X`` with those cells set to NaN (unobserved as
    values) and ``{column: (rows [k], lo [k], hi [k])}`` with object bounds.
    """
    if isinstance(X, np.ndarray) and X.dtype != object:
        return X, {}
    if not isinstance(X, (np.ndarray, list, tuple)):
        return X, {}
    try:
        a = np.array(X, dtype=object)
    except ValueError:  # ragged: _as_float_array says so
        return X, {}
    cells = [(idx, v) for idx, v in np.ndenumerate(a) if isinstance(v, Interval)]
    if not cells:
        return X, {}
    cols = {}
    for idx, v in cells:
        r, j = (0, idx[0]) if a.ndim == 1 else idx
        cols.setdefault(j, []).append((r, v))
        a[idx] = np.nan
    out = {}
    for j, items in cols.items():
        for r, v in items:
            if np.ndim(v.lo) or np.ndim(v.hi):
                raise TypeError(
                    f"an interval in a table cell (feature column {j}, row {r}) needs scalar "
                    "bounds; per-row arrays of bounds go to Query.given(name=vq.between(lo, hi))"
                )
        rows = np.array([r for r, _ in items])
        out[j] = (
            rows,
            np.array([v.lo for _, v in items], object),
            np.array([v.hi for _, v in items], object),
        )
    return a, out


def _bound(feature, v, row, which):
    """One raw interval bound as a float (a level name becomes its code)."""
    if isinstance(v, str):
        if feature.kind == "real":
            raise TypeError(
                f"interval {which} bound for real feature {feature.name!r} in row {row} is the "
                f"string {v!r}; give a number"
            )
        return float(_level_code(feature, v, f" (interval {which} bound, row {row})"))
    try:
        b = float(v)
    except (TypeError, ValueError):
        raise TypeError(
            f"interval {which} bound for feature {feature.name!r} in row {row} must be a "
            f"number, got {type(v).__name__} {v!r}"
        ) from None
    if math.isnan(b):
        raise ValueError(
            f"interval {which} bound for feature {feature.name!r} in row {row} is NaN; give a "
            "number (use vq.above / vq.below, i.e. -inf / inf, for a one-sided interval)"
        )
    return b


def _interval_arrays(model, intervals, shape):
    """Validate interval evidence; ``(lo, hi, mask)`` ``[N, D]`` in model units.

    ``intervals`` maps a column to ``(rows [k], lo [k], hi [k])`` raw bounds.
    """
    schema = model.schema
    lo = np.full(shape, -np.inf)
    hi = np.full(shape, np.inf)
    mask = np.zeros(shape, bool)
    if intervals and not model.likelihood.supports_intervals:
        raise ValueError(
            f"this model's likelihood ({type(model.likelihood).__name__}) has no interval "
            "probabilities, so it cannot take interval evidence; give values instead"
        )
    for j, (rows, los, his) in intervals.items():
        f = schema.features[j]
        a = np.array([_bound(f, v, r, "lower") for r, v in zip(rows, los)], float)
        b = np.array([_bound(f, v, r, "upper") for r, v in zip(rows, his)], float)
        bad = ~(a < b)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"interval for feature {f.name!r} in row {rows[k]} is [{a[k]:g}, {b[k]:g}]: "
                "the lower bound must be below the upper bound"
            )
        if f.kind != "real":
            first = np.ceil(np.maximum(a, 0.0))
            empty = first > np.minimum(b, f.num_levels - 1)
            if empty.any():
                k = int(np.flatnonzero(empty)[0])
                raise ValueError(
                    f"interval [{a[k]:g}, {b[k]:g}] for {f.kind} feature {f.name!r} in row "
                    f"{rows[k]} contains none of its codes 0..{f.num_levels - 1} (bounds are "
                    "inclusive on discrete features)"
                )
        else:
            a, b = (a - f.loc) / f.scale, (b - f.loc) / f.scale
        lo[rows, j], hi[rows, j], mask[rows, j] = a, b, True
    return lo, hi, mask


def _raw_value(feature, v):
    """A raw value for display: a float, or a level name of a discrete feature."""
    v = float(v)
    if feature.kind != "real" and feature.levels and v == round(v) and 0 <= v < len(feature.levels):
        return feature.levels[int(v)]
    return v


def _scalar(feature, v):
    """One named evidence value as a float (a level name becomes its code)."""
    if isinstance(v, str) and feature.kind != "real":
        return float(_level_code(feature, v, ""))
    try:
        return float(v)
    except (TypeError, ValueError):
        levels = f" or one of its levels {list(feature.levels)}" if feature.levels else ""
        raise TypeError(
            f"evidence for feature {feature.name!r} must be a number{levels}, got "
            f"{type(v).__name__} {v!r}"
        ) from None


def _level_code(feature, v, where):
    if v in feature.levels:
        return feature.levels.index(v)
    accepted = (
        f"its level names {list(feature.levels)} or codes 0..{feature.num_levels - 1}"
        if feature.levels
        else f"integer codes 0..{feature.num_levels - 1} (it has no level names)"
    )
    raise ValueError(
        f"feature {feature.name!r} ({feature.kind}) has no level {v!r}{where}; accepted: {accepted}"
    )


def _as_float_array(X, schema):
    """Evidence as a float64 array; a cell that is not a number is named (row, feature).

    Numbers of any real dtype (bool, int, float32/64) are accepted; ``None``
    becomes NaN (unobserved); a string in a binary/categorical column is
    read as one of the feature's level names.
    """
    try:
        a = np.asarray(X)
    except ValueError as e:  # ragged nested lists
        raise ValueError(
            f"evidence must be a rectangular array [N, {len(schema)}]; numpy could not "
            f"build one: {e}"
        ) from None
    if a.dtype.kind in "biuf":
        return np.array(a, dtype=float, copy=True)
    if a.dtype.kind == "c":
        raise TypeError("evidence must be real numbers, got a complex array")
    if a.dtype.kind not in "OUS" or a.ndim not in (1, 2) or a.shape[-1] != len(schema):
        try:
            return np.array(a, dtype=float, copy=True)
        except (TypeError, ValueError):
            raise TypeError(
                f"evidence must be numbers (NaN for unobserved), got an array of dtype {a.dtype}"
            ) from None
    rows = a[None] if a.ndim == 1 else a
    out = np.empty(rows.shape, float)
    for (r, j), v in np.ndenumerate(rows):
        f = schema.features[j]
        if v is None:
            out[r, j] = np.nan
        elif isinstance(v, str) and f.kind != "real":
            out[r, j] = _level_code(f, v, f" (row {r})")
        else:
            try:
                out[r, j] = float(v)
            except (TypeError, ValueError):
                v = str(v) if isinstance(v, str) else v  # np.str_('x') -> 'x'
                levels = f" or one of its levels {list(f.levels)}" if f.levels else ""
                raise TypeError(
                    f"evidence for feature {f.name!r} in row {r} must be a number{levels} "
                    f"(NaN or None for unobserved), got {type(v).__name__} {v!r}"
                ) from None
    return out[0] if a.ndim == 1 else out


def _as_mask(mask, shape, what):
    """A boolean ``[N, D]`` mask from a bool or 0/1 array ``[N, D]`` or ``[D]``."""
    m = np.asarray(mask)
    N, D = shape
    if m.dtype != bool:
        ok = m.dtype.kind in "biuf" and np.isin(m, (0, 1)).all()
        if not ok:
            raise ValueError(
                f"the {what} mask must hold booleans (or 0/1), got dtype {m.dtype} "
                f"with values such as {m.ravel()[:4].tolist()}"
            )
        m = m.astype(bool)
    if m.shape == (D,):
        m = np.broadcast_to(m, (N, D))
    if m.shape != (N, D):
        raise ValueError(
            f"the {what} mask has shape {m.shape}; accepted: [{N}, {D}] (one entry per "
            f"query row and feature) or [{D}] (the same for every row)"
        )
    return np.array(m, bool)


def _align_frame(frame, schema):
    missing = [n for n in schema.names if n not in frame.columns]
    extra = [c for c in frame.columns if c not in schema.names]
    if missing or extra:
        raise ValueError(
            f"table columns do not match the model's features: missing {missing}, unknown "
            f"{extra}. Accepted: exactly the columns {schema.names} (any order; NaN marks "
            "an unobserved value): select them with frame[vae.feature_names] and add a "
            "missing one as a NaN column"
        )
    return frame[schema.names].to_numpy()


def _align_series(series, schema):
    """A pandas Series indexed by feature name -> one row."""
    return _align_frame(series.to_frame().T, schema)[0]


def _check_values(raw, obs, schema):
    bad = obs & ~np.isfinite(raw)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"observed value of feature {schema.names[c]!r} in row {r} is {raw[r, c]}; "
            "observed values must be finite (use NaN only for unobserved features)"
        )
    for j, f in enumerate(schema):
        if f.kind == "real":
            continue
        col = raw[obs[:, j], j]
        ok = (col == np.round(col)) & (col >= 0) & (col < f.num_levels)
        if not ok.all():
            r = np.flatnonzero(obs[:, j])[np.flatnonzero(~ok)[0]]
            allowed = "0 or 1" if f.kind == "binary" else f"integers 0..{f.num_levels - 1}"
            raise ValueError(
                f"feature {f.name!r} ({f.kind}) in row {r} has value {raw[r, j]}; "
                f"accepted values are {allowed}"
            )
