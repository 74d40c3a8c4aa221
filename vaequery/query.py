"""The query language: ``model.given(...).predict(...)`` -> :class:`Query`.

A query is a batch of ``N`` rows over the model's ``D`` features, with an
``observed`` mask, a ``target`` mask and the observed values. All validation
happens here, once, so that nothing downstream fails deep inside JAX.
Features that are neither observed nor targets are marginalised out exactly.
"""

from __future__ import annotations

import numpy as np

from vaequery.model import Target


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
    single : bool
        True if the user gave one row (results are still batched ``[1, ...]``).
    """

    def __init__(self, model, x, observed, target, single=False):
        import jax

        self.model = model
        # float32, or float64 under jax_enable_x64: evidence keeps the precision JAX computes in
        self.x = np.asarray(x, jax.dtypes.canonicalize_dtype(np.float64))
        self.observed_mask = np.asarray(observed, bool)
        self.target_mask = np.asarray(target, bool)
        self.single = single

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
        if X is None:
            raw = np.full((1, D), np.nan)
            for name, v in values.items():
                j = schema.index(name)
                raw[0, j] = _scalar(schema.features[j], v)
            single = True
            if observed is not None:
                raise TypeError("observed= needs an array X")
        else:
            if hasattr(X, "values") and hasattr(X, "columns"):  # pandas-like
                X = _align_frame(X, schema)
            elif hasattr(X, "index") and hasattr(X, "to_dict") and hasattr(X, "values"):
                X = _align_series(X, schema)
            raw = _as_float_array(getattr(X, "X", X), schema)
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
        return cls(model, x, obs, ~obs, single=single)

    def predict(self, *names, target=None):
        """Choose the target features.

        Parameters
        ----------
        *names : str
            Feature names to predict in every row. Default (no names and no
            ``target``): every unobserved feature.
        target : bool array ``[N, D]`` or ``[D]``, optional
            Explicit target mask instead of names.

        Returns
        -------
        Query
            A new query; this one is unchanged.
        """
        schema = self.model.schema
        N, D = self.observed_mask.shape
        if names and target is not None:
            raise TypeError("give target features by name or as a mask, not both")
        if target is not None:
            tgt = _as_mask(target, (N, D), "target")
        elif names:
            tgt = np.zeros((N, D), bool)
            for n in names:
                tgt[:, schema.index(n)] = True
        else:
            tgt = ~self.observed_mask
        both = tgt & self.observed_mask
        if both.any():
            r, c = np.argwhere(both)[0]
            raise ValueError(
                f"feature {schema.names[c]!r} is both observed and a target in row "
                f"{r} ({int(both.sum())} such entries); a target must be unobserved"
            )
        return Query(self.model, self.x, self.observed_mask, tgt.copy(), self.single)

    # --------------------------------------------------------------- inspect
    @property
    def num_queries(self) -> int:
        """Number of rows ``N``."""
        return self.x.shape[0]

    def __len__(self) -> int:
        return self.num_queries

    def __repr__(self) -> str:
        names = self.model.schema.names
        if self.num_queries == 1:
            o = [names[j] for j in np.flatnonzero(self.observed_mask[0])]
            t = [names[j] for j in np.flatnonzero(self.target_mask[0])]
            return f"Query(given={o}, predict={t})"
        return (
            f"Query({self.num_queries} rows, {self.observed_mask.mean():.0%} observed, "
            f"{self.target_mask.mean():.0%} targets)"
        )

    @property
    def data(self) -> dict:
        """``{"x": [N, D], "observed": [N, D]}`` arrays a backend consumes."""
        return {"x": self.x, "observed": self.observed_mask}

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

        return self.model._numpyro_model, {
            "x": jnp.asarray(self.x[row]),
            "observed": jnp.asarray(self.observed_mask[row]),
        }

    def target(self) -> Target:
        """The :class:`vaequery.model.Target` backends consume (all rows)."""
        import jax.numpy as jnp

        from vaequery.model import DecoderSampler

        logdensity_fn, logprior_fn = self.model._target_fns
        return Target(
            logdensity_fn=logdensity_fn,
            logprior_fn=logprior_fn,
            latent_dim=self.model.latent_dim,
            decode_fn=self.model.decode_fn,
            encode_fn=self.model.encode_fn,
            data={k: jnp.asarray(v) for k, v in self.data.items()},
            sample_x_fn=DecoderSampler(self.model.decode_fn, self.model.likelihood),
            numpyro_model=self.model._numpyro_model,
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
            Rows processed together; bounds memory for large batches.
        on_error : {"warn", "raise", "ignore"}
            What to do when some rows yield a non-finite loss or draws. Rows
            are independent, so the others are unaffected: by default they are
            returned with the failing rows flagged in ``Posterior.failed`` and an
            :class:`~vaequery.fit.InferenceWarning`; ``"raise"`` raises
            :class:`vaequery.InferenceError` instead.
        init : str or Posterior, optional
            Variational backends only: where each query starts (``"auto"``,
            ``"prior"``, ``"encoder"``, ``"posterior_matching"``,
            ``"decoder_only"``, or a previous Posterior of the same rows).
        **hyperparameters
            Passed to the backend's constructor (with a name).

        Returns
        -------
        vaequery.Posterior
        """
        from vaequery.fit import run

        return run(
            self,
            backend,
            key,
            num_draws=num_draws,
            chunk_size=chunk_size,
            on_error=on_error,
            **hyperparameters,
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

        return infer_stream(self, backend, key, **kwargs)


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
