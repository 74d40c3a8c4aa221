"""The batch driver: every row of a query answered in one compiled program.

:func:`run` resolves the backend, builds the :class:`~vaequery.model.Target` and
calls one ``equinox.filter_jit``-compiled function that vmaps
``backend.run_one`` over rows (``lax.map`` over chunks of rows when
``chunk_size`` is given, to bound memory). The compiled program is cached per
(backend hyper-parameters, model, batch shape): a second query of the same shape
does not recompile.

With ``devices=`` the rows are sharded over a 1-D :class:`jax.sharding.Mesh`
(axis ``"q"``): the per-row inputs are placed with
``NamedSharding(mesh, PartitionSpec("q"))`` and the same jitted program runs
every device's rows on that device (JAX's SPMD partitioner, no hand-written
dispatch).
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vaequery._batch import _positive_int, as_key, map_rows
from vaequery.backends import _base


class InferenceError(FloatingPointError):
    """Inference produced a non-finite loss or non-finite draws (``on_error="raise"``)."""


class InferenceWarning(RuntimeWarning):
    """Some rows produced a non-finite loss or draws; they are flagged in ``Posterior.failed``."""


ON_ERROR = ("warn", "raise", "ignore")


#: The mesh axis the query rows are split along.
ROW_AXIS = "q"


@eqx.filter_jit
def _run_batch(backend, target, likelihood, keys, num_draws, chunk_size, sharding=None):
    def one(k, row):
        fit = backend.run_one(k, target, row, num_draws)
        return fit, likelihood.mean(target.decode(fit.z, row))

    return map_rows(one, (keys, target.data), chunk_size, sharding)


def resolve_devices(devices):
    """The devices ``devices=`` names, as a list (``None`` for the default single device).

    Parameters
    ----------
    devices : None, "all", int or sequence of jax.Device
        ``None``: today's single-device run. ``"all"``: every device
        :func:`jax.devices` lists (after :func:`jax.distributed.initialize`,
        those of every host). An int ``n``: the first ``n`` of them. A list or
        tuple of distinct :class:`jax.Device` objects: those.

    Returns
    -------
    list of jax.Device or None

    Raises
    ------
    ValueError
        ``devices`` is 0 or negative, more than are visible, an unknown
        string, an empty list or a list with repeats.
    TypeError
        Anything else (a float, a bool, a list of non-devices).
    """
    if devices is None:
        return None
    accepted = (
        "accepted: None (one device, the default), 'all', an int count >= 1, or a list of "
        "jax devices (from jax.devices())"
    )
    visible = jax.devices()
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices={devices!r} is not a known setting; {accepted}")
        return list(visible)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}; {accepted}")
        if devices > len(visible):
            raise ValueError(
                f"devices={devices}, but only {len(visible)} {visible[0].platform} device(s) "
                f"are visible; pass devices <= {len(visible)} or 'all' (on CPU, "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N, set before jax is "
                "imported, gives N host devices)"
            )
        return list(visible[: int(devices)])
    if isinstance(devices, (list, tuple)) and all(isinstance(d, jax.Device) for d in devices):
        if not devices:
            raise ValueError(f"devices is an empty list; {accepted}")
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices lists a device more than once: {list(devices)}")
        return list(devices)
    raise TypeError(
        f"devices must be None, 'all', an int or a list of jax devices, got "
        f"{type(devices).__name__} {devices!r}; {accepted}"
    )


def _row_sharding(devices):
    """``NamedSharding`` splitting axis 0 over a 1-D mesh of ``devices``."""
    mesh = jax.sharding.Mesh(np.array(devices), (ROW_AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(ROW_AXIS))


def _shard_rows(tree, idx, sharding):
    """Rows ``idx`` of every leaf ``[N, ...]`` of ``tree``, placed by ``sharding``.

    Built with :func:`jax.make_array_from_callback`, so under
    :func:`jax.distributed.initialize` each process places only its own
    devices' rows (every process must hold the same query).
    """

    def place(a):
        typed = jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(a) if typed else a)[idx]
        out = jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])
        return jax.random.wrap_key_data(out, impl=jax.random.key_impl(a)) if typed else out

    return jax.tree.map(place, tree)


def _host_rows(tree, n):
    """The first ``n`` rows of every leaf of a (possibly multi-host) sharded ``tree``, as NumPy."""

    def get(a):
        if not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            a = multihost_utils.process_allgather(a, tiled=True)
        return np.asarray(a)[:n]

    return jax.tree.map(get, tree)


def _posterior_start(post, query):
    """Mean and Cholesky factor ``[N, d]``, ``[N, d, d]`` of a previous posterior's draws."""
    z = np.asarray(post.z, np.float64)
    z = z.reshape(z.shape[0], -1, z.shape[-1])
    N, d = query.num_queries, query.model.latent_dim
    if z.shape[0] != N or z.shape[-1] != d:
        raise ValueError(
            f"init=Posterior has {z.shape[0]} queries with latent_dim {z.shape[-1]}; this query "
            f"has {N} rows and the model latent_dim {d}: pass the posterior of the same rows"
        )
    loc = z.mean(1)
    diff = z - loc[:, None]
    cov = np.einsum("nsi,nsj->nij", diff, diff) / max(z.shape[1] - 1, 1)
    # a ridge keeps a start from a handful of draws (or a collapsed one) factorable
    cov = cov + (1e-6 + 1e-3 * np.trace(cov, axis1=1, axis2=2) / d)[:, None, None] * np.eye(d)
    dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless jax_enable_x64
    return {"loc": loc.astype(dtype), "tril": np.linalg.cholesky(cov).astype(dtype)}


