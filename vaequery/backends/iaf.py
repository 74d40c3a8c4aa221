r"""Inverse autoregressive flow variational inference (QAVI "Flow").

For one query the approximation is a Gaussian base pushed through a flowjax
bijection :math:`T_\lambda`,

.. math::
    u = m + s\odot\varepsilon,\quad \varepsilon\sim\mathcal N(0, I),\qquad
    z = T_\lambda(u),\qquad
    \log q(z) = \log\mathcal N(\varepsilon; 0, I) - \textstyle\sum_j \log s_j
    - \log\lvert\det \partial T_\lambda/\partial u\rvert,

and the β-ELBO of :class:`vaequery.backends.VIBackend` is estimated with these
reparameterised draws (the entropy by Monte Carlo, :math:`-\frac1S\sum_s\log q(z_s)`).

For ``"iaf"``, :math:`T_\lambda` is flowjax's
``masked_autoregressive_flow(..., invert=False)``: affine autoregressive layers
(MADE conditioners) evaluated in the sampling direction, i.e. an IAF, so drawing
``z`` and its log-density needs one forward pass. QAVI's tabular setting for the
flow: 2 layers, MADE hidden layers ``[8, 8]``, Adam lr 0.01 (here a peak of 0.03
with cosine decay), ``S = 100``, ``T = 300``; vaequery's default budget is
``S = 32``, ``T = 600`` (below).

Two departures from QAVI make the family contain ``"fullrank"`` in practice, not
only in principle. (1) The base is a *trained full-covariance* Gaussian,
:math:`u = m + L\varepsilon` (started at the encoder's output, or the prior,
or a guide; Adam peak 0.3 as ``"fullrank"``), where QAVI fixes a diagonal base
at the encoder's output. (2) The flow starts as the identity: each conditioner's
output layer is zeroed, and a final permutation undoes flowjax's permutations
between layers, so the first ``q`` is exactly the start Gaussian and the flow
only has to learn what a Gaussian cannot. Measured on linear-Gaussian posteriors
(d = 3, D = 8, σ = 0.3, half observed, 64 queries, 2,000 draws;
``benchmarks/mixture_modes.py``): QAVI's setting left one query's posterior
correlation 0.40 off (random MADE initialisation, dead ReLU units; the base
fixed at the prior makes the flow do all the work); with both changes the
largest error is 0.06, as ``"fullrank"``'s 0.07. On the shipped breast-cancer
model (64 test rows, half observed) the mean final −ELBO went from 9.26 to 8.90
(full-rank 8.65, mean-field 9.32).

The budget: ``T = 600`` steps of ``S = 32`` draws, not QAVI's 300 of 100. The
flow and its base converge slowly (the flow's steps are small, so that it
stays near the identity where a Gaussian suffices), and more, noisier steps
beat fewer, precise ones at equal or lower cost. Measured on linear-Gaussian
oracles the tests do not use (32 queries each, half observed, 2,000 draws; the
largest posterior-correlation error, then the noise floor of exact draws):
d = 5, D = 12, σ = 0.15: 0.145 → 0.075 (floor 0.085, ``"fullrank"`` 0.091);
d = 2, D = 6, σ = 0.05: 0.159 → 0.076 (``"fullrank"`` 0.115); d = 3, D = 8,
σ = 0.3: 0.047 → 0.068 (floor 0.057). On the bimodal oracle of
``tests/test_vi_grid.py`` KL(q‖p) fell from 0.81 to 0.72 nats; on 200
breast-cancer queries the mean final −ELBO from 64.52 to 64.42, at 0.98× the
CPU time of ``"gaussian"`` (was 0.64×). A peak flow learning rate of 0.01
(QAVI's) instead loses multimodal accuracy (KL 0.83, IWAE error 22 nats).
QAVI's own setting is a subclass with
``base = "fixed"`` run with ``identity_init=False, base_learning_rate=None``
(as ``benchmarks/mixture_modes.py`` does).

Implementation notes. One flow is built per query from the row's key inside
``run_one`` (:func:`vaequery.fit.run` vmaps over rows), so its integer MADE
masks and permutations are per-row arrays; they ride in the parameter pytree
and only the inexact, trainable leaves are optimised
(:func:`vaequery.backends._base.split_trainable`). The fitted state kept by the
:class:`~vaequery.Posterior` holds only arrays; the flow's non-array structure is
rebuilt from a template flow (built from a fixed key) when sampling.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from vaequery.backends._base import VIBackend, _check_int, register
from vaequery.backends.gaussian import _schedule


class FlowBackend(VIBackend):
    """Gaussian base + flowjax bijection (shared by ``"iaf"`` and ``"planar"``).

    Subclasses supply :meth:`build_bijection` and say which base they train
    (``base``).
    """

    #: the base Gaussian: ``"fixed"`` at the start, ``"diag"`` (trained mean and
    #: scales) or ``"full"`` (trained mean and Cholesky factor)
    base = "diag"
    #: peak learning rate of the base when it has its own (``None``: the flow's)
    base_learning_rate = None

    def adam(self):
        flow = optax.adam(_schedule(self.learning_rate, self.num_steps))
        if self.base_learning_rate is None:
            return flow
        base = optax.adam(_schedule(self.base_learning_rate, self.num_steps))
        return optax.multi_transform(
            {"flow": flow, "base": base},
            lambda params: {k: "flow" if k == "flow" else "base" for k in params},
        )

    def build_bijection(self, key, dim: int):
        """A flowjax bijection on ``R^dim`` (its sampling direction)."""
        raise NotImplementedError

    def init_params(self, key, target, row):
        d = target.latent_dim
        # Only the row's weights: masks and permutations come from the template
        # in _bijection, so they are constants of the compiled program, not
        # per-row index arrays, and the fitted state holds weights only.
        flow = eqx.filter(self.build_bijection(key, d), eqx.is_inexact_array)
        if self.base == "full":
            loc, tril = self.start(target, row)
            log_diag = jnp.log(jnp.abs(jnp.diagonal(tril)))
            return {"loc": loc, "log_diag": log_diag, "off_diag": jnp.tril(tril, -1), "flow": flow}
        loc, log_scale = self.start_loc_log_scale(target, row)
        return {"loc": loc, "log_scale": log_scale, "flow": flow}

    def _bijection(self, params):
        """The bijection from ``params`` (full, or arrays only as exported)."""
        d = params["loc"].shape[-1]
        # The template is built in the caller's trace: flowjax closures hold
        # arrays (the affine transformer's ravelled initial value), which must not
        # leak from a separate trace such as eqx.filter_eval_shape. XLA removes
        # the unused template weights.
        template = self.build_bijection(jax.random.key(0), d)
        static = eqx.filter(template, eqx.is_inexact_array, inverse=True)
        return eqx.combine(eqx.filter(params["flow"], eqx.is_inexact_array), static)

    def sample_and_log_prob(self, params, key, n):
        loc = params["loc"]
        d = loc.shape[-1]
        eps = jax.random.normal(key, (n, d))
        if self.base == "full":
            log_diag = params["log_diag"]
            chol = jnp.tril(params["off_diag"], -1) + jnp.diag(jnp.exp(log_diag))
            u = loc + eps @ chol.T
        else:
            log_diag = params["log_scale"]
            if self.base == "fixed":
                loc, log_diag = jax.lax.stop_gradient((loc, log_diag))
            u = loc + jnp.exp(log_diag) * eps
        z, log_det = jax.vmap(self._bijection(params).transform_and_log_det)(u)
        log_q = (
            -0.5 * jnp.sum(eps**2, -1)
            - 0.5 * d * math.log(2 * math.pi)
            - jnp.sum(log_diag)
            - log_det
        )
        return z, log_q


@register("iaf")
class IAF(FlowBackend):
    """Inverse autoregressive flow VI (flowjax masked autoregressive, ``invert=False``).

    Parameters
    ----------
    num_steps : int, default 600
    num_samples : int, default 32
        Twice QAVI's steps with a third of its draws per step (module
        docstring: as fast, and more accurate).
    learning_rate : float or optax schedule, default 0.03
        A float is the peak of a cosine decay to 1 % (see the module
        docstring); QAVI's constant 0.01 is ``optax.constant_schedule(0.01)``.
    beta : float, default 1.0
    optimizer : {"adam", "lbfgs"}, default "adam"
    num_layers : int, default 2
        Autoregressive affine layers (QAVI: 2).
    hidden_width : int, default 8
        Width of each MADE hidden layer (QAVI: 8; 320 for images).
    hidden_depth : int, default 2
        Number of MADE hidden layers (QAVI: ``[8, 8]``).
    base_learning_rate : float or optax schedule, default 0.3
        Adam step size of the base's mean and Cholesky factor (a float is the
        peak of a cosine decay, as ``"fullrank"``).
    identity_init : bool, default True
        Start the flow at the identity map (module docstring).
    init : str, default "auto"
        Start of the base Gaussian: the encoder's output when the model has one
        (QAVI), else the prior; or another start (see
        :class:`~vaequery.backends.VIBackend`).
    """

    num_steps: int = 600
    num_samples: int = 32
    learning_rate: Any = 0.03
    num_layers: int = 2
    hidden_width: int = 8
    hidden_depth: int = 2
    base_learning_rate: Any = 0.3
    identity_init: bool = True

    base = "full"

    def __check_init__(self):
        _check_int("num_layers", self.num_layers, 1)
        _check_int("hidden_width", self.hidden_width, 1)
        _check_int("hidden_depth", self.hidden_depth, 0)

    def build_bijection(self, key, dim):
        from flowjax.distributions import StandardNormal
        from flowjax.flows import masked_autoregressive_flow

        flow = masked_autoregressive_flow(
            key,
            base_dist=StandardNormal((dim,)),
            flow_layers=self.num_layers,
            nn_width=self.hidden_width,
            nn_depth=self.hidden_depth,
            invert=False,
        )
        return _identity_ordered(flow.bijection, dim, self.identity_init)


def _identity_ordered(bijection, dim, identity_init):
    """``bijection`` followed by the permutation that undoes its layers' permutations.

    flowjax permutes the coordinates between (and after) the autoregressive
    layers; with the conditioners' output layers zeroed the whole map is that
    permutation, found by transforming ``0, 1, ..., d-1``. Undoing it makes the
    output coordinates those of the base, so the base's start (the encoder's
    or a guide's mean and covariance) is the initial ``q`` itself. With
    ``identity_init`` the zeroed flow is returned (the identity map at the start).
    """
    from flowjax.bijections import Chain, Permute

    zeroed = _zero_last_layers(bijection)
    if dim == 1:
        return zeroed if identity_init else bijection
    perm = jnp.round(zeroed.transform(jnp.arange(dim, dtype=jnp.float32))).astype(int)
    return Chain([zeroed if identity_init else bijection, Permute(jnp.argsort(perm))])


def _zero_last_layers(bijection):
    """The flow with each conditioner's output layer zeroed: the identity map."""

    from flowjax.bijections import Chain

    def last_linear(b):  # b: Scan over (MaskedAutoregressive [+ permutation]) layers
        layer = b.bijection
        if isinstance(layer, Chain):
            layer = layer.bijections[0]
        return layer.masked_autoregressive_mlp.layers[-1]

    last = last_linear(bijection)
    # the weight is paramax.Parameterize(jnp.where, mask, weight, 0)
    return eqx.tree_at(
        lambda b: (last_linear(b).weight.args[1], last_linear(b).bias),
        bijection,
        (jnp.zeros_like(last.weight.args[1]), jnp.zeros_like(last.bias)),
    )
