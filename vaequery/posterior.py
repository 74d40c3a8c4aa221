"""The result of a query: draws, imputations and loss trace, with thin readers.

:class:`Posterior` holds the answer of one backend to a batch of queries and
how to save it. What reads it lives in :mod:`vaequery.report`: metrics
(:mod:`~vaequery.report.metrics`), ArviZ conversion
(:mod:`~vaequery.report.arviz`), diagnostics and importance resampling
(:mod:`~vaequery.report.diagnostics`), plots (:mod:`~vaequery.report.plots`)
and tidy tables (:mod:`~vaequery.report.tables`); the methods here delegate.
"""

from __future__ import annotations

import warnings

import numpy as np

from vaequery import _format
from vaequery.report import arviz as _arviz
from vaequery.report import diagnostics as _diagnostics
from vaequery.report import imputation as _imputation
from vaequery.report import metrics as _metrics
from vaequery.report import plots as _plots
from vaequery.report import tables as _tables
from vaequery.report.diagnostics import KHAT_THRESHOLD, RHAT_THRESHOLD
from vaequery.report.metrics import hdi

__all__ = ["KHAT_THRESHOLD", "RHAT_THRESHOLD", "Posterior"]


class Posterior:
    """Answer to a batch of queries from one backend.

    Attributes
    ----------
    z : ndarray ``[N, S, d]`` (VI) or ``[N, chains, S, d]`` (MCMC)
        Posterior draws of the latent code.
    x : ndarray, ``z``'s leading shape + ``[D]``
        Imputations in raw units: the decoder's mean ``E[x | z]`` for each draw,
        with observed entries copied through from the evidence.
    loss : ndarray ``[N, T]``
        Negative ELBO trace (VI); shape ``[N, 0]`` for MCMC.
    info : dict
        Backend diagnostics, leading axis ``N``.
    state : pytree
        Fitted per-row backend state (the IWAE proposal).
    query : vaequery.Query
    backend : vaequery.backends.Backend
    failed : bool ndarray ``[N]``
        Rows whose loss or draws are not finite (their arrays hold NaN); the
        other rows are unaffected. MCMC draws at a non-finite log-density
        (chains that never left an impossible start) are NaN, so they count
        (:func:`vaequery.backends.hmc.at_finite_density`). ``converged`` is
        its negation.
    """

    def __init__(self, query, backend, state, z, x_model, loss, info, key, failed=None):
        self.query = query
        self.backend = backend
        self.state = state
        self.z = z
        self.loss = loss
        n = z.shape[0]
        self.failed = np.zeros(n, bool) if failed is None else np.asarray(failed, bool)
        self.info = {k: np.asarray(v) for k, v in info.items()}
        self._key = key
        self._pointwise_ll = None
        # {name: [N, (chains,) S]}, set by Query.infer for derived targets (Query.predict)
        self.derived = {}
        schema = query.model.schema
        obs = query.observed_mask
        shape = x_model.shape
        extra = (1,) * (len(shape) - 2)
        obs_b = obs.reshape(obs.shape[:1] + extra + obs.shape[1:])
        xq = query.x.reshape(obs_b.shape)
        self._x_model = np.where(obs_b, xq, x_model)  # standardised units
        self.x = schema.unstandardise(self._x_model)

    # ------------------------------------------------------ persistence
    def save(self, path, include_model=None):
        """Write this result to one file; read it back with :func:`vaequery.load_posterior`.

        The file is vaequery's own format (:func:`vaequery.io.save_posterior`):
        JSON and raw arrays, never pickle, so loading runs no code from it.

        Parameters
        ----------
        path : str or Path
        include_model : bool, optional
            Store the model too (default: when it can be saved, i.e. not a
            :func:`vaequery.from_decoder` model; then pass ``model=`` on load).

        Returns
        -------
        Path
        """
        return _format.save_posterior(self, path, include_model=include_model)

    def __reduce__(self):
        # pickle through the same format (model included), see VAE.__reduce__
        try:
            files = _format.posterior_files(self, include_model=True)
        except _format._UnsavableModel as e:
            raise _format.pickle_refusal(e, "Posterior") from None
        return (_format.posterior_from_files, (files, None, "pickled Posterior"))

    # ----------------------------------------------------------- shapes
    @property
    def converged(self):
        """``bool [N]``: rows answered with finite losses and draws (``~failed``)."""
        return ~self.failed

    @property
    def num_queries(self) -> int:
        """Number of query rows ``N``."""
        return self.z.shape[0]

    @property
    def z_sites(self) -> dict:
        """The latent draws by prior site: ``{name: [N, (chains,) S, *shape]}``.

        For a model with a custom latent prior (``from_decoder(..., prior=)``)
        :attr:`z` split back into the prior's sites (the flat vector holds them
        in sampling order, see :class:`vaequery.model.LatentPrior`), each in
        its own units: a constrained site (a positive scale, say) is mapped
        back from the unconstrained space :attr:`z` lives in. Otherwise
        ``{"z": z}``.
        """
        prior = getattr(self.query.model, "prior", None)
        z = np.asarray(self.z)
        return {"z": z} if prior is None else prior.sites(z)

    def _flat(self, a):
        """``[N, (chains,) S, ...]`` -> ``[N, chains*S, ...]``."""
        if self.backend.family == "mcmc":
            return a.reshape((a.shape[0], -1) + a.shape[3:])
        return a

    def __repr__(self) -> str:
        return (
            f"Posterior(backend={self.backend.name!r}, queries={self.num_queries}, "
            f"z{list(self.z.shape)})"
        )

    # ---------------------------------------------------------- metrics
    def _true_model_units(self, X_true):
        return _metrics.true_model_units(self.query, X_true)

    def log_likelihood(self, X_true, num_samples=1000, key=None, chunk_size=None):
        """IWAE estimate of ``log p(x_U | x_O)`` per query.

        Parameters
        ----------
        X_true : array ``[N, D]``
            True values (raw units) for at least every target entry.
        num_samples : int
            Importance samples from the backend's fitted approximation
            (QAVI reports 10,000).
        key : int or PRNG key, optional
            Default: derived from the inference key.
        chunk_size : int, optional
            Rows evaluated together.

        Returns
        -------
        ndarray ``[N]``
            In model (standardised) units; see :mod:`vaequery.report.metrics`.
        """
        return _metrics.log_likelihood(self, X_true, num_samples, key, chunk_size)

    def nrmse(self, X_true, reduce="min"):
        """Normalised RMSE of the imputations over each row's targets.

        Parameters
        ----------
        X_true : array ``[N, D]``
            True values in raw units.
        reduce : {"min", "mean"}
            Minimum over draws (QAVI) or error of the mean imputation (VAEAC).

        Returns
        -------
        ndarray ``[N]``
        """
        return _metrics.posterior_nrmse(self, X_true, reduce)

    # ------------------------------------------------------- reporting
    def summary(self, prob=0.94):
        """Mean, sd and HDI of every target feature of every query (raw units).

        A binary or categorical target gets one row per level, named
        ``"feature=level"``, whose ``mean`` is the level's posterior-predictive
        probability (the share of draws ``x ~ p(x | z)`` at that level) and
        whose sd and HDI are NaN.

        Parameters
        ----------
        prob : float
            HDI mass (ArviZ's default 0.94).

        Returns
        -------
        pandas.DataFrame
            Indexed by feature (one query) or by (query, feature).
        """
        import pandas as pd

        names = self.query.model.schema.names
        x = self._flat(self.x)
        lo, hi = hdi(np.moveaxis(x, 1, -1), prob)
        mean, sd = x.mean(1), x.std(1, ddof=1) if x.shape[1] > 1 else np.zeros_like(x[:, 0])
        pct = (1 - prob) / 2 * 100
        rows = []
        schema = self.query.model.schema
        discrete = [j for j, f in enumerate(schema) if f.kind != "real"]
        probs = _imputation.level_probabilities(self) if discrete else {}
        nan = float("nan")
        for i, j in np.argwhere(self.query.target_mask):
            f = schema.features[j]
            if f.kind == "real":
                rows.append((i, names[j], mean[i, j], sd[i, j], lo[i, j], hi[i, j]))
                continue
            # one row per level: its predictive probability (no sd or interval)
            labels = f.levels or tuple(str(k) for k in range(f.num_levels))
            p = probs[f.name][i]
            rows += [(i, f"{names[j]}={lv}", p[k], nan, nan, nan) for k, lv in enumerate(labels)]
        for name, v in self.derived.items():  # derived targets (Query.predict), every row
            v = self._flat(v)
            dlo, dhi = hdi(v, prob)
            dsd = v.std(1, ddof=1) if v.shape[1] > 1 else np.zeros(len(v))
            rows += [(i, name, v[i].mean(), dsd[i], dlo[i], dhi[i]) for i in range(len(v))]
        df = pd.DataFrame(
            rows,
            columns=["query", "feature", "mean", "sd", f"hdi_{pct:g}%", f"hdi_{100 - pct:g}%"],
        )
        if self.num_queries == 1:
            return df.drop(columns="query").set_index("feature")
        return df.set_index(["query", "feature"])

    def impute(self, m=None, kind="mean", key=None, as_frame=False):
        """The query's table completed: observed values kept, the rest imputed.

        Parameters
        ----------
        m : int, optional
            ``None``: one table, each unobserved value replaced by a point
            summary of its posterior predictive (``kind``). An int: ``m``
            completed tables for multiple imputation, table ``i`` filled with
            one posterior-predictive draw ``x ~ p(x | z_i)`` per row (decoder
            noise included; ``z_i`` spread evenly over the draws), to be
            analysed separately and pooled with :func:`vaequery.rubin`.
            Needs ``m`` <= the number of draws per query.
        kind : {"mean", "median"}
            Point summary of a real feature: the predictive mean, or the
            median of predictive draws (for heavy tails). Binary and
            categorical features take the most frequent predictive value.
        key : int or jax PRNG key, optional
            For the predictive draws (default: from the posterior's key).
        as_frame : bool
            Return pandas DataFrames with the feature names as columns.

        Returns
        -------
        ndarray ``[N, D]`` or ``[m, N, D]`` (or DataFrame / list of them)
            Raw units; every feature, not only the targets. Categorical
            features are level codes.

        Raises
        ------
        ValueError
            For rows with interval evidence (draws from ``p(x | z)`` would
            ignore it), or ``m`` larger than the draws.

        Examples
        --------
        >>> import numpy as np, vaequery as vq
        >>> oracle = vq.testing.LinearGaussian.random(0, num_features=3, latent_dim=1)
        >>> post = oracle.vae().given(np.array([[0.5, np.nan, 1.0]])).infer(
        ...     "gaussian", num_draws=20, num_steps=20)
        >>> post.impute().shape, post.impute(m=5).shape
        ((1, 3), (5, 1, 3))
        """
        return _imputation.impute(self, m=m, kind=kind, key=key, as_frame=as_frame)

    def to_pandas(self, latent=False):
        """The draws as a tidy table: one row per (query, draw).

        Parameters
        ----------
        latent : bool
            Add the latent code as columns ``z_0 .. z_{d-1}``.

        Returns
        -------
        pandas.DataFrame
            Columns ``query``, (MCMC: ``chain``,) ``draw``, then one column
            per feature that is a target of some row, named after it, in raw
            units (the imputations :attr:`x`; NaN in rows where that feature
            is not a target), then the derived targets of
            :meth:`vaequery.Query.predict`, then (``latent=True``) ``z_0``,
            ``z_1``, ... ``draw`` counts within its chain.

        Examples
        --------
        >>> import numpy as np, vaequery as vq
        >>> oracle = vq.testing.LinearGaussian.random(0, num_features=3, latent_dim=1)
        >>> post = oracle.vae().given(np.array([[0.5, np.nan, np.nan]])).infer(
        ...     "gaussian", num_draws=4, num_steps=20)
        >>> list(post.to_pandas().columns)
        ['query', 'draw', 'x1', 'x2']
        """
        return _tables.tidy_draws(self, latent=latent)

    def _cdq(self, a):
        """``[N, (C,) S, ...]`` -> ``[C, S, N, ...]`` (ArviZ wants chain, draw first)."""
        return _arviz.chain_draw_query(a, self.backend.family == "mcmc")

    def pointwise_log_likelihood(self):
        """``log p(x_O | z)`` of every draw, shape ``z.shape[:-1]``.

        The log-likelihood of the evidence (ArviZ's ``log_likelihood`` group),
        soft-evidence factors included; 0 for rows without evidence.
        """
        if self._pointwise_ll is None:
            self._pointwise_ll = _arviz.pointwise_log_likelihood(self)
        return self._pointwise_ll

    def _sample_stats(self):
        """ArviZ ``sample_stats`` variables, each ``[C, S, N]``."""
        return _arviz.sample_stats(self)

    def to_arviz(self, log_likelihood=True):
        """The draws as :class:`arviz.InferenceData` (:mod:`vaequery.report.arviz`).

        Parameters
        ----------
        log_likelihood : bool
            Add the ``log_likelihood`` group (one decoder pass over all draws).

        Returns
        -------
        arviz.InferenceData
            Groups (``chain`` and ``draw`` lead every variable, as ArviZ
            requires; VI results have a single chain):

            * ``posterior``: ``z`` with dims ``chain, draw, query, latent``,
              and each derived target (:meth:`vaequery.Query.predict`) with
              dims ``chain, draw, query``;
            * ``posterior_predictive``: one variable per target feature, dims
              ``chain, draw, query``, NaN where that feature is not a target
              of the row (raw units);
            * ``observed_data``: ``evidence`` ``[query, feature]``, NaN where
              unobserved (raw units);
            * ``sample_stats``: MCMC ``acceptance_rate``, ``diverging``,
              ``step_size`` (and ``n_steps`` for HMC/NUTS, ``lp``, the
              target's log-density at each draw, where the backend records
              it); VI ``final_loss``
              and, with ``tol=``, ``num_steps_used`` (dims ``chain, draw,
              query``; VI's have one draw); ``failed``
              (every draw of a row whose inference was not finite);
            * ``log_likelihood``: ``evidence`` = ``log p(x_O | z)`` per draw,
              dims ``chain, draw, query``.
        """
        return _arviz.to_inference_data(self, log_likelihood=log_likelihood)

    # ------------------------------------------------------ diagnostics
    def diagnose(self, num_samples=1000, key=None, warn=True):
        """Per-query reliability diagnostics, with warnings above thresholds.

        MCMC backends: rank-normalised split R-hat and bulk/tail effective
        sample sizes of ``z`` (ArviZ; worst latent coordinate per query),
        Monte-Carlo standard error of the mean relative to the posterior sd,
        divergences and mean acceptance rate, and ``proposal_khat``: the PSIS
        k-hat of the Gaussian fitted to the draws used as importance proposal
        by :meth:`log_likelihood` (as for VI below; it says nothing about the
        draws themselves). A warning names the queries with R-hat > 1.01,
        with divergences or with ``proposal_khat`` > 0.7.

        Variational backends: the Pareto k-hat of PSIS (``arviz.psislw``)
        applied to the importance weights ``p(x_O, z) / q(z)`` of
        ``num_samples`` fresh draws of the fitted ``q``, and the PSIS
        effective sample size. k-hat < 0.5: ``q`` is a good importance
        proposal; 0.5-0.7: usable; > 0.7 (warned): IWAE likelihoods and
        :meth:`resample` are unreliable for that query.

        Parameters
        ----------
        num_samples : int
            Importance draws per query for the k-hat estimates.
        key : int or PRNG key, optional
            Default: derived from the inference key.
        warn : bool
            Emit :class:`RuntimeWarning` s for queries above the thresholds.

        Returns
        -------
        pandas.DataFrame
            One row per query. MCMC columns ``r_hat``, ``ess_bulk``,
            ``ess_tail``, ``mcse_mean_over_sd``, ``divergences``,
            ``acceptance_rate``, ``proposal_khat``; VI columns ``khat``,
            ``ess_psis``.
        """
        return _diagnostics.diagnose(self, num_samples=num_samples, key=key, warn=warn)

    def resample(self, psis=True, num_draws=None, num_samples=None, key=None):
        """Importance-resample the draws of a variational fit towards the posterior.

        Draws ``num_samples`` fresh ``z ~ q`` per query, weights them by
        ``p(x_O, z) / q(z)`` (Pareto-smoothed with ``psis=True``, plain
        self-normalised otherwise) and resamples ``num_draws`` of them with
        replacement. This corrects part of ``q``'s error where the weights are
        well behaved (k-hat < 0.7, see :meth:`diagnose`); it cannot find mass
        ``q`` misses.

        Parameters
        ----------
        psis : bool
            Pareto-smooth the weights (Vehtari et al.).
        num_draws : int, optional
            Draws per query of the result (default: as many as now).
        num_samples : int, optional
            Importance draws per query (default ``max(1000, 10 * num_draws)``).
        key : int or PRNG key, optional

        Returns
        -------
        Posterior
            Same query, backend and state; ``info`` gains ``khat`` ``[N]``
            (NaN when ``psis=False``).
        """
        new = _diagnostics.importance_resample(self, psis, num_draws, num_samples, key)
        return Posterior(
            query=self.query,
            backend=self.backend,
            state=self.state,
            z=new["z"],
            x_model=new["x_model"],
            loss=self.loss,
            info={**self.info, "khat": new["khat"]},
            key=new["key"],
            failed=self.failed,
        )

    def plot(self, path=None, query=0, bins=None, kind="marginal", *, X_true=None, hdi_prob=0.94):
        """Plot one query's posterior with ArviZ (:mod:`vaequery.report.plots`).

        Parameters
        ----------
        path : str or Path, optional
            Save the figure there (PNG, PDF, ... by suffix).
        query : int
            Which row.
        bins : None
            No longer used (the marginals are kernel density estimates);
            kept so that positional calls keep working. Passing a value
            warns.
        kind : {"marginal", "trace"}
            ``"marginal"``: :func:`arviz.plot_density` of every target
            feature and derived target (KDE with the ``hdi_prob`` HDI; MCMC:
            one KDE outline per chain on top of the pooled density).
            ``"trace"``: :func:`arviz.plot_trace` of the latent code ``z``
            (densities per chain and traces; MCMC only).
        X_true : array ``[N, D]``, optional
            True values (raw units, every target finite): drawn as a dashed
            line on each marginal.
        hdi_prob : float
            Mass of the highest-density interval.

        Returns
        -------
        matplotlib.figure.Figure
        """
        if bins is not None:
            warnings.warn(
                "Posterior.plot(bins=) is ignored: the marginals are ArviZ kernel density "
                "estimates now; drop bins=",
                DeprecationWarning,
                stacklevel=2,
            )
        return _plots.plot_posterior(
            self, path=path, query=query, kind=kind, X_true=X_true, hdi_prob=hdi_prob
        )


def posterior_from_arrays(query, backend, state, arrays, key):
    """A :class:`Posterior` from its arrays as stored (``info/<name>`` for its info).

    Shared by :func:`vaequery.io.posterior_from_files` and :mod:`vaequery.stream`, whose
    checkpoint blocks hold the same arrays.

    Parameters
    ----------
    query : vaequery.Query
    backend : Backend
    state : pytree
        The fitted state.
    arrays : dict
        ``"z"``, ``"x_model"``, ``"loss"``, ``"failed"`` and ``"info/..."`` arrays.
    key : jax PRNG key

    Returns
    -------
    vaequery.Posterior
    """
    return Posterior(
        query=query,
        backend=backend,
        state=state,
        z=arrays["z"],
        x_model=arrays["x_model"],
        loss=arrays["loss"],
        info={k[len("info/") :]: v for k, v in arrays.items() if k.startswith("info/")},
        key=key,
        failed=arrays["failed"],
    )
