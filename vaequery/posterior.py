"""The result of a query: draws, imputations, loss trace, metrics and diagnostics."""

from __future__ import annotations

import warnings

import numpy as np

from vaequery import metrics
from vaequery.fit import as_key


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
    """

    def __init__(self, query, backend, state, z, x_model, loss, info, key):
        self.query = query
        self.backend = backend
        self.state = state
        self.z = z
        self.loss = loss
        self.info = {k: np.asarray(v) for k, v in info.items()}
        self._key = key
        schema = query.model.schema
        obs = query.observed_mask
        shape = x_model.shape
        extra = (1,) * (len(shape) - 2)
        obs_b = obs.reshape(obs.shape[:1] + extra + obs.shape[1:])
        xq = query.x.reshape(obs_b.shape)
        self._x_model = np.where(obs_b, xq, x_model)  # standardised units
        self.x = schema.unstandardise(self._x_model)

    # ----------------------------------------------------------- shapes
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

    def to_arviz(self):
        """The draws as :class:`arviz.InferenceData`.

        Groups: ``posterior`` (``z`` with dims ``chain, draw, query, latent``),
        ``posterior_predictive`` (one variable per target feature, dims
        ``chain, draw, query``, NaN where that feature is not a target of the
        row), ``observed_data`` (evidence, NaN where unobserved) and
        ``sample_stats`` (VI: ``final_loss`` per query).
        """
        az = _arviz()
        q = self.query
        names = q.model.schema.names

        def cdq(a):  # [N, (C,) S, ...] -> [C, S, N, ...]
            if self.backend.family != "mcmc":
                a = a[:, None]
            return np.moveaxis(a, 0, 2)

        pp = {}
        for j in np.flatnonzero(q.target_mask.any(0)):
            col = np.where(
                q.target_mask[:, j].reshape((-1,) + (1,) * (self.x.ndim - 2)),
                self.x[..., j],
                np.nan,
            )
            pp[names[j]] = cdq(col)
        evidence = np.where(q.observed_mask, q.model.schema.unstandardise(q.x), np.nan)
        stats = {}
        if self.loss.size:
            stats["final_loss"] = self.loss[None, None, :, -1]
        dims = {"z": ["query", "latent"], **{n: ["query"] for n in pp}}
        idata = az.from_dict(
            posterior={"z": cdq(self.z)},
            posterior_predictive=pp,
            observed_data={"evidence": evidence},
            sample_stats=stats or None,
            dims={
                **dims,
                "evidence": ["query", "feature"],
                **({"final_loss": ["query"]} if stats else {}),
            },
            coords={
                "query": np.arange(self.num_queries),
                "latent": np.arange(self.z.shape[-1]),
                "feature": names,
            },
        )
        return idata

    def plot(self, path=None, query=0, bins=40):
        """Marginal posterior-predictive densities of one query's targets.

        Parameters
        ----------
        path : str or Path, optional
            Save the figure there (PNG, PDF, ... by suffix).
        query : int
            Which row.
        bins : int

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = self.query.model.schema.names
        cols = np.flatnonzero(self.query.target_mask[query])
        if cols.size == 0:
            raise ValueError(f"query {query} has no target features to plot")
        ncol = min(4, cols.size)
        nrow = int(np.ceil(cols.size / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        x = self._flat(self.x)[query]
        for ax, j in zip(axes.flat, cols):
            ax.hist(x[:, j], bins=bins, density=True, color="C0", alpha=0.7)
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
    import jax

    return jax.random.fold_in(key, i)


def _arviz():
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    import arviz as az

    return az
