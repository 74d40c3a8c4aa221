"""The backend contract and the registry of backends by name.

A backend is a small immutable :class:`equinox.Module` holding only its
hyper-parameters. It answers **one** query row as a pure function of
``(key, target, row)``; :func:`vaequery.fit.run` vmaps it over every row of the
batch under one ``jit``. Two methods make the contract:

``run_one(key, target, row, num_draws) -> Fit``
    Fit the approximation (VI) or run the chains (MCMC) for one row and return
    draws of ``z``: ``[num_draws, d]`` (VI) or ``[chains, num_draws, d]`` (MCMC).
``sample_and_log_prob(state, key, n) -> (z [n, d], log_q [n])``
    Draw from the fitted approximation with its log-density. The IWAE
    likelihood and PSIS diagnostics use it as their importance proposal.

Before a batch runs, :func:`vaequery.fit.run` calls ``backend.bind(model)``:
amortized backends (:class:`AmortizedBackend`) take the trained network they
need from the model there, so it rides in the backend as traced arrays.

Variational backends subclass :class:`VIBackend` and supply only
``init_params``, ``sample_and_log_prob`` and optionally an analytic ``entropy``;
the ELBO, the optimiser and the ``lax.scan`` over steps are shared.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a backend to the registry under ``name``."""

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"backend {name!r} is already registered")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def available() -> list[str]:
    """Names of all registered backends."""
    return sorted(_REGISTRY)


def backend_record(backend) -> dict:
    """What rebuilds ``backend`` on a model: its name and hyper-parameters.

    Saved posteriors (:mod:`vaequery.io`) and stream checkpoints
    (:mod:`vaequery.stream`) store it.

    Parameters
    ----------
    backend : Backend

    Returns
    -------
    dict
        ``{"name": str, "hyperparameters": {field: number, string or None}}``;
        networks bound from the model's guides are left out (bound again on load).

    Raises
    ------
    TypeError
        A hyper-parameter that is neither a number nor a string (an optax
        schedule): the file formats store no code.
    """
    hp = {}
    for f in dataclasses.fields(backend):
        if not f.init:
            continue
        v = getattr(backend, f.name)
        if isinstance(v, (eqx.Module, jax.Array, np.ndarray)):
            continue  # a network bound from the model's guides: bound again on load
        if v is None or isinstance(v, (bool, int, float, str)):
            hp[f.name] = v
        elif isinstance(v, (np.integer, np.floating, np.bool_)):
            hp[f.name] = v.item()
        else:
            raise TypeError(
                f"this posterior's backend {backend.name!r} has {f.name}={v!r}, which "
                "vaequery's file format cannot store (it stores numbers and strings, never "
                f"code); answer with a number for {f.name} to save or pickle the result"
            )
    return {"name": backend.name, "hyperparameters": hp}


def get(name_or_backend, **hyperparameters) -> Backend:
    """Resolve a backend name (with hyper-parameters) or pass an instance through.

    Parameters
    ----------
    name_or_backend : str or Backend
    **hyperparameters
        Constructor arguments; only allowed with a name.

    Returns
    -------
    Backend
    """
    if isinstance(name_or_backend, Backend):
        if hyperparameters:
            raise TypeError(
                "hyper-parameters go to the backend's constructor; got an instance "
                f"and {sorted(hyperparameters)}"
            )
        return name_or_backend
    if name_or_backend not in _REGISTRY:
        raise ValueError(f"unknown backend {name_or_backend!r}; available: {available()}")
    cls = _REGISTRY[name_or_backend]
    fields = {f.name for f in cls.__dataclass_fields__.values()}
    unknown = sorted(set(hyperparameters) - fields)
    if unknown:
        raise TypeError(
            f"backend {name_or_backend!r} has no hyper-parameter(s) {unknown}; "
            f"accepted: {sorted(fields)}"
        )
    return cls(**hyperparameters)


class Fit(NamedTuple):
    """Result of :meth:`Backend.run_one` for one query row.

    Attributes
    ----------
    state : pytree
        What :meth:`Backend.sample_and_log_prob` needs (VI: the variational
        parameters; MCMC: a Gaussian fitted to the draws).
    z : array ``[num_draws, d]`` or ``[chains, num_draws, d]``
    loss : array ``[num_steps]``
        Negative ELBO per step (VI); empty for MCMC.
    info : dict of arrays
        Backend-specific diagnostics.
    """

    state: Any
    z: jax.Array
    loss: jax.Array
    info: dict


