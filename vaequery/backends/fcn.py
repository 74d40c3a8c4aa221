r"""Fully connected prior network (Wu, Domke & Sanner, "FCN", §3.4).

For one query the approximation pushes a Gaussian base through a small
fully connected network,

.. math::
    u = m + L\varepsilon,\quad \varepsilon\sim\mathcal N(0, I),\qquad
    z = T_\lambda(u) = u + V\,h_K(u),\quad
    h_k = \tanh(A_k h_{k-1} + c_k),\ h_0 = u,

with :math:`\log q(z) = \log\mathcal N(\varepsilon; 0, I) - \sum_j \log L_{jj}
- \log\lvert\det \partial T_\lambda/\partial u\rvert`. The Jacobian is formed
whole (``jax.jacfwd``, one forward pass per latent dimension, then
``slogdet``), which is why Wu et al. use the FCN only for small latents; the
cost grows as :math:`d^3` per draw.

**The bound is not guaranteed.** The change-of-variables formula, and with it
the β-ELBO of :class:`vaequery.backends.VIBackend` and every IWAE estimate,
assume :math:`T_\lambda` is invertible. Nothing constrains a fully connected
network to be: where it folds the space, :math:`\log q` is wrong (too low, so
the reported ELBO can exceed :math:`\log p(x_O)`). Wu et al. say the same and use
the FCN as a point of reference; use ``"iaf"`` or ``"planar"`` (invertible by
construction) when the number matters. The draws are still draws of *a*
distribution: their quality can be judged against an exact posterior.

Two choices follow ``"iaf"`` (see its module docstring): the base is a trained
full-covariance Gaussian started at the encoder's output, the prior, a guide or
a previous posterior; and the network starts as the identity (``V = 0``), so
the first ``q`` is the start Gaussian and the network learns only what a
Gaussian cannot. Wu et al.'s FCN maps ε to z directly; the residual ``u + V h``
is that network with a skip connection, which contains their GVI at the start.

Defaults (``T = 600``, ``S = 32``, one hidden layer of 16, peak lr 0.01 for the
network). Measured on linear-Gaussian posteriors (24 queries each, half
observed, 2,000 draws; largest posterior-correlation error, range of marginal
variance ratios): d = 3, D = 8, σ = 0.3: 0.075, [0.90, 1.09]; d = 4, D = 10,
σ = 0.6: 0.072, [0.91, 1.09] (``"fullrank"``: 0.062 and 0.062). A width of 32
at peak lr 0.03 left a correlation 0.24 off and a variance ratio of 0.73 on the
first. On narrow posteriors (d = 2, D = 6, σ = 0.1) one query's variance ratio
was 0.60, a shortfall of the full-rank base it shares with ``"fullrank"``
(0.55–1.42 there). On the bimodal oracle of ``tests/test_vi_grid.py`` the estimated
KL(q‖p) is 0.76 nats (``"iaf"`` 0.72, ``"gaussian"`` 1.63), an estimate that
trusts the change of variables, so only indicative.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from vaequery.backends._base import _check_int, register
from vaequery.backends.iaf import FlowBackend


class ResidualMLP(eqx.Module):
    """``T(u) = u + V h_K(u)`` with ``tanh`` hidden layers, and its log-Jacobian.

    Parameters
    ----------
    key : jax PRNG key
        Initialises the hidden layers (LeCun-normal weights, zero biases).
    dim : int
        Latent dimension ``d`` (input and output).
    width : int
        Hidden width.
    depth : int
        Number of hidden layers ``K`` (at least 1).
    """

    weights: list
    biases: list
    out: jax.Array

    def __init__(self, key, dim: int, width: int, depth: int):
        keys = jax.random.split(key, depth)
        sizes = [dim] + [width] * depth
        self.weights = [
            jax.random.normal(k, (o, i)) / jnp.sqrt(i)
            for k, i, o in zip(keys, sizes[:-1], sizes[1:])
        ]
        self.biases = [jnp.zeros(o) for o in sizes[1:]]
        self.out = jnp.zeros((dim, width))

    def transform(self, u):
        """``T(u)`` for one point ``u [d]``."""
        h = u
        for w, b in zip(self.weights, self.biases):
            h = jnp.tanh(w @ h + b)
        return u + self.out @ h

    def transform_and_log_det(self, u):
        """``T(u)`` and ``log |det dT/du|`` (the full Jacobian, ``slogdet``)."""
        jac = jax.jacfwd(self.transform)(u)
        _, log_det = jnp.linalg.slogdet(jac)
        return self.transform(u), log_det


@register("fcn")
class FCN(FlowBackend):
    """Fully connected prior network on a trained full-covariance Gaussian base.

    See the module docstring: the ELBO is a valid bound only where the network
    is invertible, which nothing enforces.

    Parameters
    ----------
    num_steps : int, default 600
    num_samples : int, default 32
        The budget of ``"iaf"``.
    learning_rate : float or optax schedule, default 0.01
        Peak of a cosine decay to 1 % for the network's weights (module
        docstring: at 0.03 a width-32 network distorted a Gaussian posterior).
    beta : float, default 1.0
    optimizer : {"adam", "lbfgs"}, default "adam"
    hidden_width : int, default 16
        Width of each hidden layer.
    hidden_depth : int, default 1
        Number of ``tanh`` hidden layers.
    base_learning_rate : float or optax schedule, default 0.3
        Adam step size of the base's mean and Cholesky factor (as ``"fullrank"``).
    init : str, default "auto"
        Start of the base Gaussian (see :class:`~vaequery.backends.VIBackend`).
    """

    num_steps: int = 600
    num_samples: int = 32
    learning_rate: Any = 0.01
    hidden_width: int = 16
    hidden_depth: int = 1
    base_learning_rate: Any = 0.3

    base = "full"

    def __check_init__(self):
        _check_int("hidden_width", self.hidden_width, 1)
        _check_int("hidden_depth", self.hidden_depth, 1)

    def build_bijection(self, key, dim):
        return ResidualMLP(key, dim, self.hidden_width, self.hidden_depth)
