r"""Run several backends on identical queries and tabulate how they do.

:func:`compare` answers one batch of queries with every backend asked for and
returns a :class:`Comparison`: the :class:`~vaequery.Posterior` of each, a
tidy table with one row per backend and a per-query table. Every number comes
from the posterior's own methods (:meth:`~vaequery.Posterior.log_likelihood`,
:meth:`~vaequery.Posterior.nrmse`, :meth:`~vaequery.Posterior.diagnose`), so a
comparison reports exactly what a user would compute by hand.

Timing
    ``compile_s`` is the time JAX itself reports spent tracing, lowering and
    compiling during the backend's call (its ``/jax/core/compile/*`` monitoring
    events, the union of their time spans, so nested traces count once);
    ``answer_s`` is the rest of the call's wall time: running the compiled
    program and the Python around it. A program already compiled in this
    process (the same backend, model and batch shape) has ``compile_s`` near
    zero, as it would for a user asking a second time. ``queries_per_s`` is
    ``num_queries / answer_s``. Likelihoods and diagnostics are computed after
    the clock stops.

Likelihood
    ``log_lik`` is the mean over queries of ``log p(x_U | x_O)`` (IWAE with
    ``num_samples`` importance draws from the backend's fitted approximation;
    for ``"grid"`` the quadrature value, exact up to float32). When ``"grid"``
    is among the backends, ``log_lik_gap`` is the mean of ``grid - backend``
    per query: how many nats each backend loses against the exact answer.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from vaequery._batch import as_key
from vaequery.backends import _base
from vaequery.report.diagnostics import KHAT_THRESHOLD
from vaequery.report.plots import plot_comparison

#: JAX monitoring events whose time spans count as compile time.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
#: The backend ``log_lik_gap`` is measured against.
REFERENCE = "grid"


class CompileClock:
    """Context manager measuring the time JAX spends compiling inside it.

    Listens to JAX's monitoring time spans (:data:`COMPILE_EVENTS`) and adds
    up the union of the intervals, so a trace nested inside another (an inner
    ``jit`` traced while the outer one is) counts once.

    Attributes
    ----------
    seconds : float
        Compile time seen so far (valid after the ``with`` block).
    """

    def __init__(self):
        self._spans = []

    def _listen(self, event, start_time, end_time, **kwargs):
        if event in COMPILE_EVENTS:
            self._spans.append((start_time, end_time))

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_time_span_listener(self._listen)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_time_span_listener(self._listen)
        return False

    @property
    def seconds(self) -> float:
        """Length of the union of the recorded compile intervals."""
        total, end = 0.0, -np.inf
        for a, b in sorted(self._spans):
            if b <= end:
                continue
            total += b - max(a, end)
            end = b
        return total


def _labels(backends):
    """``[(label, backend name or instance)]``; an unknown name lists the registry."""
    if isinstance(backends, (str, _base.Backend)):
        backends = [backends]
    backends = list(backends)
    if not backends:
        raise ValueError(f"backends is empty; name at least one of {_base.available()}")
    out = []
    for b in backends:
        if isinstance(b, _base.Backend):
            out.append((b.name, b))
        elif isinstance(b, str):
            if b not in _base._REGISTRY:
                raise ValueError(f"unknown backend {b!r}; available: {_base.available()}")
            out.append((b, b))
        else:
            raise TypeError(
                f"backends must be names or backend instances, got {type(b).__name__} {b!r}; "
                f"available names: {_base.available()}"
            )
    seen = [label for label, _ in out]
    dup = sorted({x for x in seen if seen.count(x) > 1})
    if dup:
        raise ValueError(f"backend(s) {dup} given twice; each backend runs once per comparison")
    return out


def _options(labels, per_backend_options):
    names = [label for label, _ in labels]
    unknown = sorted(set(per_backend_options) - set(names))
    if unknown:
        raise TypeError(
            f"options given for {unknown}, which {'is' if len(unknown) == 1 else 'are'} not in "
            f"backends={names}; pass options as compare(..., nuts={{'num_samples': 200}})"
        )
    out = {}
    for label, spec in labels:
        opts = per_backend_options.get(label, {}) or {}
        if not isinstance(opts, dict):
            raise TypeError(
                f"options for {label!r} must be a dict of hyper-parameters, got "
                f"{type(opts).__name__} {opts!r}"
            )
        if opts and not isinstance(spec, str):
            raise TypeError(
                f"options for {label!r} go to the constructor; it is already an instance"
            )
        out[label] = dict(opts)
    return out


def compare(
    model,
    X_query,
    X_true=None,
    backends=("gaussian",),
    key=0,
    *,
    num_draws=None,
    chunk_size=None,
    num_samples=1000,
    diagnostics=True,
    progress=False,
    **per_backend_options,
):
    """Answer the same queries with several backends and tabulate the results.

    Parameters
    ----------
    model : vaequery.VAE
        The model queried (any model with ``given``).
    X_query : array ``[N, D]``, MaskedTable or Query
        Evidence with NaN where unobserved (every unobserved feature is a
        target), a :class:`~vaequery.datasets.MaskedTable` (its target mask
        is used), or a ready :class:`~vaequery.Query`.
    X_true : array ``[N, D]``, optional
        True values in raw units, at least at every target. Without it the
        likelihood and NRMSE columns are left out.
    backends : sequence of str or Backend
        Registry names (see :func:`vaequery.backends.available`) or
        instances; each runs once.
    key : int or PRNG key
        The same key for every backend (the same per-row keys).
    num_draws : int, optional
        Draws per query (default: each backend's own).
    chunk_size : int, optional
        Rows processed together (inference and likelihoods).
    num_samples : int
        Importance draws per query for the IWAE likelihood and the PSIS
        diagnostics (QAVI's tables use 10,000).
    diagnostics : bool
        Run :meth:`~vaequery.Posterior.diagnose` (PSIS k-hat; R-hat and ESS
        for MCMC). Costs another ``num_samples`` draws per query.
    progress : bool
        Show a progress bar over backends (tqdm).
    **per_backend_options : dict
        Hyper-parameters per backend name, e.g.
        ``nuts={"num_warmup": 200}, gaussian={"num_steps": 500}``.

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        An unknown backend name (the message lists the available ones).
    TypeError
        Options for a backend that is not compared.

    Examples
    --------
    >>> import numpy as np, vaequery as vq
    >>> oracle = vq.testing.LinearGaussian.random(0, num_features=4, latent_dim=2)
    >>> _, X_true = oracle.sample(0, 8)
    >>> X = X_true.copy(); X[:, 2:] = np.nan
    >>> c = vq.compare(oracle.vae(), X, X_true, backends=["grid", "gaussian"],
    ...                gaussian={"num_steps": 50}, diagnostics=False)
    >>> list(c.table.index)
    ['grid', 'gaussian']
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from vaequery.query import Query

    labels = _labels(backends)
    options = _options(labels, per_backend_options)
    query = X_query if isinstance(X_query, Query) else model.given(X_query)
    key = as_key(key)
    import jax

    k_ll, k_diag = jax.random.fold_in(key, 101), jax.random.fold_in(key, 102)
    N = query.num_queries
    posteriors, rows, per_query = {}, [], []
    bar = tqdm(labels, disable=not progress, desc="compare")
    for label, spec in bar:
        bar.set_postfix_str(label)
        opts = options[label]
        with CompileClock() as clock:
            t0 = time.perf_counter()
            post = query.infer(spec, key, num_draws=num_draws, chunk_size=chunk_size, **opts)
            wall = time.perf_counter() - t0
        compile_s = min(clock.seconds, wall)
        answer_s = wall - compile_s
        posteriors[label] = post
        pq = {"backend": label, "query": np.arange(N), "failed": post.failed}
        if X_true is not None:
            pq["log_lik"] = post.log_likelihood(
                X_true, num_samples=num_samples, key=k_ll, chunk_size=chunk_size
            )
            pq["nrmse_min"] = post.nrmse(X_true, "min")
            pq["nrmse_mean"] = post.nrmse(X_true, "mean")
        if diagnostics:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                diag = post.diagnose(num_samples=num_samples, key=k_diag, warn=False)
            for col in diag.columns:
                pq[col] = diag[col].to_numpy()
        per_query.append(pd.DataFrame(pq))
        row = {
            "family": post.backend.family,
            "compile_s": compile_s,
            "answer_s": answer_s,
            "queries_per_s": N / answer_s if answer_s > 0 else np.inf,
            "failed": int(post.failed.sum()),
        }
        if X_true is not None:
            row["log_lik"] = float(np.nanmean(pq["log_lik"]))
            row["nrmse_min"] = float(np.nanmean(pq["nrmse_min"]))
            row["nrmse_mean"] = float(np.nanmean(pq["nrmse_mean"]))
        if diagnostics:
            khat = diag["khat"] if "khat" in diag else diag["proposal_khat"]
            row["khat_gt_0.7"] = float(np.mean(khat.to_numpy() > KHAT_THRESHOLD))
            if post.backend.family == "mcmc":
                row["r_hat_max"] = float(diag["r_hat"].max())
                row["ess_bulk_min"] = float(diag["ess_bulk"].min())
        rows.append((label, row))
    table = pd.DataFrame(
        [r for _, r in rows], index=pd.Index([lb for lb, _ in rows], name="backend")
    )
    per_query = pd.concat(per_query, ignore_index=True).set_index(["backend", "query"])
    if X_true is not None and REFERENCE in posteriors:
        ref = per_query.loc[REFERENCE, "log_lik"].to_numpy()
        table["log_lik_gap"] = [
            float(np.nanmean(ref - per_query.loc[lb, "log_lik"].to_numpy())) for lb in table.index
        ]
    order = [
        "family",
        "log_lik",
        "log_lik_gap",
        "nrmse_min",
        "nrmse_mean",
        "compile_s",
        "answer_s",
        "queries_per_s",
        "khat_gt_0.7",
        "r_hat_max",
        "ess_bulk_min",
        "failed",
    ]
    table = table[[c for c in order if c in table.columns]]
    return Comparison(posteriors, table, per_query, query, X_true)


class Comparison:
    """Result of :func:`compare`: posteriors, a summary table and per-query values.

    Attributes
    ----------
    posteriors : dict of str to Posterior
        One per backend, in the order given.
    table : pandas.DataFrame
        One row per backend (index ``backend``). Columns: ``family``;
        with ``X_true``: ``log_lik`` (mean ``log p(x_U | x_O)``, model
        units), ``log_lik_gap`` (with ``"grid"``: mean nats below it),
        ``nrmse_min`` (min over draws, QAVI) and ``nrmse_mean`` (of the
        mean imputation, VAEAC); ``compile_s``, ``answer_s``,
        ``queries_per_s`` (module docstring); with diagnostics:
        ``khat_gt_0.7`` (share of queries whose PSIS k-hat exceeds 0.7: of
        the fitted approximation for VI, of the Gaussian proposal of the
        likelihood estimate for MCMC), MCMC ``r_hat_max`` and
        ``ess_bulk_min`` (worst query); ``failed`` (rows with non-finite
        output).
    per_query : pandas.DataFrame
        Index ``(backend, query)``: ``failed``, ``log_lik``, ``nrmse_min``,
        ``nrmse_mean`` and the columns of
        :meth:`~vaequery.Posterior.diagnose`.
    query : vaequery.Query
    X_true : array or None
    """

    def __init__(self, posteriors, table, per_query, query, X_true=None):
        self.posteriors = posteriors
        self.table = table
        self.per_query = per_query
        self.query = query
        self.X_true = X_true

    def __repr__(self) -> str:
        return (
            f"Comparison(backends={list(self.posteriors)}, queries={self.query.num_queries})\n"
            + self.table.to_string(float_format=lambda v: f"{v:.4g}")
        )

    def to_markdown(self, digits=4) -> str:
        """The summary table as a markdown table.

        Parameters
        ----------
        digits : int
            Significant digits of floats.

        Returns
        -------
        str
        """
        t = self.table.reset_index()
        cols = list(t.columns)

        def fmt(v):
            if isinstance(v, (float, np.floating)) and np.isnan(v):
                return ""
            if isinstance(v, (float, np.floating)):
                return f"{v:.{digits}g}"
            return str(v)

        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in t.itertuples(index=False)]
        return "\n".join(lines) + "\n"

    def plot(self, kind="summary", query=0, path=None, max_features=6):
        """Plot the comparison (drawn by :func:`vaequery.report.plots.plot_comparison`).

        Parameters
        ----------
        kind : {"summary", "forest"}
            ``"summary"``: the distribution over queries of each backend's
            ``log p(x_U | x_O)`` (ArviZ KDEs; needs ``X_true``), and for
            ``query`` the marginal densities of its targets overlaid across
            backends (:func:`arviz.plot_density`: KDE with the 94 % HDI), the
            true value marked by a dashed line when known. ``"forest"``:
            :func:`arviz.plot_forest` of the targets of ``query``, one
            InferenceData per backend, in standardised units.
        query : int
            Which row's targets to show.
        path : str or Path, optional
            Save the figure there.
        max_features : int
            At most this many targets are drawn (the first ones).

        Returns
        -------
        matplotlib.figure.Figure
        """
        return plot_comparison(self, kind=kind, query=query, path=path, max_features=max_features)

    def save(self, out, plots=True, query=0):
        """Write the tables (markdown + CSV) and the plots into a folder.

        Parameters
        ----------
        out : str or Path
            Folder (created if missing).
        plots : bool
            Also write ``compare.png`` and ``compare_forest.png``.
        query : int
            The query whose targets the plots show.

        Returns
        -------
        dict of str to Path
            ``markdown``, ``csv``, ``per_query_csv`` (and ``plot``,
            ``forest``).
        """
        import matplotlib.pyplot as plt

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": out / "compare.md",
            "csv": out / "compare.csv",
            "per_query_csv": out / "compare_per_query.csv",
        }
        paths["markdown"].write_text(self.to_markdown())
        self.table.to_csv(paths["csv"])
        self.per_query.to_csv(paths["per_query_csv"])
        if plots:
            for name, kind in (("plot", "summary"), ("forest", "forest")):
                p = out / ("compare.png" if kind == "summary" else "compare_forest.png")
                plt.close(self.plot(kind, query=query, path=p))
                paths[name] = p
        return paths
