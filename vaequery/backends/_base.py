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

from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
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
    """

    num_steps: int = 300
    num_samples: int = 100
    learning_rate: Any = 0.1
    beta: float = 1.0
    optimizer: str = "adam"
    init: str = "auto"

    def __check_init__(self):
        _check_int("num_steps", self.num_steps, 1)
        _check_int("num_samples", self.num_samples, 1)
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
        """
        if isinstance(row, dict) and "start" in row:
            return row["start"]["loc"], row["start"]["tril"]
        d = target.latent_dim
        if self.init in ("auto", "encoder") and target.encode_fn is not None:
            loc, scale = target.encode_fn(row["x"])
            return loc, jnp.diag(scale)
        return jnp.zeros(d), getattr(self, "init_scale", 1.0) * jnp.eye(d)

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
        params, loss = self.fit_params(k_init, k_steps, target, row)
        z, _ = self.sample_and_log_prob(params, k_draw, num_draws)
        return Fit(self.export(params), z, loss, {"final_loss": loss[-1]})

    def fit_params(self, k_init, k_steps, target, row):
        """Optimise one row: ``(params, loss [num_steps])`` after one ``lax.scan``."""
        state = self.init_state(k_init, target, row)
        if self.optimizer == "lbfgs":
            # de-randomised objective: the same noise at every step (Wu et al.)
            keys = jnp.broadcast_to(k_steps, (self.num_steps,) + k_steps.shape)
        else:
            keys = jax.random.split(k_steps, self.num_steps)
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
    log_joint = jax.vmap(target.logdensity_fn, (0, None))(z, row)
    if beta != 1.0:
        log_prior = jax.vmap(target.logprior_fn, (0, None))(z, row)
        log_joint = log_joint + (beta - 1.0) * log_prior
    ent = -jnp.mean(log_q) if entropy is None else entropy
    return -(jnp.mean(log_joint) + beta * ent)
