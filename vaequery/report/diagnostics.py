"""Reliability diagnostics of a :class:`~vaequery.Posterior` and importance resampling.

* Variational fits: the Pareto k-hat of PSIS (Vehtari et al. 2024) applied to
  the importance weights ``p(x_O, z) / q(z)`` of fresh draws of the fitted
  ``q``, and the PSIS effective sample size.
* MCMC: rank-normalised split R-hat, bulk/tail ESS and MCSE of ``z``
  (Vehtari et al. 2021, via ArviZ), divergences, acceptance rate, and the
  k-hat of the Gaussian fitted to the draws (the likelihood's proposal).

:func:`importance_resample` reweights a variational fit towards the
posterior with the same weights.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vaequery._batch import as_key
from vaequery.report.arviz import arviz, chain_draw_query

#: R-hat above this triggers a warning in :func:`diagnose` (Vehtari et al. 2021).
RHAT_THRESHOLD = 1.01
#: PSIS k-hat above this triggers a warning (Vehtari et al. 2024: estimates unreliable).
KHAT_THRESHOLD = 0.7


@eqx.filter_jit
def _proposal_draws(backend, target, state, keys, num_samples):
    """Draws of each row's fitted approximation and their log importance weights."""

    def one(state, key, row):
        z, log_q = backend.sample_and_log_prob(state, key, num_samples)
        return z, jax.vmap(target.logdensity_fn, (0, None))(z, row) - log_q

    return jax.vmap(one)(state, keys, target.data)


@eqx.filter_jit
def _decode_mean(likelihood, decode_fn, z, x, cond):
    """Decoded means of ``z [N, M, d]`` for each row's evidence ``x, cond [N, D]``."""
    from vaequery.model import decode_row

    return jax.vmap(lambda zr, xr, cr: likelihood.mean(decode_row(decode_fn, zr, xr, cr)))(
        z, x, cond
    )


def importance_log_weights(post, num_samples, key):
    """Fresh draws of ``post``'s fitted approximation and their log importance weights.

    Parameters
    ----------
    post : vaequery.Posterior
    num_samples : int
        Draws per query ``M``.
    key : PRNG key

    Returns
    -------
    (z [N, M, d], log_w [N, M])
        ``log_w = log p(x_O, z) - log q(z)`` (float64).
    """
    keys = jax.random.split(key, post.num_queries)
    z, lw = _proposal_draws(post.backend, post.query.target(), post.state, keys, int(num_samples))
    return np.asarray(z), np.asarray(lw, np.float64)


def logsumexp(a):
    """``log sum exp`` over the last axis, keeping it (NumPy, float64-safe).

    Parameters
    ----------
    a : ndarray ``[..., S]``

    Returns
    -------
    ndarray ``[..., 1]``
    """
    m = a.max(-1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(-1, keepdims=True))


def psis(lw):
    """PSIS k-hat and effective sample size per row of log-weights.

    Parameters
    ----------
    lw : array ``[N, S]``

    Returns
    -------
    (khat [N], ess [N])
    """
    lw_s, khat = arviz().psislw(np.array(lw, np.float64))
    ess = 1.0 / np.exp(logsumexp(2 * np.asarray(lw_s))[..., 0])
    return np.asarray(khat), ess


