"""Plots of posteriors and comparisons, drawn with ArviZ.

Marginals are ArviZ kernel density estimates with the highest-density
interval (:func:`arviz.plot_density`), the true value dashed when known;
traces are :func:`arviz.plot_trace`; comparisons across backends overlay the
same densities (:func:`arviz.plot_density` with one dataset per backend) or
stack HDIs (:func:`arviz.plot_forest`, one InferenceData per backend).
:meth:`vaequery.Posterior.plot` and :meth:`vaequery.Comparison.plot` both
draw through this module.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from vaequery.report.arviz import arviz, latent_inference_data, targets_inference_data
from vaequery.report.metrics import true_model_units

#: Mass of the highest-density intervals drawn (ArviZ's default).
HDI_PROB = 0.94


def _pyplot(path):
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def _quiet():
    """Silence arviz 0.23's matplotlib 3.11 deprecations and its KDE user warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _finish(fig, title, path):
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _panels(plt, n, ncol, width=3.4, height=2.7):
    ncol = min(ncol, n)
    nrow = int(np.ceil(n / ncol))
    fig, grid = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    flat = list(grid.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def check_query(query, num_queries):
    """``IndexError`` unless ``-num_queries <= query < num_queries``.

    Parameters
    ----------
    query : int
    num_queries : int
    """
    if not -num_queries <= query < num_queries:
        raise IndexError(f"query {query} out of range for {num_queries} queries")


def target_columns(q, query):
    """Names and indices of the target features of row ``query`` of a query.

    Parameters
    ----------
    q : vaequery.Query
    query : int

    Returns
    -------
    (list of str, ndarray of int)

    Raises
    ------
    IndexError, ValueError
        A row out of range, or one without targets.
    """
    check_query(query, q.num_queries)
    cols = np.flatnonzero(q.target_mask[query])
    if cols.size == 0:
        raise ValueError(f"query {query} has no target features to plot")
    return [q.model.schema.names[j] for j in cols], cols


def _constant(values):
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    return values.size < 2 or np.ptp(values) == 0


def marginals(axes, datasets, labels, names, truth=None, hdi_prob=HDI_PROB):
    """Overlay KDE + HDI marginals of ``names`` from each dataset, one axis per name.

    Parameters
    ----------
    axes : sequence of matplotlib Axes
        One per name.
    datasets : list of arviz.InferenceData
        Each with the variables ``names`` in its posterior group.
    labels : list of str or None
        Legend labels (``None``: a single unlabelled dataset).
    names : list of str
    truth : sequence of float, optional
        The true value of each name, drawn dashed where finite.
    hdi_prob : float
    """
    az = arviz()
    # a variable whose draws are all equal has no density: mark its value instead
    dens = [
        i
        for i, n in enumerate(names)
        if not all(_constant(d.posterior[n].values) for d in datasets)
    ]
    if dens:
        az.plot_density(
            datasets,
            data_labels=labels,
            var_names=[names[i] for i in dens],
            hdi_prob=hdi_prob,
            shade=0.1,
            ax=np.array([axes[i] for i in dens]),
        )
    for i, (ax, name) in enumerate(zip(axes, names)):
        if i not in dens:
            for k, d in enumerate(datasets):
                v = np.ravel(d.posterior[name].values)
                ax.axvline(v[0], color=f"C{k}", label=None if labels is None else labels[k])
        ax.set_title(name, fontsize=9)
        ax.set_yticks([])
        if truth is not None and np.isfinite(truth[i]):
            ax.axvline(truth[i], color="k", ls="--", lw=1, label="true")


def plot_posterior(post, path=None, query=0, kind="marginal", X_true=None, hdi_prob=HDI_PROB):
    """One query's posterior; see :meth:`vaequery.Posterior.plot`.

    Parameters
    ----------
    post : vaequery.Posterior
    path : str or Path, optional
    query : int
    kind : {"marginal", "trace"}
    X_true : array ``[N, D]``, optional
        True values (raw units) to mark.
    hdi_prob : float

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot(path)
    check_query(query, post.num_queries)
    mcmc = post.backend.family == "mcmc"
    if kind == "trace":
        if not mcmc:
            raise ValueError(
                f"kind='trace' needs an MCMC backend; {post.backend.name!r} is "
                "variational (its draws are independent): use kind='marginal'"
            )
        with _quiet():
            axes = arviz().plot_trace(latent_inference_data(post, query), compact=False)
        fig = np.ravel(axes)[0].figure
        return _finish(fig, f"{post.backend.name}: trace of z, query {query}", path)
    if kind != "marginal":
        raise ValueError(f"kind must be 'marginal' or 'trace', got {kind!r}")
    cols = np.flatnonzero(post.query.target_mask[query])
    idata = targets_inference_data(post, query, cols)  # features, then derived targets
    names = list(idata.posterior.data_vars)
    if not names:
        raise ValueError(f"query {query} has no target features to plot")
    truth = None
    if X_true is not None:
        true_model_units(post.query, X_true)  # the checks: shape, a value at every target
        raw = np.asarray(getattr(X_true, "X", X_true), float)
        truth = np.full(len(names), np.nan)
        truth[: cols.size] = (raw[None] if raw.ndim == 1 else raw)[query, cols]
    fig, axes = _panels(plt, len(names), 4, 3.2, 2.6)
    with _quiet():
        marginals(axes, [idata], None, names, truth, hdi_prob)
        if mcmc and post.z.shape[1] > 1:
            # one outline per chain over the pooled density: chains that disagree show
            az = arviz()
            for ax, name in zip(axes, names):
                draws = idata.posterior[name].values  # [C, S]
                if _constant(draws):
                    continue
                for c in range(draws.shape[0]):
                    az.plot_kde(
                        draws[c],
                        ax=ax,
                        plot_kwargs={"color": f"C{c + 1}", "linewidth": 0.7, "alpha": 0.8},
                    )
    title = f"{post.backend.name}: posterior predictive, query {query} ({hdi_prob:.0%} HDI)"
    return _finish(fig, title, path)


def plot_comparison(comp, kind="summary", query=0, path=None, max_features=6, hdi_prob=HDI_PROB):
    """Plot a :class:`~vaequery.Comparison`; see :meth:`vaequery.Comparison.plot`.

    Parameters
    ----------
    comp : vaequery.Comparison
    kind : {"summary", "forest"}
    query : int
    path : str or Path, optional
    max_features : int
    hdi_prob : float

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot(path)
    az = arviz()
    if kind not in ("summary", "forest"):
        raise ValueError(f"kind must be 'summary' or 'forest', got {kind!r}")
    names, cols = target_columns(comp.query, query)
    names, cols = names[:max_features], cols[:max_features]
    labels = list(comp.posteriors)
    truth = None
    if comp.X_true is not None:
        raw = np.asarray(getattr(comp.X_true, "X", comp.X_true), float)
        truth = (raw[None] if raw.ndim == 1 else raw)[query]
    forest = kind == "forest"
    datasets = [
        targets_inference_data(comp.posteriors[label], query, cols, standardised=forest)
        for label in labels
    ]
    with _quiet():
        if forest:
            # model (standardised) units, so that the targets share one axis
            axes = az.plot_forest(
                datasets, model_names=labels, var_names=names, combined=True, hdi_prob=hdi_prob
            )
            ax = np.ravel(axes)[0]
            fig = ax.figure
            if truth is not None:
                ax.set_title("")
                std = comp.query.model.schema.standardise(truth)[cols]
                vals = ", ".join(f"{n}={v:.2f}" for n, v in zip(names, std))
                ax.set_xlabel(f"standardised units; true: {vals}", fontsize=8)
            title = f"targets of query {query}: {hdi_prob:.0%} HDI per backend (standardised)"
            return _finish(fig, title, path)
        has_ll = "log_lik" in comp.per_query.columns
        fig, axes = _panels(plt, len(names) + int(has_ll), 3, 3.6, 2.8)
        if has_ll:
            ax = axes.pop(0)
            for i, label in enumerate(labels):
                ll = comp.per_query.loc[label, "log_lik"].to_numpy()
                ll = ll[np.isfinite(ll)]
                if ll.size > 1 and np.ptp(ll) > 0:
                    az.plot_kde(ll, ax=ax, label=label, plot_kwargs={"color": f"C{i}"})
                elif ll.size:
                    ax.axvline(ll[0], color=f"C{i}", label=label)
            ax.set_title("log p(x_U | x_O) per query", fontsize=9)
            ax.set_yticks([])
            ax.legend(fontsize=7)
        marginals(axes, datasets, labels, names, None if truth is None else truth[cols], hdi_prob)
        return _finish(fig, f"backends compared; targets of query {query}", path)
