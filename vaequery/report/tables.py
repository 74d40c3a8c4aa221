"""Tidy pandas tables of a :class:`~vaequery.Posterior`'s draws."""

from __future__ import annotations

import numpy as np


def tidy_draws(post, latent=False):
    """Draws as a tidy table, one row per (query, draw); see :meth:`~vaequery.Posterior.to_pandas`.

    Parameters
    ----------
    post : vaequery.Posterior
    latent : bool
        Add the latent code as columns ``z_0 .. z_{d-1}``.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    q = post.query
    mcmc = post.backend.family == "mcmc"
    x = post._flat(post.x)  # [N, M, D]
    N, M = x.shape[:2]
    cols = np.flatnonzero(q.target_mask.any(0))
    vals = np.where(q.target_mask[:, None, cols], x[:, :, cols], np.nan)
    data = {"query": np.repeat(np.arange(N), M)}
    if mcmc:
        C, S = post.z.shape[1:3]
        data["chain"] = np.tile(np.repeat(np.arange(C), S), N)
        data["draw"] = np.tile(np.arange(S), N * C)
    else:
        data["draw"] = np.tile(np.arange(M), N)
    names = q.model.schema.names
    for k, j in enumerate(cols):
        data[names[j]] = vals[:, :, k].reshape(-1)
    for k, v in getattr(post, "derived", {}).items():  # derived targets (Query.predict)
        data[k] = post._flat(np.asarray(v)).reshape(-1)
    if latent:
        z = post._flat(post.z)
        for i in range(z.shape[-1]):
            data[f"z_{i}"] = z[..., i].reshape(-1)
    return pd.DataFrame(data)