def warn_rows(rows, message, stacklevel=4):
    """One :class:`RuntimeWarning` naming the (first ten) ``rows``, if any.

    Parameters
    ----------
    rows : iterable of int
    message : str
    stacklevel : int
    """
    rows = list(rows)
    if rows:
        more = "..." if len(rows) > 10 else ""
        warnings.warn(
            f"{len(rows)} quer{'y' if len(rows) == 1 else 'ies'} (rows "
            f"{[int(r) for r in rows[:10]]}{more}): {message}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def _mcmc_diagnostics(post, num_samples, key, warn):
    import pandas as pd

    az = arviz()
    idata = az.from_dict(
        posterior={"z": chain_draw_query(post.z, True)},
        dims={"z": ["query", "latent"]},
    )
    rhat = az.rhat(idata)["z"].values  # [N, d]
    ess_bulk = az.ess(idata, method="bulk")["z"].values
    ess_tail = az.ess(idata, method="tail")["z"].values
    sd = post._flat(post.z).std(1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_mcse = az.mcse(idata, method="mean")["z"].values / sd
    cols = {
        "r_hat": np.nanmax(rhat, -1),
        "ess_bulk": np.nanmin(ess_bulk, -1),
        "ess_tail": np.nanmin(ess_tail, -1),
        "mcse_mean_over_sd": np.nanmax(rel_mcse, -1),
    }
    n = post.z.shape[0]
    div = post.info.get("diverging")
    cols["divergences"] = (
        div.reshape(n, -1).sum(-1).astype(int) if div is not None else np.zeros(n, int)
    )
    acc = post.info.get("acceptance_rate")
    cols["acceptance_rate"] = acc.reshape(n, -1).mean(-1) if acc is not None else np.full(n, np.nan)
    _, lw = importance_log_weights(post, num_samples, key)
    cols["proposal_khat"] = psis(lw)[0]
    df = pd.DataFrame(cols, index=pd.RangeIndex(n, name="query"))
    if warn:
        warn_rows(
            df.index[df["r_hat"] > RHAT_THRESHOLD],
            f"R-hat > {RHAT_THRESHOLD}: chains disagree; run more draws or warmup",
            stacklevel=5,  # warn_rows, _mcmc_diagnostics, diagnose, Posterior.diagnose
        )
        warn_rows(
            df.index[df["divergences"] > 0],
            "divergent transitions: the sampler may miss parts of the posterior",
            stacklevel=5,
        )
        warn_rows(
            df.index[df["proposal_khat"] > KHAT_THRESHOLD],
            f"PSIS k-hat > {KHAT_THRESHOLD} for the Gaussian fitted to the draws: "
            "log_likelihood() estimates are unreliable (the draws are not affected)",
            stacklevel=5,
        )
    return df


def diagnose(post, num_samples=1000, key=None, warn=True):
    """Per-query reliability diagnostics; see :meth:`vaequery.Posterior.diagnose`.

    Parameters
    ----------
    post : vaequery.Posterior
    num_samples : int
        Importance draws per query for the k-hat estimates.
    key : int or PRNG key, optional
        Default: derived from the inference key.
    warn : bool
        Warn about queries above the thresholds.

    Returns
    -------
    pandas.DataFrame
        One row per query (columns in :meth:`vaequery.Posterior.diagnose`).
    """
    import pandas as pd

    key = as_key(key) if key is not None else jax.random.fold_in(post._key, 2)
    if post.backend.family == "mcmc":
        return _mcmc_diagnostics(post, num_samples, key, warn)
    _, lw = importance_log_weights(post, num_samples, key)
    khat, ess = psis(lw)
    df = pd.DataFrame(
        {"khat": khat, "ess_psis": ess},
        index=pd.RangeIndex(post.num_queries, name="query"),
    )
    if warn:
        warn_rows(
            df.index[df["khat"] > KHAT_THRESHOLD],
            f"PSIS k-hat > {KHAT_THRESHOLD}: the fitted approximation is a poor "
            "importance proposal; likelihood estimates are unreliable",
            stacklevel=4,  # warn_rows, diagnose, Posterior.diagnose, the caller
        )
    return df


def importance_resample(post, psis_smooth=True, num_draws=None, num_samples=None, key=None):
    """Importance-resampled draws of a variational fit; see :meth:`vaequery.Posterior.resample`.

    Parameters
    ----------
    post : vaequery.Posterior
    psis_smooth : bool
        Pareto-smooth the weights.
    num_draws : int, optional
    num_samples : int, optional
    key : int or PRNG key, optional

    Returns
    -------
    dict
        ``z`` ``[N, num_draws, d]``, ``x_model`` (decoder means, model
        units), ``khat`` ``[N]`` (NaN without smoothing) and the ``key``
        the draws were picked with.
    """
    if post.backend.family == "mcmc":
        raise ValueError(
            f"resample() reweights a variational approximation; backend "
            f"{post.backend.name!r} is MCMC and its draws already target the posterior"
        )
    num_draws = int(num_draws or post.z.shape[1])
    num_samples = int(num_samples or max(1000, 10 * num_draws))
    key = as_key(key) if key is not None else jax.random.fold_in(post._key, 3)
    k_draw, k_pick = jax.random.split(key)
    z, lw = importance_log_weights(post, num_samples, k_draw)
    if psis_smooth:
        lw_norm, khat = arviz().psislw(lw.copy())
        lw_norm = np.asarray(lw_norm)
    else:
        lw_norm = lw - logsumexp(lw)
        khat = np.full(post.num_queries, np.nan)
    idx = jax.random.categorical(
        k_pick, jnp.asarray(lw_norm, jnp.float32), axis=-1, shape=(num_draws, lw.shape[0])
    ).T
    z_new = np.take_along_axis(z, np.asarray(idx)[..., None], axis=1)
    model = post.query.model
    q = post.query
    x_model = np.asarray(
        _decode_mean(
            model.likelihood,
            model.decode_fn,
            jnp.asarray(z_new),
            jnp.asarray(q.x, z_new.dtype),
            jnp.asarray(q.observed_mask),
        )
    )
    return {"z": z_new, "x_model": x_model, "khat": np.asarray(khat), "key": k_pick}
