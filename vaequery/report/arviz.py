"""ArviZ conversion of a :class:`~vaequery.Posterior`.

ArviZ wants ``chain`` and ``draw`` leading every variable; a posterior stores
``[query, (chain,) draw, ...]``. :func:`chain_draw_query` moves the axes,
:func:`to_inference_data` builds the groups documented in
:meth:`vaequery.Posterior.to_arviz`, and :func:`targets_inference_data` gives
the draws of one query's targets (what the plots and :mod:`vaequery.compare`
draw).
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def arviz():
    """Import ArviZ with its ``FutureWarning`` s (the 1.0 migration notice) silenced.

    Returns
    -------
    module
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    import arviz as az

    return az


def chain_draw_query(a, mcmc):
    """``[N, (C,) S, ...]`` -> ``[C, S, N, ...]`` (a single chain unless ``mcmc``).

    Parameters
    ----------
    a : array
    mcmc : bool
        Whether ``a`` has a chain axis after the query axis.

    Returns
    -------
    ndarray
    """
    a = np.asarray(a)
    if not mcmc:
        a = a[:, None]
    return np.moveaxis(a, 0, 2)


@eqx.filter_jit
def _pointwise_loglik(target, z):
    """``log p(x_O | z)`` for ``z: [N, M, d]`` -> ``[N, M]``."""

    def one(zs, row):
        return jax.vmap(target.loglik_fn, (0, None))(zs, row)

    return jax.vmap(one)(z, target.data)


def pointwise_log_likelihood(post):
    """``log p(x_O | z)`` of every draw of ``post``, shape ``post.z.shape[:-1]``.

    Parameters
    ----------
    post : vaequery.Posterior

    Returns
    -------
    ndarray
    """
    flat = post._flat(post.z)
    ll = _pointwise_loglik(post.query.target(), jnp.asarray(flat))
    return np.asarray(ll).reshape(post.z.shape[:-1])


def sample_stats(post):
    """ArviZ ``sample_stats`` variables of ``post``, each ``[C, S, N]``.

    Parameters
    ----------
    post : vaequery.Posterior

    Returns
    -------
    dict of str to ndarray
        See :meth:`vaequery.Posterior.to_arviz`.
    """
    mcmc = post.backend.family == "mcmc"
    stats = {}
    if mcmc:
        lead = post.z.shape[:3]  # N, C, S
        for name, out in (
            ("logdensity", "lp"),
            ("acceptance_rate", "acceptance_rate"),
            ("diverging", "diverging"),
            ("num_integration_steps", "n_steps"),
            ("step_size", "step_size"),
        ):
            if name not in post.info:
                continue
            v = post.info[name]
            if v.shape == lead[:2]:  # per chain, e.g. the adapted step size
                v = np.broadcast_to(v[:, :, None], lead)
            if v.shape == lead:
                stats[out] = chain_draw_query(v, True)
    elif post.loss.size:
        stats["final_loss"] = post.loss[None, None, :, -1]
        if "num_steps_used" in post.info:  # VI with tol=: steps each query ran
            stats["num_steps_used"] = post.info["num_steps_used"][None, None, :]
    if mcmc:
        stats["failed"] = chain_draw_query(
            np.broadcast_to(post.failed[:, None, None], post.z.shape[:3]), True
        )
    else:
        stats["failed"] = post.failed[None, None, :]
    return stats


def to_inference_data(post, log_likelihood=True):
    """``post`` as :class:`arviz.InferenceData`; see :meth:`vaequery.Posterior.to_arviz`.

    Parameters
    ----------
    post : vaequery.Posterior
    log_likelihood : bool
        Add the ``log_likelihood`` group.

    Returns
    -------
    arviz.InferenceData
        For a model with a custom latent prior (``from_decoder(..., prior=)``)
        the ``posterior`` group holds one variable per prior site (dims
        ``chain, draw, query, <site>_dim_0, ...``) instead of the flat ``z``.
    """
    az = arviz()
    mcmc = post.backend.family == "mcmc"
    q = post.query
    names = q.model.schema.names
    pp = {}
    for j in np.flatnonzero(q.target_mask.any(0)):
        col = np.where(
            q.target_mask[:, j].reshape((-1,) + (1,) * (post.x.ndim - 2)),
            post.x[..., j],
            np.nan,
        )
        pp[names[j]] = chain_draw_query(col, mcmc)
    evidence = np.where(q.observed_mask, q.model.schema.unstandardise(q.x), np.nan)
    stats = sample_stats(post)
    coords = {
        "query": np.arange(post.num_queries),
        "latent": np.arange(post.z.shape[-1]),
        "feature": names,
    }
    latent, latent_dims = {"z": chain_draw_query(post.z, mcmc)}, {"z": ["query", "latent"]}
    if getattr(q.model, "prior", None) is not None:
        # a custom latent prior: its sites as variables, not the flat vector
        latent = {k: chain_draw_query(v, mcmc) for k, v in post.z_sites.items()}
        latent_dims = {
            k: ["query"] + [f"{k}_dim_{i}" for i in range(v.ndim - 3)] for k, v in latent.items()
        }
    dims = {
        **latent_dims,
        **{n: ["query"] for n in pp},
        **{n: ["query"] for n in stats},
    }
    # derived targets (Query.predict): one value per draw of every row
    derived = {k: chain_draw_query(v, mcmc) for k, v in getattr(post, "derived", {}).items()}
    dims.update({k: ["query"] for k in derived})
    idata = az.from_dict(
        posterior={**latent, **derived},
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
            {"evidence": chain_draw_query(post.pointwise_log_likelihood(), mcmc)},
            dims={"evidence": ["query"]},
            coords=coords,
        )
        idata.add_groups(log_likelihood=ll)
    return idata


def targets_inference_data(post, query, columns, standardised=False):
    """The draws of one query's targets as ``InferenceData`` (posterior group).

    Parameters
    ----------
    post : vaequery.Posterior
    query : int
        The row.
    columns : sequence of int
        Feature indices; each becomes a variable named after its feature.
    standardised : bool
        Model units instead of raw units (so targets share one axis). Derived
        targets (:meth:`vaequery.Query.predict` with functions) have no model
        units and are left out then; otherwise they follow the features.

    Returns
    -------
    arviz.InferenceData
        Variables with dims ``chain, draw`` (VI: one chain).
    """
    schema = post.query.model.schema
    mcmc = post.backend.family == "mcmc"
    x = post.x[query]  # [(C,) S, D]
    if standardised:
        x = schema.standardise(x)
    if not mcmc:
        x = x[None]
    draws = {schema.names[j]: x[..., j] for j in columns}
    if not standardised:
        for k, v in getattr(post, "derived", {}).items():
            draws[k] = np.asarray(v[query]) if mcmc else np.asarray(v[query])[None]
    return arviz().from_dict(posterior=draws)


def latent_inference_data(post, query):
    """The latent draws ``z`` of one query as ``InferenceData`` (dims ``chain, draw, latent``).

    Parameters
    ----------
    post : vaequery.Posterior
    query : int

    Returns
    -------
    arviz.InferenceData
    """
    z = post.z[query]
    if post.backend.family != "mcmc":
        z = z[None]
    return arviz().from_dict(
        posterior={"z": z},
        dims={"z": ["latent"]},
        coords={"latent": np.arange(post.z.shape[-1])},
    )