class Backend(eqx.Module):
    """Abstract inference backend (see the module docstring for the contract)."""

    name: ClassVar[str] = "abstract"
    #: "vi" (draws ``[S, d]``) or "mcmc" (draws ``[chains, S, d]``)
    family: ClassVar[str] = "vi"
    #: whether the backend needs the model's encoder
    needs_encoder: ClassVar[bool] = False

    def run_one(self, key, target, row, num_draws: int) -> Fit:
        """Answer one query row; see the module docstring."""
        raise NotImplementedError

    def bind(self, model) -> Backend:
        """This backend ready to answer queries on ``model`` (default: unchanged)."""
        return self

    def sample_and_log_prob(self, state, key, n: int):
        """``n`` draws from the fitted approximation and their log-density."""
        raise NotImplementedError

    @property
    def default_num_draws(self) -> int:
        """Draws returned per query when the caller does not say."""
        return 100


class VIState(NamedTuple):
    """Optimiser state of a variational backend: parameters and optax state."""

    params: Any
    opt_state: Any


_OPTIMIZERS = ("adam", "lbfgs")


def _is_leaf(x) -> bool:
    return isinstance(x, paramax.NonTrainable)


def split_trainable(params):
    """``(trainable, rest)``: inexact arrays not wrapped in ``paramax.NonTrainable``.

    Variational parameters may be any pytree, e.g. a whole flowjax flow whose
    integer masks and permutations must ride along untouched.
    """
    return eqx.partition(params, eqx.is_inexact_array, is_leaf=_is_leaf)


