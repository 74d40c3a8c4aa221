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
``z`` and its log-density needs one forward pass. QAVI's tabular setting is the
default: 2 layers, MADE hidden layers ``[8, 8]``, Adam lr 0.01, ``S = 100``,
``T = 300``, base Gaussian fixed at the encoder's output (at the prior when the
model has no encoder).

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

    Subclasses supply :meth:`build_bijection` and say whether the base's mean
    and scale are trained (``train_base``).
    """

    #: whether the base Gaussian's mean and log-scale are optimised
    train_base = False

    def adam(self):
        return optax.adam(_schedule(self.learning_rate, self.num_steps))

    def build_bijection(self, key, dim: int):
        """A flowjax bijection on ``R^dim`` (its sampling direction)."""
        raise NotImplementedError

    def init_params(self, key, target, row):
        d = target.latent_dim
        loc, log_scale = self.start_loc_log_scale(target, row)
        return {"loc": loc, "log_scale": log_scale, "flow": self.build_bijection(key, d)}

    def _bijection(self, params):
        """The bijection from ``params`` (full, or arrays only as exported)."""
        d = params["loc"].shape[-1]
        # The template is built in the caller's trace: flowjax closures hold
        # arrays (the affine transformer's ravelled initial value), which must not
        # leak from a separate trace such as eqx.filter_eval_shape. XLA removes
        # the unused template weights.
        template = self.build_bijection(jax.random.key(0), d)
        static = eqx.filter(template, eqx.is_array, inverse=True)
        return eqx.combine(eqx.filter(params["flow"], eqx.is_array), static)

    def sample_and_log_prob(self, params, key, n):
        loc, log_scale = params["loc"], params["log_scale"]
        if not self.train_base:
            loc, log_scale = jax.lax.stop_gradient((loc, log_scale))
        d = loc.shape[-1]
        eps = jax.random.normal(key, (n, d))
        u = loc + jnp.exp(log_scale) * eps
        z, log_det = jax.vmap(self._bijection(params).transform_and_log_det)(u)
        log_q = (
            -0.5 * jnp.sum(eps**2, -1)
            - 0.5 * d * math.log(2 * math.pi)
            - jnp.sum(log_scale)
            - log_det
        )
        return z, log_q


@register("iaf")
class IAF(FlowBackend):
    """Inverse autoregressive flow VI (flowjax masked autoregressive, ``invert=False``).

    Parameters
    ----------
    num_steps : int, default 300
    num_samples : int, default 100
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
    init : str, default "auto"
        Where the base Gaussian is fixed: the encoder's output when the model
        has one (QAVI), else the prior; or another start (see
        :class:`~vaequery.backends.VIBackend`).
    """

    learning_rate: Any = 0.03
    num_layers: int = 2
    hidden_width: int = 8
    hidden_depth: int = 2

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
        return flow.bijection