@eqx.filter_jit
def _guide_start(network, x, observed, keys):
    def one(x, o, k):
        loc, tril = network.moments(network.state(x, o), k)
        return {"loc": loc, "tril": tril}

    return jax.vmap(one)(x, observed, keys)


def _resolve_init(backend, hyperparameters):
    """Split ``init=`` into a backend setting and, for a Posterior, the posterior."""
    from vaequery.posterior import Posterior

    init = hyperparameters.get("init")
    if isinstance(init, Posterior):
        hyperparameters = {**hyperparameters, "init": "given"}
        if isinstance(backend, _base.Backend):
            if not isinstance(backend, _base.VIBackend):
                raise TypeError(
                    f"init= is a setting of the variational backends; {backend.name!r} has none"
                )
            backend = eqx.tree_at(lambda b: b.init, backend, "given")
            hyperparameters.pop("init")
        return backend, hyperparameters, init
    return backend, hyperparameters, None


def run(
    query,
    backend,
    key=0,
    *,
    num_draws=None,
    chunk_size=None,
    on_error="warn",
    devices=None,
    **hyperparameters,
):
    """Run ``backend`` on every row of ``query``; see :meth:`vaequery.Query.infer`."""
    from vaequery.posterior import Posterior

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {list(ON_ERROR)}, got {on_error!r}")
    devices = resolve_devices(devices)
    backend, target, keys, key, num_draws, chunk_size = prepare(
        query, backend, key, num_draws, chunk_size, hyperparameters
    )
    if devices is None or query.num_queries == 0:  # no rows: nothing to split
        fit, x_model = _run_batch(
            backend, target, query.model.likelihood, keys, num_draws, chunk_size
        )
        state, info = fit.state, fit.info
        loss, z, x_model = np.asarray(fit.loss), np.asarray(fit.z), np.asarray(x_model)
    else:
        N, n_dev = query.num_queries, len(devices)
        per_device = -(-N // n_dev)
        if chunk_size is not None and chunk_size >= per_device:
            chunk_size = None
        # pad with copies of row 0 to n_dev equal shards of whole chunks; dropped below
        width = n_dev * (chunk_size or per_device)
        idx = np.zeros(-(-N // width) * width, int)
        idx[:N] = np.arange(N)
        sharding = _row_sharding(devices)
        keys = _shard_rows(keys, idx, sharding)
        target = target._replace(data=_shard_rows(target.data, idx, sharding))
        fit, x_model = _run_batch(
            backend, target, query.model.likelihood, keys, num_draws, chunk_size, sharding
        )
        fit, x_model = _host_rows((fit, x_model), N)
        state, info, loss, z = fit.state, fit.info, fit.loss, fit.z
    failed = failed_rows(loss, z)
    report_failed(backend, np.flatnonzero(failed), query.num_queries, on_error, stacklevel=4)
    return Posterior(
        query=query,
        backend=backend,
        state=state,
        z=z,
        x_model=x_model,
        loss=loss,
        info=info,
        key=key,
        failed=failed,
    )


def prepare(query, backend, key, num_draws, chunk_size, hyperparameters):
    """Everything :func:`run` settles before the compiled program runs.

    :mod:`vaequery.stream` runs the same program over blocks of rows from what
    this returns, so both paths share one set-up.

    Parameters
    ----------
    query : vaequery.Query
    backend : str or Backend
    key : int or PRNG key
    num_draws, chunk_size : int or None
    hyperparameters : dict
        Backend constructor arguments, ``init=`` included.

    Returns
    -------
    tuple
        ``(backend, target, keys, key, num_draws, chunk_size)``: the bound
        backend, the :class:`~vaequery.model.Target` of all rows (warm starts
        in ``target.data["start"]``), one key per row ``[N]``, the typed key,
        and the resolved ``num_draws`` and ``chunk_size`` (``None`` when it
        covers every row).
    """
    backend, hyperparameters, init_post = _resolve_init(backend, hyperparameters)
    backend = _base.get(backend, **hyperparameters)
    model = query.model
    init = getattr(backend, "init", None)
    if init == "given" and init_post is None:
        raise ValueError("init='given' is set by passing a previous Posterior as init=")
    backend = backend.bind(model)
    if backend.needs_encoder and model.encode_fn is None:
        no_enc = [n for n, c in _base._REGISTRY.items() if not c.needs_encoder]
        raise ValueError(
            f"backend {backend.name!r} needs the model's encoder and this model has "
            f"none; backends that work without one: {sorted(no_enc)}"
        )
    num_draws = (
        backend.default_num_draws if num_draws is None else _positive_int("num_draws", num_draws)
    )
    if chunk_size is not None:
        chunk_size = _positive_int("chunk_size", chunk_size)
        if chunk_size >= query.num_queries:
            chunk_size = None
    target = query.target()
    key = as_key(key)
    keys = jax.random.split(key, query.num_queries)
    if init_post is not None:
        start = _posterior_start(init_post, query)
    elif init in _base.GUIDE_INITS:
        net = model.guides[init].network
        k_start = jax.random.split(jax.random.fold_in(key, 7), query.num_queries)
        start = _guide_start(net, target.data["x"], target.data["observed"], k_start)
    else:
        start = None
    if start is not None:
        start = jax.tree.map(jnp.asarray, start)
        target = target._replace(data={**target.data, "start": start})
    return backend, target, keys, key, num_draws, chunk_size


def failed_rows(loss, z):
    """``bool [N]``: rows whose loss trace ``[N, ...]`` or draws ``[N, ...]`` are not all finite."""
    bad = ~np.isfinite(loss).all(axis=tuple(range(1, loss.ndim))) if loss.size else None
    bad_z = ~np.isfinite(z).reshape(z.shape[0], int(np.prod(z.shape[1:]))).all(-1)
    return bad_z if bad is None else (bad | bad_z)


def report_failed(backend, rows, num_queries, on_error, stacklevel=3):
    """Warn about (or, with ``on_error="raise"``, raise on) the failed ``rows`` of a batch."""
    if rows.size:
        msg = (
            f"backend {backend.name!r} produced a non-finite loss or draws for "
            f"{rows.size} of {num_queries} queries (rows {rows[:10].tolist()}"
            f"{'...' if rows.size > 10 else ''}); "
            + (
                # MCMC: chains that never reached a finite log-density (hmc.at_finite_density)
                "check their evidence: the log-likelihood is -inf or NaN wherever the chains went"
                if backend.family == "mcmc"
                else "try a smaller learning_rate or more num_samples"
            )
        )
        if on_error == "raise":
            raise InferenceError(msg)
        if on_error == "warn":
            warnings.warn(
                msg + ". The other rows are unaffected; Posterior.failed flags these "
                "(on_error='raise' raises instead)",
                InferenceWarning,
                stacklevel=stacklevel,
            )
