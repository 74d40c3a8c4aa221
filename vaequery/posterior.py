"""The result of a query: draws, imputations, loss trace, metrics and diagnostics."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vaequery import metrics
from vaequery.fit import as_key

#: R-hat above this triggers a warning in :meth:`Posterior.diagnose` (Vehtari et al. 2021).
RHAT_THRESHOLD = 1.01
#: PSIS k-hat above this triggers a warning (Vehtari et al. 2024: estimates unreliable).
KHAT_THRESHOLD = 0.7


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
        from vaequery.io import save_posterior

        return save_posterior(self, path, include_model=include_model)

    def __reduce__(self):
        # pickle through the same format (model included), see VAE.__reduce__
        from vaequery.io import (
            _UnsavableModel,
            pickle_refusal,
            posterior_files,
            posterior_from_files,
        )

        try:
            files = posterior_files(self, include_model=True)
        except _UnsavableModel as e:
            raise pickle_refusal(e, "Posterior") from None
        return (posterior_from_files, (files, None, "pickled Posterior"))

    # ----------------------------------------------------------- shapes
    @property
    def converged(self):
        """``bool [N]``: rows answered with finite losses and draws (``~failed``)."""
        return ~self.failed

    @property
    def num_queries(self) -> int:
        """Number of query rows ``N``."""
        return self.z.shape[0]

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
        schema = self.query.model.schema
        raw = np.asarray(getattr(X_true, "X", X_true), float)
        if raw.ndim == 1:
            raw = raw[None]
        if raw.shape != self.query.x.shape:
            raise ValueError(
                f"X_true has shape {raw.shape}; expected {self.query.x.shape} "
                "(one row per query, one column per feature)"
            )
        tgt = self.query.target_mask
        bad = tgt & ~np.isfinite(raw)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"X_true has no finite value for target feature "
                f"{schema.names[c]!r} in row {r}; every target needs its true value"
            )
        return np.where(tgt, schema.standardise(np.where(tgt, raw, 0.0)), 0.0)

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
            In model (standardised) units; see :mod:`vaequery.metrics`.
        """
        xt = self._true_model_units(X_true)
        q = self.query
        x_joint = np.where(q.observed_mask, q.x, xt)
        joint = q.observed_mask | q.target_mask
        key = as_key(key) if key is not None else _fold(self._key, 1)
        ll, _ = metrics.iwae_log_likelihood(
            self.backend,
            q.target(),
            self.state,
            key,
            x_joint,
            joint,
            num_samples=num_samples,
            chunk_size=chunk_size,
        )
        if not np.isfinite(ll).all():
            rows = np.flatnonzero(~np.isfinite(ll))
            warnings.warn(
                f"non-finite log-likelihood estimate in rows {rows[:10].tolist()}",
                RuntimeWarning,
                stacklevel=2,
            )
        return ll

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
        xt = self._true_model_units(X_true)
        return metrics.nrmse(self._flat(self._x_model), xt, self.query.target_mask, reduce)

    # ------------------------------------------------------- reporting
    def summary(self, prob=0.94):
        """Mean, sd and HDI of every target feature of every query (raw units).

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
        lo, hi = metrics.hdi(np.moveaxis(x, 1, -1), prob)
        mean, sd = x.mean(1), x.std(1, ddof=1) if x.shape[1] > 1 else np.zeros_like(x[:, 0])
        pct = (1 - prob) / 2 * 100
        rows = []
        for i, j in np.argwhere(self.query.target_mask):
            rows.append((i, names[j], mean[i, j], sd[i, j], lo[i, j], hi[i, j]))
        df = pd.DataFrame(
            rows,
            columns=["query", "feature", "mean", "sd", f"hdi_{pct:g}%", f"hdi_{100 - pct:g}%"],
        )
        if self.num_queries == 1:
            return df.drop(columns="query").set_index("feature")
        return df.set_index(["query", "feature"])

    def _cdq(self, a):
        """``[N, (C,) S, ...]`` -> ``[C, S, N, ...]`` (ArviZ wants chain, draw first)."""
        if self.backend.family != "mcmc":
            a = a[:, None]
        return np.moveaxis(a, 0, 2)

    def pointwise_log_likelihood(self):
        """``log p(x_O | z)`` of every draw, shape ``z.shape[:-1]``.

        The log-likelihood of the evidence (ArviZ's ``log_likelihood`` group),
        soft-evidence factors included; 0 for rows without evidence.
        """
        if self._pointwise_ll is None:
            flat = self._flat(self.z)
            ll = _pointwise_loglik(self.query.target(), jnp.asarray(flat))
            self._pointwise_ll = np.asarray(ll).reshape(self.z.shape[:-1])
        return self._pointwise_ll

    def _sample_stats(self):
        """ArviZ ``sample_stats`` variables, each ``[C, S, N]``."""
        stats = {}
        if self.backend.family == "mcmc":
            lead = self.z.shape[:3]  # N, C, S
            for name, out in (
                ("logdensity", "lp"),
                ("acceptance_rate", "acceptance_rate"),
                ("diverging", "diverging"),
                ("num_integration_steps", "n_steps"),
                ("step_size", "step_size"),
            ):
                if name not in self.info:
                    continue
                v = self.info[name]
                if v.shape == lead[:2]:  # per chain, e.g. the adapted step size
                    v = np.broadcast_to(v[:, :, None], lead)
                if v.shape == lead:
                    stats[out] = self._cdq(v)
        elif self.loss.size:
            stats["final_loss"] = self.loss[None, None, :, -1]
            if "num_steps_used" in self.info:  # VI with tol=: steps each query ran
                stats["num_steps_used"] = self.info["num_steps_used"][None, None, :]
        if self.backend.family == "mcmc":
            stats["failed"] = self._cdq(
                np.broadcast_to(self.failed[:, None, None], self.z.shape[:3])
            )
        else:
            stats["failed"] = self.failed[None, None, :]
        return stats

    def to_arviz(self, log_likelihood=True):
        """The draws as :class:`arviz.InferenceData`.

        Parameters
        ----------
        log_likelihood : bool
            Add the ``log_likelihood`` group (one decoder pass over all draws).

        Returns
        -------
        arviz.InferenceData
            Groups (``chain`` and ``draw`` lead every variable, as ArviZ
            requires; VI results have a single chain):

            * ``posterior``: ``z`` with dims ``chain, draw, query, latent``;
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
        az = _arviz()
        q = self.query
        names = q.model.schema.names
        pp = {}
        for j in np.flatnonzero(q.target_mask.any(0)):
            col = np.where(
                q.target_mask[:, j].reshape((-1,) + (1,) * (self.x.ndim - 2)),
                self.x[..., j],
                np.nan,
            )
            pp[names[j]] = self._cdq(col)
        evidence = np.where(q.observed_mask, q.model.schema.unstandardise(q.x), np.nan)
        stats = self._sample_stats()
        coords = {
            "query": np.arange(self.num_queries),
            "latent": np.arange(self.z.shape[-1]),
            "feature": names,
        }
        dims = {
            "z": ["query", "latent"],
            **{n: ["query"] for n in pp},
            **{n: ["query"] for n in stats},
        }
        idata = az.from_dict(
            posterior={"z": self._cdq(self.z)},
            posterior_predictive=pp,
            observed_data={"evidence": evidence},
            sample_stats=stats or None,
            dims={**dims, "evidence": ["query", "feature"]},
            coords=coords,
        )
        if log_likelihood:
            # Added separately: "evidence" is [query, feature] in observed_data
            # but one value per draw and query here, and from_dict shares dims.
            ll = az.dict_to_dataset(
                {"evidence": self._cdq(self.pointwise_log_likelihood())},
                dims={"evidence": ["query"]},
                coords=coords,
            )
            idata.add_groups(log_likelihood=ll)
        return idata

    # ------------------------------------------------------ diagnostics
    def _importance_log_weights(self, num_samples, key):
        """Draws ``z [N, M, d]`` of the fitted approximation and ``log p(x_O, z) - log q(z)``."""
        keys = jax.random.split(key, self.num_queries)
        z, lw = _proposal_draws(
            self.backend, self.query.target(), self.state, keys, int(num_samples)
        )
        return np.asarray(z), np.asarray(lw, np.float64)

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
        import pandas as pd

        key = as_key(key) if key is not None else _fold(self._key, 2)

        if self.backend.family == "mcmc":
            az = _arviz()
            idata = az.from_dict(
                posterior={"z": self._cdq(self.z)},
                dims={"z": ["query", "latent"]},
            )
            rhat = az.rhat(idata)["z"].values  # [N, d]
            ess_bulk = az.ess(idata, method="bulk")["z"].values
            ess_tail = az.ess(idata, method="tail")["z"].values
            sd = self._flat(self.z).std(1, ddof=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel_mcse = az.mcse(idata, method="mean")["z"].values / sd
            cols = {
                "r_hat": np.nanmax(rhat, -1),
                "ess_bulk": np.nanmin(ess_bulk, -1),
                "ess_tail": np.nanmin(ess_tail, -1),
                "mcse_mean_over_sd": np.nanmax(rel_mcse, -1),
            }
            n = self.z.shape[0]
            div = self.info.get("diverging")
            cols["divergences"] = (
                div.reshape(n, -1).sum(-1).astype(int) if div is not None else np.zeros(n, int)
            )
            acc = self.info.get("acceptance_rate")
            cols["acceptance_rate"] = (
                acc.reshape(n, -1).mean(-1) if acc is not None else np.full(n, np.nan)
            )
            _, lw = self._importance_log_weights(num_samples, key)
            cols["proposal_khat"] = _psis(lw)[0]
            df = pd.DataFrame(cols, index=pd.RangeIndex(n, name="query"))
            if warn:
                _warn_rows(
                    df.index[df["r_hat"] > RHAT_THRESHOLD],
                    f"R-hat > {RHAT_THRESHOLD}: chains disagree; run more draws or warmup",
                )
                _warn_rows(
                    df.index[df["divergences"] > 0],
                    "divergent transitions: the sampler may miss parts of the posterior",
                )
                _warn_rows(
                    df.index[df["proposal_khat"] > KHAT_THRESHOLD],
                    f"PSIS k-hat > {KHAT_THRESHOLD} for the Gaussian fitted to the draws: "
                    "log_likelihood() estimates are unreliable (the draws are not affected)",
                )
            return df

        _, lw = self._importance_log_weights(num_samples, key)
        khat, ess = _psis(lw)
        df = pd.DataFrame(
            {"khat": khat, "ess_psis": ess},
            index=pd.RangeIndex(self.num_queries, name="query"),
        )
        if warn:
            _warn_rows(
                df.index[df["khat"] > KHAT_THRESHOLD],
                f"PSIS k-hat > {KHAT_THRESHOLD}: the fitted approximation is a poor "
                "importance proposal; likelihood estimates are unreliable",
            )
        return df

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
        if self.backend.family == "mcmc":
            raise ValueError(
                f"resample() reweights a variational approximation; backend "
                f"{self.backend.name!r} is MCMC and its draws already target the posterior"
            )
        num_draws = int(num_draws or self.z.shape[1])
        num_samples = int(num_samples or max(1000, 10 * num_draws))
        key = as_key(key) if key is not None else _fold(self._key, 3)
        k_draw, k_pick = jax.random.split(key)
        z, lw = self._importance_log_weights(num_samples, k_draw)
        if psis:
            lw_norm, khat = _arviz().psislw(lw.copy())
            lw_norm = np.asarray(lw_norm)
        else:
            lw_norm = lw - _logsumexp(lw)
            khat = np.full(self.num_queries, np.nan)
        idx = jax.random.categorical(
            k_pick, jnp.asarray(lw_norm, jnp.float32), axis=-1, shape=(num_draws, lw.shape[0])
        ).T
        z_new = np.take_along_axis(z, np.asarray(idx)[..., None], axis=1)
        model = self.query.model
        x_model = np.asarray(_decode_mean(model.likelihood, model.decode_fn, jnp.asarray(z_new)))
        info = {**self.info, "khat": np.asarray(khat)}
        return Posterior(
            query=self.query,
            backend=self.backend,
            state=self.state,
            z=z_new,
            x_model=x_model,
            loss=self.loss,
            info=info,
            key=k_pick,
            failed=self.failed,
        )

    def plot(self, path=None, query=0, bins=40, kind="marginal"):
        """Plot one query's posterior.

        Parameters
        ----------
        path : str or Path, optional
            Save the figure there (PNG, PDF, ... by suffix).
        query : int
            Which row.
        bins : int
            Histogram bins (``kind="marginal"``).
        kind : {"marginal", "trace"}
            ``"marginal"``: posterior-predictive histogram of every target
            feature (MCMC: one outline per chain on top of the pooled
            histogram). ``"trace"``: :func:`arviz.plot_trace` of the latent
            code ``z`` (densities per chain and traces; MCMC only).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        if not -self.num_queries <= query < self.num_queries:
            raise IndexError(f"query {query} out of range for {self.num_queries} queries")
        if kind == "trace":
            if self.backend.family != "mcmc":
                raise ValueError(
                    f"kind='trace' needs an MCMC backend; {self.backend.name!r} is "
                    "variational (its draws are independent): use kind='marginal'"
                )
            az = _arviz()
            idata = az.from_dict(
                posterior={"z": self.z[query]},
                dims={"z": ["latent"]},
                coords={"latent": np.arange(self.z.shape[-1])},
            )
            with warnings.catch_warnings():
                # arviz 0.23 calls a matplotlib API deprecated in 3.11
                warnings.simplefilter("ignore", DeprecationWarning)
                axes = az.plot_trace(idata, var_names=["z"], compact=False)
            fig = np.ravel(axes)[0].figure
            fig.suptitle(f"{self.backend.name}: trace of z, query {query}", fontsize=10)
            fig.tight_layout()
            if path is not None:
                fig.savefig(path, dpi=110)
            return fig
        if kind != "marginal":
            raise ValueError(f"kind must be 'marginal' or 'trace', got {kind!r}")

        names = self.query.model.schema.names
        cols = np.flatnonzero(self.query.target_mask[query])
        if cols.size == 0:
            raise ValueError(f"query {query} has no target features to plot")
        ncol = min(4, cols.size)
        nrow = int(np.ceil(cols.size / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        x = self._flat(self.x)[query]
        for ax, j in zip(axes.flat, cols):
            counts, edges, _ = ax.hist(x[:, j], bins=bins, density=True, color="C0", alpha=0.7)
            if self.backend.family == "mcmc":
                for c in range(self.x.shape[1]):
                    ax.hist(
                        self.x[query, c, :, j],
                        bins=edges,
                        density=True,
                        histtype="step",
                        color=f"C{c + 1}",
                        lw=0.8,
                    )
            ax.axvline(x[:, j].mean(), color="k", lw=1)
            ax.set_title(names[j], fontsize=9)
            ax.set_yticks([])
        for ax in list(axes.flat)[cols.size :]:
            ax.set_visible(False)
        fig.suptitle(f"{self.backend.name}: posterior predictive, query {query}", fontsize=10)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _fold(key, i):
    return jax.random.fold_in(key, i)


@eqx.filter_jit
def _pointwise_loglik(target, z):
    """``log p(x_O | z)`` for ``z: [N, M, d]`` -> ``[N, M]``."""

    def one(zs, row):
        return jax.vmap(target.loglik_fn, (0, None))(zs, row)

    return jax.vmap(one)(z, target.data)


@eqx.filter_jit
def _proposal_draws(backend, target, state, keys, num_samples):
    """Draws of each row's fitted approximation and their log importance weights."""

    def one(state, key, row):
        z, log_q = backend.sample_and_log_prob(state, key, num_samples)
        return z, jax.vmap(target.logdensity_fn, (0, None))(z, row) - log_q

    return jax.vmap(one)(state, keys, target.data)


@eqx.filter_jit
def _decode_mean(likelihood, decode_fn, z):
    return likelihood.mean(decode_fn(z))


def _logsumexp(a):
    m = a.max(-1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(-1, keepdims=True))


def _psis(lw):
    """PSIS k-hat and effective sample size per row of log-weights ``[N, S]``."""
    lw_s, khat = _arviz().psislw(np.array(lw, np.float64))
    ess = 1.0 / np.exp(_logsumexp(2 * np.asarray(lw_s))[..., 0])
    return np.asarray(khat), ess


def _warn_rows(rows, message):
    rows = list(rows)
    if rows:
        more = "..." if len(rows) > 10 else ""
        warnings.warn(
            f"{len(rows)} quer{'y' if len(rows) == 1 else 'ies'} (rows "
            f"{[int(r) for r in rows[:10]]}{more}): {message}",
            RuntimeWarning,
            stacklevel=3,
        )


def _arviz():
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    import arviz as az

    return az
