r"""Metrics of conditional queries (definitions follow QAVI §5).

The array-level estimators (:func:`iwae_log_likelihood`, :func:`nrmse`,
:func:`hdi`) and the :class:`~vaequery.Posterior`-level ones it delegates to
(:func:`log_likelihood`, :func:`posterior_nrmse`).

IWAE log-likelihood of the targets
    With ``S`` draws :math:`z_s \sim q` (the fitted approximation of a backend),

    .. math::
        \widehat{\log p}(x_U\mid x_O) = \log \tfrac1S \sum_s
        \frac{p(x_U, x_O\mid z_s)\,p(z_s)}{q(z_s)}
        - \log \tfrac1S \sum_s \frac{p(x_O\mid z_s)\,p(z_s)}{q(z_s)},

    the IWAE estimate of :math:`p(x_U, x_O)` divided by the one of
    :math:`p(x_O)` from the same draws. Both are consistent as ``S`` grows;
    QAVI reports ``S = 10,000``. Reported per query, not divided by the number
    of targets.

NRMSE
    Errors in standardised units (raw error divided by the feature's scale,
    i.e. its dataset standard deviation for vaequery's datasets), root-mean-
    squared over a row's targets. ``reduce="min"``: the minimum over draws of
    the per-draw error (QAVI's reading); ``reduce="mean"``: the error of the
    mean imputation (VAEAC, posterior matching).
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from vaequery._batch import as_key, map_rows


@eqx.filter_jit
def _iwae(backend, target, state, keys, data_obs, data_joint, num_samples, chunk_size):
    def one(state, key, row_obs, row_joint):
        z, log_q = backend.sample_and_log_prob(state, key, num_samples)
        lw_o = jax.vmap(target.logdensity_fn, (0, None))(z, row_obs) - log_q
        lw_j = jax.vmap(target.logdensity_fn, (0, None))(z, row_joint) - log_q
        return logsumexp(lw_j) - logsumexp(lw_o), lw_o

    return map_rows(one, (state, keys, data_obs, data_joint), chunk_size)


def iwae_log_likelihood(
    backend, target, state, key, x_joint, joint_mask, num_samples=1000, chunk_size=None
):
    """IWAE estimate of ``log p(x_U | x_O)`` per query (see module docstring).

    Parameters
    ----------
    backend : Backend
        Its ``sample_and_log_prob`` is the importance proposal.
    target : Target
        Observed data in ``target.data``.
    state : pytree
        Fitted per-row backend states (leading axis ``N``).
    key : PRNG key
    x_joint : array ``[N, D]``
        Observed and true target values, model units.
    joint_mask : bool array ``[N, D]``
        Observed or target.
    num_samples : int
    chunk_size : int, optional

    Returns
    -------
    (log_lik [N], log_w_obs [N, S])
        The estimates and the importance log-weights
        ``log p(x_O, z) - log q(z)`` (for PSIS diagnostics). A backend with
        an ``exact_log_likelihood(target, state, data_joint, chunk_size)``
        method (``"grid"``: quadrature) supplies ``log_lik`` itself, and
        ``log_w_obs`` is then ``None`` (no importance draws are made).
    """
    n = target.num_queries
    keys = jax.random.split(key, n)
    data_joint = {
        # the model's other arguments (interval evidence) are evidence in both terms
        **{k: v for k, v in target.data.items() if k not in ("x", "observed", "start")},
        "x": jnp.asarray(x_joint, jnp.result_type(float)),
        "observed": jnp.asarray(joint_mask, bool),
    }
    if chunk_size is not None and chunk_size >= n:
        chunk_size = None
    exact = getattr(backend, "exact_log_likelihood", None)
    if exact is not None:  # the grid backend: quadrature, no importance draws
        return np.asarray(exact(target, state, data_joint, chunk_size)), None
    ll, lw = _iwae(
        backend, target, state, keys, target.data, data_joint, int(num_samples), chunk_size
    )
    return np.asarray(ll), np.asarray(lw)


def nrmse(x_draws, x_true, target_mask, reduce="min"):
    """Normalised RMSE over each row's targets.

    Parameters
    ----------
    x_draws : array ``[N, S, D]``
        Imputations in standardised units.
    x_true : array ``[N, D]``
        True values in standardised units.
    target_mask : bool array ``[N, D]``
    reduce : {"min", "mean"}
        See the module docstring.

    Returns
    -------
    array ``[N]``; NaN for rows without targets.
    """
    if reduce not in ("min", "mean"):
        raise ValueError(f"reduce must be 'min' or 'mean', got {reduce!r}")
    m = np.asarray(target_mask, bool)
    cnt = m.sum(-1)
    xt = np.where(m, x_true, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduce == "mean":
            err = np.where(m, x_draws.mean(1) - xt, 0.0)
            out = np.sqrt((err**2).sum(-1) / cnt)
        else:
            err = np.where(m[:, None], x_draws - xt[:, None], 0.0)
            out = np.sqrt((err**2).sum(-1) / cnt[:, None]).min(1)
    return np.where(cnt > 0, out, np.nan)


def hdi(draws, prob=0.94):
    """Highest-density interval of 1-D draws along the last axis.

    Parameters
    ----------
    draws : array ``[..., S]``
    prob : float

    Returns
    -------
    (lower [...], upper [...])
    """
    s = np.sort(np.asarray(draws), -1)
    n = s.shape[-1]
    k = max(int(np.floor(prob * n)), 1)
    if k >= n:
        return s[..., 0], s[..., -1]
    widths = s[..., k:] - s[..., : n - k]
    i = np.argmin(widths, -1)[..., None]
    return (np.take_along_axis(s, i, -1)[..., 0], np.take_along_axis(s, i + k, -1)[..., 0])


def true_model_units(query, X_true):
    """``X_true`` in model (standardised) units on the targets of ``query``, 0 elsewhere.

    Parameters
    ----------
    query : vaequery.Query
    X_true : array ``[N, D]`` or ``[D]`` (raw units) or a table with ``.X``
        A finite value at least at every target entry.

    Returns
    -------
    ndarray ``[N, D]``

    Raises
    ------
    ValueError
        A shape other than the query's, or a target without a finite value
        (the message names the feature and the row).
    """
    schema = query.model.schema
    raw = np.asarray(getattr(X_true, "X", X_true), float)
    if raw.ndim == 1:
        raw = raw[None]
    if raw.shape != query.x.shape:
        raise ValueError(
            f"X_true has shape {raw.shape}; expected {query.x.shape} "
            "(one row per query, one column per feature)"
        )
    tgt = query.target_mask
    bad = tgt & ~np.isfinite(raw)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"X_true has no finite value for target feature "
            f"{schema.names[c]!r} in row {r}; every target needs its true value"
        )
    return np.where(tgt, schema.standardise(np.where(tgt, raw, 0.0)), 0.0)


def log_likelihood(post, X_true, num_samples=1000, key=None, chunk_size=None):
    """IWAE ``log p(x_U | x_O)`` per query; see :meth:`vaequery.Posterior.log_likelihood`.

    Parameters
    ----------
    post : vaequery.Posterior
    X_true : array ``[N, D]``
        True values (raw units) at least at every target.
    num_samples : int
    key : int or PRNG key, optional
        Default: derived from the inference key.
    chunk_size : int, optional

    Returns
    -------
    ndarray ``[N]``
    """
    xt = true_model_units(post.query, X_true)
    q = post.query
    x_joint = np.where(q.observed_mask, q.x, xt)
    joint = q.observed_mask | q.target_mask
    key = as_key(key) if key is not None else jax.random.fold_in(post._key, 1)
    ll, _ = iwae_log_likelihood(
        post.backend,
        q.target(),
        post.state,
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
            stacklevel=3,
        )
    return ll


def posterior_nrmse(post, X_true, reduce="min"):
    """NRMSE of a posterior's imputations; see :meth:`vaequery.Posterior.nrmse`.

    Parameters
    ----------
    post : vaequery.Posterior
    X_true : array ``[N, D]``
        True values in raw units.
    reduce : {"min", "mean"}

    Returns
    -------
    ndarray ``[N]``
    """
    xt = true_model_units(post.query, X_true)
    return nrmse(post._flat(post._x_model), xt, post.query.target_mask, reduce)
