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


class VIBackend(Backend):
    r"""Shared machinery of the variational backends.

    Maximises, by stochastic gradient ascent with reparameterised samples,

    .. math::
        \mathcal L(\lambda) = \mathbb E_{q_\lambda(z)}\big[\log p(x_O\mid z)
        + \beta \log p(z)\big] + \beta\,\mathbb H[q_\lambda]
        = \mathbb E_q[\log p(x_O\mid z)] - \beta\,\mathrm{KL}(q\,\|\,p(z)),

    QAVI eq. (3). The entropy is analytic when the family has one, else the
    Monte-Carlo estimate :math:`-\frac1S\sum_s \log q(z_s)`.

    Parameters
    ----------
    num_steps : int
        Optimisation steps (QAVI: 300).
    num_samples : int
        Monte-Carlo samples ``S`` per step (QAVI: 100).
    learning_rate : float or optax schedule
    beta : float
        KL weight (1 for tables; QAVI uses 20 for images).
    """

    num_steps: int = 300
    num_samples: int = 100
    learning_rate: Any = 0.1
    beta: float = 1.0

    def init_params(self, key, target, row):
        """Initial variational parameters for one row."""
        raise NotImplementedError

    def entropy(self, params):
        """Analytic entropy of ``q``, or ``None`` to use the Monte-Carlo estimate."""
        return None

    def optimizer(self) -> optax.GradientTransformation:
        """The optax optimiser (Adam with this backend's learning rate)."""
        return optax.adam(self.learning_rate)

    def loss_fn(self, params, key, target, row):
        """Negative ELBO (a Monte-Carlo estimate with ``num_samples`` draws)."""
        z, log_q = self.sample_and_log_prob(params, key, self.num_samples)
        return negative_elbo(z, log_q, self.entropy(params), target, row, self.beta)

    def init(self, key, target, row) -> VIState:
        """Initial :class:`VIState` for one row."""
        params = self.init_params(key, target, row)
        return VIState(params, self.optimizer().init(params))

    def step(self, state: VIState, key, target, row):
        """One optimisation step; returns ``(state, loss)``."""
        loss, grads = jax.value_and_grad(self.loss_fn)(state.params, key, target, row)
        updates, opt_state = self.optimizer().update(grads, state.opt_state, state.params)
        return VIState(optax.apply_updates(state.params, updates), opt_state), loss

    def run_one(self, key, target, row, num_draws):
        k_init, k_steps, k_draw = jax.random.split(key, 3)
        state = self.init(k_init, target, row)

        def body(s, k):
            return self.step(s, k, target, row)

        state, loss = jax.lax.scan(body, state, jax.random.split(k_steps, self.num_steps))
        z, _ = self.sample_and_log_prob(state.params, k_draw, num_draws)
        return Fit(state.params, z, loss, {"final_loss": loss[-1]})


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