class VIBackend(Backend):
    r"""Shared machinery of the variational backends.

    Maximises, by stochastic gradient ascent with reparameterised samples,

    .. math::
        \mathcal L(\lambda) = \mathbb E_{q_\lambda(z)}\big[\log p(x_O\mid z)
        + \beta \log p(z)\big] + \beta\,\mathbb H[q_\lambda]
        = \mathbb E_q[\log p(x_O\mid z)] - \beta\,\mathrm{KL}(q\,\|\,p(z)),

    QAVI eq. (3). The entropy is analytic when the family has one, else the
    Monte-Carlo estimate :math:`-\frac1S\sum_s \log q(z_s)`.

    Two optimisers are offered. ``"adam"`` draws fresh noise every step (QAVI).
    ``"lbfgs"`` (:func:`optax.lbfgs` with its zoom line search) optimises the
    *de-randomised* objective of Wu, Domke & Sanner: one set of ``num_samples``
    noise draws is fixed for the whole run, so the line search sees a
    deterministic function; each step then costs several objective evaluations.
    ``learning_rate`` is ignored by L-BFGS (the line search picks the step).

    The parameters may be any pytree; only inexact arrays that are not wrapped
    in :class:`paramax.NonTrainable` are optimised (see :func:`split_trainable`).

    Parameters
    ----------
    num_steps : int
        Optimisation steps (QAVI: 300).
    num_samples : int
        Monte-Carlo samples ``S`` per step (QAVI: 100; Wu et al. fix 500 noise
        draws for MNIST).
    learning_rate : float or optax schedule
        Adam's step size.
    beta : float
        KL weight (1 for tables; QAVI uses 20 for images).
    optimizer : {"adam", "lbfgs"}
        See above.
    init : str
        Where each query starts (see :data:`INITS`): ``"auto"`` (the encoder
        on the zero-filled row if the model has one, else the prior),
        ``"prior"``, ``"encoder"``, ``"posterior_matching"`` or
        ``"decoder_only"`` (the model's trained guide of that name). A previous
        :class:`~vaequery.Posterior` of the same rows is accepted by
        ``Query.infer(init=...)``. Families use the start's mean and covariance
        (mean-field: its marginal standard deviations).
    tol : float or None, default None
        Per-query stopping (nats). ``None`` runs every query for ``num_steps``
        steps in one ``lax.scan``, exactly as without the option. A positive
        number runs the same steps in chunks of ``check_every`` inside a
        ``lax.while_loop``: after each chunk the chunk's iterates are averaged
        and the negative ELBO of the average is estimated with noise fixed for
        the query (common random numbers); a query stops once that value has
        changed by less than ``tol`` at ``patience`` consecutive checks, and
        returns the average (see :meth:`_fit_params_tol`). A stopped query is
        frozen; in a batch (vmapped) the loop ends when every query has stopped
        or ``num_steps`` is reached, and a query's answer does not depend on
        the other rows. The learning-rate schedule stays defined over
        ``num_steps``. ``Fit.loss`` keeps its length ``num_steps``, the steps
        after a query stopped repeating its last loss (finite, so failure flags
        are unaffected); ``Fit.info["num_steps_used"]`` holds the steps it ran.
    check_every : int, default 10
        Steps per chunk when ``tol`` is set.
    patience : int, default 2
        Consecutive checks changing by less than ``tol`` before a query stops
        (the first check compares chunks 0 and 1, so a query runs at least
        ``(patience + 1) * check_every`` steps).
    """

    num_steps: int = 300
    num_samples: int = 100
    learning_rate: Any = 0.1
    beta: float = 1.0
    optimizer: str = "adam"
    init: str = "auto"
    tol: float | None = None
    check_every: int = 10
    patience: int = 2

    #: whether the backend's ``run_one`` goes through :meth:`fit_params`, so
    #: honours ``tol`` (a backend with its own optimisation loop sets False)
    supports_tol: ClassVar[bool] = True

    def __check_init__(self):
        _check_int("num_steps", self.num_steps, 1)
        _check_int("num_samples", self.num_samples, 1)
        _check_int("check_every", self.check_every, 1)
        _check_int("patience", self.patience, 1)
        if self.tol is not None:
            tol = self.tol
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
                raise ValueError(
                    "tol must be a positive number of nats (the change of the checked negative "
                    f"ELBO below which a query stops) or None (run every step), got {tol!r}"
                )
            if not math.isfinite(tol):
                raise ValueError(f"tol must be finite (or None to run every step), got {tol!r}")
            if not self.supports_tol:
                raise ValueError(
                    f"backend {self.name!r} runs its own optimisation loop and does not support "
                    "tol=; leave tol=None, or use gaussian/fullrank/iaf/planar/mixture"
                )
        if not (isinstance(self.beta, (int, float)) and self.beta > 0):
            raise ValueError(f"beta must be a positive number, got {self.beta!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        lr = self.learning_rate
        if not callable(lr) and not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(
                f"learning_rate must be a positive number or an optax schedule, got {lr!r}"
            )
        check_init(self.init)

    def bind(self, model):
        if self.init == "encoder" and model.encode_fn is None:
            raise ValueError(
                f"init='encoder' needs a model with an encoder; this one has none. "
                f"Accepted: {list(INITS)} or a previous Posterior"
            )
        if self.init in GUIDE_INITS:
            require_guide(model, self.init)
        return self

    def start(self, target, row):
        """The start of one row: mean ``[d]`` and Cholesky factor ``[d, d]``.

        Precomputed starts (guides, previous posteriors) arrive in
        ``row["start"]``; otherwise the encoder or the prior, as ``init`` says.
        The prior start is ``N(0, I)``, or for a custom latent prior
        (``from_decoder(..., prior=)``) the mean and covariance of its draws
        in the flat latent space (``target.prior_start``), times
        ``init_scale`` where the family has one.
        """
        if isinstance(row, dict) and "start" in row:
            return row["start"]["loc"], row["start"]["tril"]
        d = target.latent_dim
        if self.init in ("auto", "encoder") and target.encode_fn is not None:
            loc, scale = target.encode(row)
            return loc, jnp.diag(scale)
        init_scale = getattr(self, "init_scale", 1.0)
        prior_start = getattr(target, "prior_start", None)
        if prior_start is not None:
            loc, tril = prior_start
            return loc, init_scale * tril
        return jnp.zeros(d), init_scale * jnp.eye(d)

    def start_loc_log_scale(self, target, row):
        """Start mean ``[d]`` and log of its marginal standard deviations ``[d]``."""
        loc, tril = self.start(target, row)
        return loc, 0.5 * jnp.log(jnp.sum(tril**2, -1))

    def init_params(self, key, target, row):
        """Initial variational parameters for one row."""
        raise NotImplementedError

    def entropy(self, params):
        """Analytic entropy of ``q``, or ``None`` to use the Monte-Carlo estimate."""
        return None

    def adam(self) -> optax.GradientTransformation:
        """Adam with this backend's learning rate (subclasses add schedules)."""
        return optax.adam(self.learning_rate)

    def transformation(self) -> optax.GradientTransformation:
        """The optax optimiser selected by ``optimizer``."""
        if self.optimizer == "lbfgs":
            return optax.lbfgs()
        return self.adam()

    def loss_fn(self, params, key, target, row):
        """Negative ELBO (a Monte-Carlo estimate with ``num_samples`` draws).

        Subclasses with their own gradient estimator return a surrogate whose
        value is this estimate and whose gradient is the estimator.
        """
        z, log_q = self.sample_and_log_prob(params, key, self.num_samples)
        return negative_elbo(z, log_q, self.entropy(params), target, row, self.beta)

    def init_state(self, key, target, row) -> VIState:
        """Initial :class:`VIState` for one row."""
        params = self.init_params(key, target, row)
        return VIState(params, self.transformation().init(split_trainable(params)[0]))

    def step(self, state: VIState, key, target, row):
        """One optimisation step; returns ``(state, loss)``.

        With L-BFGS, ``key`` must be the same at every step (the fixed noise).
        """
        train, rest = split_trainable(state.params)

        def f(p):
            return self.loss_fn(eqx.combine(p, rest), key, target, row)

        opt = self.transformation()
        if self.optimizer == "lbfgs":
            loss, grads = optax.value_and_grad_from_state(f)(train, state=state.opt_state)
            updates, opt_state = opt.update(
                grads, state.opt_state, train, value=loss, grad=grads, value_fn=f
            )
        else:
            loss, grads = jax.value_and_grad(f)(train)
            updates, opt_state = opt.update(grads, state.opt_state, train)
        params = eqx.combine(optax.apply_updates(train, updates), rest)
        return VIState(params, opt_state), loss

    def after_step(self, state: VIState, i, key, target, row) -> VIState:
        """Hook run after step ``i`` (e.g. re-initialising collapsed components)."""
        return state

    def run_one(self, key, target, row, num_draws):
        k_init, k_steps, k_draw = jax.random.split(key, 3)
        if self.tol is not None and type(self).fit_params is VIBackend.fit_params:
            params, loss, used = self._fit_params_tol(k_init, k_steps, target, row)
        else:
            params, loss = self.fit_params(k_init, k_steps, target, row)
            used = self.steps_used(loss) if self.tol is not None else None
        z, _ = self.sample_and_log_prob(params, k_draw, num_draws)
        info = {"final_loss": loss[-1]}
        if used is not None:
            info["num_steps_used"] = used
        return Fit(self.export(params), z, loss, info)

    def fit_params(self, k_init, k_steps, target, row):
        """Optimise one row: ``(params, loss [num_steps])``.

        One ``lax.scan`` over ``num_steps`` when ``tol`` is None; with ``tol``,
        chunks of ``check_every`` steps in a ``lax.while_loop`` until the row
        has stopped improving (class docstring), the loss after the stop
        repeating its last value.
        """
        if self.tol is not None:
            return self._fit_params_tol(k_init, k_steps, target, row)[:2]
        state = self.init_state(k_init, target, row)
        keys = self._step_keys(k_steps)
        k_after = jax.random.split(jax.random.fold_in(k_steps, 1), self.num_steps)

        def body(s, xs):
            i, k, ka = xs
            s, loss = self.step(s, k, target, row)
            return self.after_step(s, i, ka, target, row), loss

        # Only arrays may ride in the scan carry; a flow's non-array leaves
        # (activation functions, shapes) are closed over instead.
        arrays, static = eqx.partition(state, eqx.is_array)

        def scan_body(a, xs):
            s, loss = body(eqx.combine(a, static), xs)
            return eqx.filter(s, eqx.is_array), loss

        xs = (jnp.arange(self.num_steps), keys, k_after)
        arrays, loss = jax.lax.scan(scan_body, arrays, xs)
        return eqx.combine(arrays, static).params, loss

    def _step_keys(self, k_steps):
        if self.optimizer == "lbfgs":
            # de-randomised objective: the same noise at every step (Wu et al.)
            return jnp.broadcast_to(k_steps, (self.num_steps,) + k_steps.shape)
        return jax.random.split(k_steps, self.num_steps)

    def _fit_params_tol(self, k_init, k_steps, target, row):
        """``(params, loss [num_steps], steps_used)`` with per-row stopping.

        Chunks of ``check_every`` steps run in a ``lax.scan`` inside a
        ``lax.while_loop``. After each chunk the iterates of the chunk are
        averaged (Polyak-Ruppert: Adam at a still-high learning rate jitters
        around the optimum, and the average sits nearer to it) and the
        negative ELBO of the average is estimated with the row's *fixed* check
        noise: common random numbers, so the difference between two checks
        measures the change of the parameters, not fresh Monte-Carlo noise.
        The row stops after ``patience`` consecutive checks changing by less
        than ``tol`` (a worsening larger than ``tol`` is not convergence; a
        non-finite check never is) and returns the average it was judged on; a
        row that never stops returns its last iterate, as with ``tol=None``.
        Steps past ``num_steps`` in the last chunk are masked.
        """
        C, T = self.check_every, self.num_steps
        n_chunks = -(-T // C)
        total = n_chunks * C
        state = self.init_state(k_init, target, row)
        # the same per-step keys as the single scan: a row that never stops
        # follows the tol=None trajectory
        keys = self._step_keys(k_steps)
        k_after = jax.random.split(jax.random.fold_in(k_steps, 1), T)
        k_check = jax.random.fold_in(k_steps, 3)

        def pad(a):  # steps past num_steps in the last chunk are masked below
            return jnp.concatenate([a, jnp.broadcast_to(a[-1:], (total - T,) + a.shape[1:])])

        xs = (jnp.arange(total), pad(keys), pad(k_after))
        arrays, static = eqx.partition(state, eqx.is_array)
        rest = split_trainable(state.params)[1]

        def trainable(a):
            return split_trainable(eqx.combine(a, static).params)[0]

        def check(train):
            return self.loss_fn(eqx.combine(train, rest), k_check, target, row)

        def step_body(carry, x):
            a, last, acc = carry
            i, k, ka = x
            s, loss = self.step(eqx.combine(a, static), k, target, row)
            s = self.after_step(s, i, ka, target, row)
            live = i < T
            a = jax.tree.map(lambda n, o: jnp.where(live, n, o), eqx.filter(s, eqx.is_array), a)
            acc = jax.tree.map(lambda u, p: u + jnp.where(live, p, 0), acc, trainable(a))
            return (a, jnp.where(live, loss, last), acc), jnp.where(live, loss, last)

        def cond(c):
            return (c["chunk"] < n_chunks) & ~c["done"]

        def body(c):
            chunk = c["chunk"]
            x = jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, chunk * C, C), xs)
            zero = jax.tree.map(jnp.zeros_like, trainable(c["arrays"]))
            (a, last, acc), losses = jax.lax.scan(step_body, (c["arrays"], c["last"], zero), x)
            n_live = jnp.minimum(T - chunk * C, C)
            avg = jax.tree.map(lambda u: u / n_live, acc)
            value = jax.lax.stop_gradient(check(avg))
            # NaN compares False: a non-finite check never counts as converged
            stalled = (chunk > 0) & (jnp.abs(c["value"] - value) < self.tol)
            run = jnp.where(stalled, c["run"] + 1, 0)
            return {
                "chunk": chunk + 1,
                "done": run >= self.patience,
                "run": run,
                "value": value,
                "arrays": a,
                "last": last,
                "avg": avg,
                "buf": jax.lax.dynamic_update_slice_in_dim(c["buf"], losses, chunk * C, 0),
            }

        dtype = jax.eval_shape(lambda: self.step(state, keys[0], target, row)[1]).dtype
        init = {
            "chunk": jnp.zeros((), jnp.int32),
            "done": jnp.zeros((), bool),
            "run": jnp.zeros((), jnp.int32),
            "value": jnp.full((), jnp.inf, dtype),
            "arrays": arrays,
            "last": jnp.zeros((), dtype),
            "avg": jax.tree.map(jnp.zeros_like, trainable(arrays)),
            "buf": jnp.zeros((total,), dtype),
        }
        c = jax.lax.while_loop(cond, body, init)
        used = jnp.minimum(c["chunk"] * C, T)
        loss = c["buf"][:T]
        loss = jnp.where(jnp.arange(T) < used, loss, loss[used - 1])
        params = eqx.combine(c["arrays"], static).params
        averaged = eqx.combine(c["avg"], rest)
        params = jax.tree.map(lambda u, v: jnp.where(c["done"], u, v), averaged, params)
        return params, loss, used.astype(jnp.int32)

    def steps_used(self, loss):
        """Steps a row ran, read from its loss trace ``[num_steps]``.

        A row stopped by ``tol`` repeats its last loss to the end of the trace
        and stops only after a whole chunk: the trace's constant tail, rounded
        up to a multiple of ``check_every``. Used for backends that override
        :meth:`fit_params`; the others report the count of the loop itself.
        """
        T, C = self.num_steps, self.check_every
        changed = jnp.concatenate([jnp.ones((1,), bool), loss[1:] != loss[:-1]])
        last_change = T - 1 - jnp.argmax(changed[::-1])
        used = -(-(last_change + 1) // C) * C
        return jnp.minimum(used, T).astype(jnp.int32)

    def export(self, params):
        """The fitted state handed to :class:`Fit`: the array leaves of ``params``.

        ``sample_and_log_prob`` must accept it (flows rebuild their non-array
        structure from a template; see :mod:`vaequery.backends.iaf`).
        """
        return eqx.filter(params, eqx.is_array)


#: Accepted values of ``init=`` for the variational backends.
INITS = ("auto", "prior", "encoder", "posterior_matching", "decoder_only", "given")
#: The ``init=`` values that need a trained guide stored in ``model.guides``.
GUIDE_INITS = ("posterior_matching", "decoder_only")


def check_init(init):
    """Raise a ``ValueError`` listing the accepted values unless ``init`` is one."""
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(
            f"init must be one of {list(INITS[:-1])} or a previous Posterior "
            f"(Query.infer(init=post)), got {init!r}"
        )


def require_guide(model, name):
    """The model's trained guide ``name``, or a ``ValueError`` naming its trainer."""
    from vaequery.guides.guide import KINDS

    guides = getattr(model, "guides", {}) or {}
    if name not in guides:
        kind = name if name in KINDS else "posterior_matching"
        have = sorted(guides) or "none"
        raise ValueError(
            f"this model has no trained guide {name!r} (its guides: {have}); train one with "
            f"{KINDS[kind]}(model, ...), or load a model saved with one"
        )
    guide = guides[name]
    guide.check_compatible(model, name)
    return guide


def bind_guide_network(backend, model):
    """``(backend with its ``network`` field set, guide)`` for ``backend.guide`` of ``model``."""
    guide = require_guide(model, backend.guide)
    bound = eqx.tree_at(lambda b: b.network, backend, guide.network, is_leaf=lambda x: x is None)
    return bound, guide


class AmortizedBackend(Backend):
    """A backend that answers each query with one network pass, no optimisation.

    Subclasses supply :meth:`row_state` (the per-row parameters of ``q``) and
    :meth:`sample_and_log_prob`. The loss trace is empty.
    """

    def row_state(self, target, row):
        """Per-row parameters of the amortized ``q(z | x_O)``."""
        raise NotImplementedError

    def run_one(self, key, target, row, num_draws):
        state = self.row_state(target, row)
        z, _ = self.sample_and_log_prob(state, key, num_draws)
        return Fit(state, z, jnp.zeros((0,)), {})


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def negative_elbo(z, log_q, entropy, target, row, beta):
    r"""Monte-Carlo negative β-ELBO from draws ``z: [S, d]`` of ``q``.

    ``-(mean_s[log p(x_O|z_s) + β log p(z_s)] + β H)`` with ``H`` the analytic
    entropy if given, else ``-mean_s log q(z_s)``.
    """
    log_joint = beta_log_joint(z, target, row, beta)
    ent = -jnp.mean(log_q) if entropy is None else entropy
    return -(jnp.mean(log_joint) + beta * ent)


def beta_log_joint(z, target, row, beta):
    """``log p(x_O | z) + β log p(z)`` for draws ``z: [S, d]`` -> ``[S]``."""
    log_joint = jax.vmap(target.logdensity_fn, (0, None))(z, row)
    if beta != 1.0:
        log_prior = jax.vmap(target.logprior_fn, (0, None))(z, row)
        log_joint = log_joint + (beta - 1.0) * log_prior
    return log_joint
