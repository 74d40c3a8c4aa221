r"""Metrics of conditional queries (definitions follow QAVI §5).

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

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from vaequery.fit import map_rows


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
