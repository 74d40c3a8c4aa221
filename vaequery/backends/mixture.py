r"""Gaussian-mixture variational inference (QAVI "Mix.").

For one query,

.. math::
    q_\lambda(z) = \sum_{k=1}^K \pi_k \prod_{j=1}^d
    \mathcal N(z_j;\ \mu_{kj}, \sigma_{kj}^2),\qquad
    \pi = \operatorname{softmax}(\alpha),

fitted by maximising the β-ELBO
:math:`\mathcal L = \mathbb E_q[f_\lambda(z)]`,
:math:`f_\lambda(z) = \log p(x_O\mid z) + \beta\log p(z) - \beta\log q_\lambda(z)`.
A draw is ancestral: :math:`k \sim \operatorname{Cat}(\pi)`,
:math:`z = \mu_k + \sigma_k\odot\varepsilon`. The component index is discrete,
so the gradient is estimated in two parts, both unbiased.

**Means and scales: implicit reparameterisation** (Figurnov et al. 2018, with
Graves' 2016 distributional transform). The map
:math:`F_\lambda(z) = (F_1(z_1), F_2(z_2\mid z_1), \dots, F_d(z_d\mid z_{<d}))`
of conditional CDFs sends :math:`q_\lambda` to the uniform distribution on
:math:`[0,1]^d`, and for a diagonal-component mixture each conditional is again a
mixture,

.. math::
    F_j(z_j\mid z_{<j}) = \sum_k w_{kj}(z_{<j})\,
    \Phi\!\Big(\frac{z_j-\mu_{kj}}{\sigma_{kj}}\Big),\qquad
    w_{kj}(z_{<j}) \propto \pi_k\prod_{i<j}\mathcal N(z_i;\mu_{ki},\sigma_{ki}^2),

with conditional density :math:`q_j(z_j\mid z_{<j}) = \sum_k w_{kj}\,
\mathcal N(z_j;\mu_{kj},\sigma_{kj}^2)`. Holding :math:`F_\lambda(z)` fixed
gives the implicit-function gradient, solved dimension by dimension,

.. math::
    \frac{dz_j}{d\theta} = -\frac{1}{q_j(z_j\mid z_{<j})}\Big(
    \frac{\partial F_j}{\partial\theta}
    + \sum_{i<j}\frac{\partial F_j}{\partial z_i}\frac{dz_i}{d\theta}\Big),
    \qquad \theta\in\{\mu,\log\sigma\}.

It is implemented by the surrogate
:math:`\tilde z_j = z_j - \big(F_j(z_j\mid\tilde z_{<j}) -
\bot F_j\big)/\bot q_j` (:math:`\bot` = stop-gradient; value :math:`z_j`,
derivative as above), in a ``lax.scan`` over the ``d`` dimensions, with the
weights :math:`\pi` held fixed inside :math:`F` (their gradient is the next part).

**Weights: importance-sampling (score) gradient** (Ścibior et al. 2021). Each
draw's contribution is multiplied by :math:`\pi_{k_s}/\bot\pi_{k_s}`, whose value
is 1 and whose gradient is :math:`\nabla_\alpha\log\pi_{k_s}`. With ``S`` draws
and the leave-one-out baseline :math:`b_s = \frac1{S-1}\sum_{t\ne s} f(z_t)`
(independent of draw ``s``, so the estimate stays unbiased), the surrogate
objective is

.. math::
    \hat{\mathcal L} = \frac1S\sum_s \Big[f_\lambda(\tilde z_s)
    + \Big(\frac{\pi_{k_s}}{\bot\pi_{k_s}} - 1\Big)\,\bot\big(f(z_s) - b_s\big)\Big],

whose value is the plain Monte-Carlo ELBO and whose gradient is
:math:`\frac1S\sum_s[\nabla_z f\cdot d\tilde z_s/d\lambda + \partial_\lambda
f_\lambda(z_s) + \nabla_\alpha\log\pi_{k_s}(f(z_s)-b_s)]`, an unbiased
estimate of :math:`\nabla_\lambda\mathcal L` (``tests/test_mixture_gradient.py``
checks it against autodiff of a grid-quadrature ELBO). Note that QAVI's released
code instead multiplies the *draw* by a "magic box" factor, which gives
:math:`f'(z)\,z\,\nabla\log q` rather than this score form.

**Optimisation** (QAVI's settings except the first): ``K = 10``; means and
log-scales by Adam at lr 0.3 halved every 60 steps (QAVI: 1.0 every 30); logits
by Adam at lr 0.1 with the same halving, frozen for the first 200 steps; means start at the
encoder's mean (the prior's 0 without an encoder) plus ``U(-1, 1)`` noise, scales
at the encoder's (1 without). vaequery uses ``0.3 U(-1, 1)`` times the encoder's
scale instead: QAVI's final runs had a 1-D latent, and with the 16-D
breast-cancer model (64 queries) unscaled ``U(-1, 1)`` offsets left the
mixture's final −ELBO 3 nats *worse* than mean-field's (72.6 vs 69.5); 0.3 times
the scale gives 69.46. Smaller spreads do better there (0.1: 69.18) but start
the components too close together to find both modes of a bimodal posterior
(``tests/test_vi_grid.py``: KL 0.48 at 0.1, 0.25 at 0.3, 0.15 at 1.0). Pass
``init_spread`` to change it. At steps 0, 20, ..., 100, if a weight fell below
0.01, all logits are reset to 0 and the collapsed components get fresh random
means and scales (and zeroed Adam moments). ``S = 100``, ``T = 300``. With
these defaults the weights cannot move before step 200, so the re-initialisation
only acts when ``freeze_weights < reinit_until`` (as in QAVI's settings, it is
then a safeguard rather than part of every fit).
QAVI starts from the encoder; from the prior (a model without encoder) its
1.0/30 schedule measured badly on the linear-Gaussian oracle (64 queries, d = 3,
D = 8): fitted means up to 0.93 posterior sd off and a few components collapsed
to scales of 1e-4, against 0.07 sd with 0.3/60. Pass ``learning_rate=1.0,
halve_every=30`` for QAVI's exact setting.
L-BFGS is not offered: the estimator is stochastic by design (the discrete
component draws make even a fixed-noise objective piecewise constant in the
weights).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import logsumexp, ndtr
from jax.scipy.stats import norm

from vaequery.backends._base import VIBackend, _check_int, register

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def mixture_log_prob(params, z):
    """``log q(z)`` of a diagonal Gaussian mixture; ``z: [..., d]`` -> ``[...]``."""
    loc, log_scale = params["loc"], params["log_scale"]
    logp = jax.nn.log_softmax(params["logits"])
    u = (z[..., None, :] - loc) * jnp.exp(-log_scale)
    comp = jnp.sum(-0.5 * u**2 - log_scale - _LOG_SQRT_2PI, -1)
    return logsumexp(logp + comp, -1)


def implicit_reparam(z, loc, log_scale, log_weights):
    r"""Draws ``z [S, d]`` with implicit-reparameterisation gradients.

    Returns an array equal to ``z`` whose derivatives with respect to ``loc``
    and ``log_scale`` (both ``[K, d]``) are those of the distributional
    transform (see the module docstring); ``log_weights [K]`` are treated as
    constants.
    """
    sg = jax.lax.stop_gradient
    z = sg(z)
    scale = jnp.exp(log_scale)
    log_weights = sg(log_weights)

    def body(logw, xs):  # logw [S, K]: log pi_k + sum_{i<j} log N(z~_i; mu_ki, s_ki)
        zj, mu, s = xs  # [S], [K], [K]
        w = jax.nn.softmax(logw, -1)
        u = (zj[:, None] - mu) / s
        cdf = jnp.sum(w * ndtr(u), -1)
        dens = jnp.sum(w * jnp.exp(-0.5 * u**2) / s, -1) / math.sqrt(2 * math.pi)
        zt = zj - (cdf - sg(cdf)) / sg(jnp.maximum(dens, 1e-30))
        return logw + norm.logpdf(zt[:, None], mu, s), zt

    logw0 = jnp.broadcast_to(log_weights, (z.shape[0], loc.shape[0]))
    _, zt = jax.lax.scan(body, logw0, (z.T, loc.T, scale.T))
    return zt.T


@register("mixture")
class Mixture(VIBackend):
    """K-component diagonal Gaussian mixture VI (see the module docstring).

    Parameters
    ----------
    num_steps : int, default 300
    num_samples : int, default 100
        Ancestral draws per step (each with its own component index).
    learning_rate : float or optax schedule, default 0.3
        Adam step size of the means and log-scales; a float is halved every
        ``halve_every`` steps (QAVI: 1.0, see the module docstring).
    beta : float, default 1.0
    num_components : int, default 10
    weight_learning_rate : float, default 0.1
        Adam step size of the logits (same halving).
    freeze_weights : int, default 200
        Steps during which the logits stay fixed.
    halve_every : int, default 60
        QAVI: 30.
    reinit_every : int, default 20
    reinit_until : int, default 100
        Collapsed components are re-initialised after steps
        ``0, reinit_every, ..., reinit_until``.
    reinit_threshold : float, default 0.01
        A component whose weight is below this has collapsed.
    init_spread : float, default 0.3
        Initial means are the encoder's (or 0) plus ``U(-1, 1) * init_spread``
        times the encoder's scale (1 without an encoder).
    init : str, default "auto"
        Centre and scale of the initial components (see
        :class:`~vaequery.backends.VIBackend`).
    """

    learning_rate: Any = 0.3
    num_components: int = 10
    weight_learning_rate: float = 0.1
    freeze_weights: int = 200
    halve_every: int = 60
    reinit_every: int = 20
    reinit_until: int = 100
    reinit_threshold: float = 0.01
    init_spread: float = 0.3

    def __check_init__(self):
        _check_int("num_components", self.num_components, 1)
        _check_int("freeze_weights", self.freeze_weights, 0)
        _check_int("halve_every", self.halve_every, 1)
        _check_int("reinit_every", self.reinit_every, 1)
        _check_int("reinit_until", self.reinit_until, -1)
        if self.optimizer != "adam":
            raise ValueError(
                "the mixture backend's gradient estimator is stochastic by design; "
                f"optimizer must be 'adam', got {self.optimizer!r}"
            )
        if not 0 <= self.reinit_threshold < 1:
            raise ValueError(f"reinit_threshold must be in [0, 1), got {self.reinit_threshold}")
        if not self.weight_learning_rate >= 0:
            raise ValueError(f"weight_learning_rate must be >= 0, got {self.weight_learning_rate}")

    # ------------------------------------------------------------ params
    def _init_components(self, key, target, row):
        d, K = target.latent_dim, self.num_components
        loc, log_scale = self.start_loc_log_scale(target, row)
        noise = jax.random.uniform(key, (K, d), minval=-1.0, maxval=1.0)
        # the spread is in units of the encoder's scale: QAVI's U(-1, 1) was set for
        # a 1-D latent and puts 16-D components far outside a narrow posterior
        spread = self.init_spread * jnp.exp(log_scale)
        return loc + spread * noise, jnp.broadcast_to(log_scale, (K, d))

    def init_params(self, key, target, row):
        loc, log_scale = self._init_components(key, target, row)
        return {"loc": loc, "log_scale": log_scale, "logits": jnp.zeros(self.num_components)}

    def adam(self):
        def halving(lr):
            if callable(lr):
                return lr
            return optax.exponential_decay(lr, self.halve_every, 0.5, staircase=True)

        base = halving(self.weight_learning_rate)

        def weight_lr(count):
            return jnp.where(count < self.freeze_weights, 0.0, base(count))

        return optax.multi_transform(
            {
                "components": optax.adam(halving(self.learning_rate)),
                "weights": optax.adam(weight_lr),
            },
            {"loc": "components", "log_scale": "components", "logits": "weights"},
        )

    # ------------------------------------------------------------ sampling
    def sample_and_log_prob(self, params, key, n):
        kc, ke = jax.random.split(key)
        loc, log_scale = params["loc"], params["log_scale"]
        comp = jax.random.categorical(kc, params["logits"], shape=(n,))
        eps = jax.random.normal(ke, (n, loc.shape[-1]))
        z = loc[comp] + jnp.exp(log_scale[comp]) * eps
        return z, mixture_log_prob(params, z)

    def loss_fn(self, params, key, target, row):
        """Negative surrogate ELBO: value = MC negative ELBO, gradient = the estimator."""
        sg = jax.lax.stop_gradient
        S = self.num_samples
        kc, ke = jax.random.split(key)
        loc, log_scale = params["loc"], params["log_scale"]
        logp = jax.nn.log_softmax(params["logits"])
        comp = jax.random.categorical(kc, sg(logp), shape=(S,))
        eps = jax.random.normal(ke, (S, loc.shape[-1]))
        z0 = sg(loc[comp] + jnp.exp(log_scale[comp]) * eps)
        z = implicit_reparam(z0, loc, log_scale, logp)
        log_joint = jax.vmap(target.logdensity_fn, (0, None))(z, row)
        if self.beta != 1.0:
            log_prior = jax.vmap(target.logprior_fn, (0, None))(z, row)
            log_joint = log_joint + (self.beta - 1.0) * log_prior
        f = log_joint - self.beta * mixture_log_prob(params, z)
        fs = sg(f)
        baseline = (jnp.sum(fs) - fs) / (S - 1) if S > 1 else jnp.zeros_like(fs)
        w = jnp.exp(logp[comp])
        surrogate = jnp.mean(f) + jnp.mean((w / sg(w) - 1.0) * (fs - baseline))
        return -surrogate

    # ------------------------------------------------------------ re-init
    def after_step(self, state, i, key, target, row):
        params = state.params
        weights = jax.nn.softmax(params["logits"])
        collapsed = weights < self.reinit_threshold
        due = (i % self.reinit_every == 0) & (i <= self.reinit_until) & jnp.any(collapsed)
        fresh_loc, fresh_ls = self._init_components(key, target, row)
        reset = due & collapsed  # [K]

        def rows(new, old):
            return jnp.where(reset[:, None], new, old)

        new_params = {
            "loc": rows(fresh_loc, params["loc"]),
            "log_scale": rows(fresh_ls, params["log_scale"]),
            "logits": jnp.where(due, 0.0, params["logits"]),
        }

        # zero the Adam moments of what was reset (step counts are scalars: kept)
        def reset_moments(a):
            if not hasattr(a, "ndim") or a.ndim == 0:
                return a
            if a.ndim == 2:
                return jnp.where(reset[:, None], 0.0, a)
            return jnp.where(due, 0.0, a)

        opt_state = jax.tree.map(reset_moments, state.opt_state)
        return type(state)(new_params, opt_state)
