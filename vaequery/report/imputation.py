"""Imputation from a :class:`~vaequery.Posterior`: point and multiple imputation, Rubin's rules."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

KINDS = ("mean", "median")


def predictive_draws(post, key=None):
    """Posterior-predictive draws of every feature, observed ones held at their values.

    For each posterior draw ``z_s`` of each query one ``x ~ p(x | z_s)`` (the
    decoder's noise included), in one compiled program over queries and draws.

    Parameters
    ----------
    post : vaequery.Posterior
    key : int or jax PRNG key, optional
        Default: derived from the posterior's key.

    Returns
    -------
    ndarray ``[N, M, D]``
        Model units (real features standardised, binary/categorical codes);
        ``M`` all draws (chains flattened).
    """
    import jax
    import jax.numpy as jnp

    from vaequery._batch import as_key
    from vaequery.model import decode_row

    query = post.query
    model = query.model
    z = post._flat(post.z)
    N, M, d = z.shape
    D = len(model.schema)
    if N == 0 or M == 0:
        return np.zeros((N, M, D))
    k = jax.random.fold_in(post._key, 3) if key is None else as_key(key)

    def one_row(key, zs, x_obs, obs):
        keys = jax.random.split(key, zs.shape[0])
        x = jax.vmap(
            lambda kk, zz: model.likelihood.sample(kk, decode_row(model.decode_fn, zz, x_obs, obs))
        )(keys, zs)
        return jnp.where(obs, x_obs, x)

    out = jax.jit(jax.vmap(one_row))(
        jax.random.split(k, N),
        jnp.asarray(z),
        jnp.asarray(query.x, z.dtype),
        jnp.asarray(query.observed_mask),
    )
    return np.asarray(out, np.float64)


def _check(post):
    q = post.query
    if q.has_intervals:
        rows = np.flatnonzero(q.interval_mask.any(1))
        raise ValueError(
            f"impute() fills features from p(x | z), which ignores interval evidence; rows "
            f"{rows[:5].tolist()} have some. Give those values as points, or leave them unobserved"
        )


def _mode(codes):
    """Most frequent code along axis 1 of ``[N, M, D]`` (ties: the smallest)."""
    c = np.rint(codes).astype(np.int64)
    top = int(c.max()) + 1 if c.size else 1
    counts = np.stack([(c == k).sum(1) for k in range(max(top, 1))], -1)  # [N, D, K]
    return counts.argmax(-1).astype(np.float64)


def impute(post, m=None, kind="mean", key=None, as_frame=False):
    """Completed tables: the observed values, every unobserved value imputed.

    See :meth:`vaequery.Posterior.impute`.
    """
    _check(post)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    q = post.query
    schema = q.model.schema
    obs = q.observed_mask
    real = np.array([k == "real" for k in schema.kinds])
    draws = predictive_draws(post, key)  # [N, M, D], model units
    N, M, D = draws.shape
    if m is None:
        if kind == "mean":
            # the predictive mean of a real feature is the mean of its decoded means
            point = post._flat(post._x_model).mean(1)
        else:
            point = np.median(draws, 1)
        if (~real).any():
            point = np.where(real, point, _mode(draws))
        point = np.where(obs, q.x, point)
        out = schema.unstandardise(point)
        return _frame(out, schema) if as_frame else out
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive int (the number of completed tables), got {m!r}")
    if m > M:
        raise ValueError(
            f"m={m} completed tables need at least {m} posterior draws per query; this "
            f"posterior has {M}: infer again with num_draws >= {m}"
        )
    # m draws spread over the run (MCMC: over chains and time), one per table
    idx = np.linspace(0, M - 1, m).round().astype(int)
    tables = schema.unstandardise(np.moveaxis(draws[:, idx], 1, 0))  # [m, N, D]
    if as_frame:
        return [_frame(t, schema) for t in tables]
    return tables


def _frame(x, schema):
    import pandas as pd

    return pd.DataFrame(x, columns=schema.names)


class RubinPooled(NamedTuple):
    """Rubin's rules applied to ``m`` completed-data analyses.

    Attributes
    ----------
    estimate : ndarray
        ``Q̄``, the mean of the ``m`` estimates.
    variance : ndarray
        ``T = W + (1 + 1/m) B``, the total variance of ``Q̄``.
    within : ndarray
        ``W``, the mean of the ``m`` complete-data variances.
    between : ndarray
        ``B``, the variance of the ``m`` estimates (``ddof=1``).
    df : ndarray
        Rubin's (1987) degrees of freedom ``(m - 1) (1 + W / ((1 + 1/m) B))²``
        for a ``t`` reference distribution (infinite when ``B = 0``).
    fmi : ndarray
        The fraction of missing information, ``(1 + 1/m) B / T``.
    """

    estimate: np.ndarray
    variance: np.ndarray
    within: np.ndarray
    between: np.ndarray
    df: np.ndarray
    fmi: np.ndarray

    def interval(self, prob=0.95):
        """The ``prob`` confidence interval ``Q̄ ± t_df sqrt(T)``.

        Parameters
        ----------
        prob : float
            Coverage.

        Returns
        -------
        tuple of ndarray
            Lower and upper ends.
        """
        from scipy import stats

        half = stats.t.ppf(0.5 + prob / 2, self.df) * np.sqrt(self.variance)
        return self.estimate - half, self.estimate + half


def rubin(estimates, variances):
    r"""Pool ``m`` completed-data estimates with Rubin's rules.

    Analyse each completed table of :meth:`vaequery.Posterior.impute` (``m``
    tables) as if it were complete, then pool:
    :math:`\bar Q = \frac1m\sum_i Q_i`, :math:`W = \frac1m\sum_i U_i`,
    :math:`B = \frac1{m-1}\sum_i (Q_i - \bar Q)^2`,
    :math:`T = W + (1 + \frac1m) B`.

    Parameters
    ----------
    estimates : array ``[m, ...]``
        One estimate (or a vector of them) per completed table.
    variances : array ``[m, ...]``
        The complete-data variance (squared standard error) of each.

    Returns
    -------
    RubinPooled

    Examples
    --------
    >>> import vaequery as vq
    >>> pooled = vq.rubin([1.0, 1.2, 0.8], [0.04, 0.05, 0.03])
    >>> round(float(pooled.estimate), 3), round(float(pooled.variance), 4)
    (1.0, 0.0933)
    """
    q = np.asarray(estimates, np.float64)
    u = np.asarray(variances, np.float64)
    if q.ndim == 0 or q.shape[0] < 2:
        raise ValueError(
            "Rubin's rules need estimates from at least 2 completed tables (axis 0), got "
            f"shape {q.shape}"
        )
    if u.shape != q.shape:
        raise ValueError(
            f"estimates {q.shape} and variances {u.shape} must have the same shape [m, ...]"
        )
    if not (np.isfinite(q).all() and np.isfinite(u).all()) or (u < 0).any():
        raise ValueError("estimates must be finite and variances finite and >= 0")
    m = q.shape[0]
    qbar = q.mean(0)
    w = u.mean(0)
    b = q.var(0, ddof=1)
    t = w + (1 + 1 / m) * b
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(b > 0, (m - 1) * (1 + w / ((1 + 1 / m) * b)) ** 2, np.inf)
        fmi = np.where(t > 0, (1 + 1 / m) * b / np.where(t > 0, t, 1.0), 0.0)
    return RubinPooled(qbar, t, w, b, df, fmi)


def level_probabilities(post, key=None):
    """Predictive probabilities of the levels of every binary/categorical feature.

    Parameters
    ----------
    post : vaequery.Posterior
    key : int or jax PRNG key, optional
        For the predictive draws (default: from the posterior's key).

    Returns
    -------
    dict
        ``{feature name: ndarray [N, num_levels]}``: the share of the
        posterior-predictive draws ``x ~ p(x | z)`` at each level (codes
        ``0 .. num_levels - 1``; binary: ``[P(0), P(1)]``), per query. An
        observed feature puts probability 1 on its value.
    """
    schema = post.query.model.schema
    cols = [j for j, f in enumerate(schema) if f.kind != "real"]
    if not cols:
        return {}
    draws = np.rint(predictive_draws(post, key)).astype(np.int64)  # [N, M, D]
    out = {}
    for j in cols:
        f = schema.features[j]
        k = np.arange(f.num_levels)
        out[f.name] = (draws[:, :, j, None] == k).mean(1)
    return out
