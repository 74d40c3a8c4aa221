r"""Gaussian-mixture variational inference (QAVI "Mix.").

For one query,

.. math::
    q_\lambda(z) = \sum_{k=1}^K \pi_k\, q_k(z),\qquad q_k(z) = \prod_{j=1}^d
    \mathcal N(z_j;\ \mu_{kj}, \sigma_{kj}^2),\qquad
    \pi = \operatorname{softmax}(\alpha),

fitted by maximising the β-ELBO
:math:`\mathcal L = \mathbb E_q[f_\lambda(z)]`,
:math:`f_\lambda(z) = \log p(x_O\mid z) + \beta\log p(z) - \beta\log q_\lambda(z)`.

Gradient estimators
-------------------
``estimator="stratified"`` (the default). The ELBO is a weighted sum over
components, :math:`\mathcal L = \sum_k \pi_k\,\mathbb E_{q_k}[f_\lambda(z)]`, so
each component gets its own ``m = ⌈S/K⌉`` reparameterised draws
:math:`z_{ks} = \mu_k + \sigma_k\odot\varepsilon_{ks}` and

.. math::
    \hat{\mathcal L} = \sum_k \pi_k\,\frac1m\sum_s f_\lambda(z_{ks})

is differentiated directly: path-wise gradients for the means and scales, the
exact derivative of the :math:`\pi_k` factors for the weights (no score
function), unbiased (``tests/test_mixture_gradient.py`` checks it against
autodiff of a grid-quadrature ELBO). Each component's mean and log-scale
gradient is divided by :math:`\pi_k` (the natural-gradient scaling of Lin, Khan
& Schmidt 2019), so a component whose weight has dropped keeps learning at the
rate of the others instead of freezing where it is. ``S`` is rounded up to a
multiple of ``K``.

``estimator="implicit"`` is QAVI's: one ancestral draw per sample
(:math:`k\sim\operatorname{Cat}(\pi)`, :math:`z = \mu_k + \sigma_k\odot
\varepsilon`), implicit-reparameterisation gradients for the means and scales
(Figurnov et al. 2018, with Graves' 2016 distributional transform: the
conditional mixture CDFs :math:`F_j(z_j\mid z_{<j})` are held fixed and the
implicit-function gradient is solved dimension by dimension in a ``lax.scan``,
see :func:`implicit_reparam`), and an importance-sampling (score) gradient for
the weights with a leave-one-out baseline (Ścibior et al. 2021). QAVI's
released code multiplies the *draw* by its "magic box" factor, which gives
:math:`f'(z)\,z\,\nabla\log q` rather than this score form. It is kept to
reproduce QAVI (pass ``estimator="implicit", freeze_weights=200,
learning_rate=1.0, halve_every=30``).

Why stratified is the default (measured, ``benchmarks/mixture_modes.py``). On a
family of multimodal 2-D oracles (x₀ = z₁², 2|z₁|, z₁z₂, 0.3(z₁² + z₂²), (z₁², z₂²)
with four modes, z₁² plus weak linear evidence for unequal masses, and a thin ring
z₁² + z₂²; 12 queries each, exact masses and likelihoods by grid quadrature) the
implicit estimator with its 200-step logit freeze left the mass share of a mode
off by 0.05-0.28 on average per shape (single queries up to a whole mode):
the mass of a mode was the share of components that happened to start on its
side, and the noisy score gradient could not move the weights in the 100 steps
left. With the stratified estimator, no freeze and the final weight refit the
average errors are 0.006-0.05 and the IWAE of log p(x_O) is within 0.06 nats of
the quadrature value on average per shape (0.22 for the thin ring, which ten
diagonal components cannot tile; ``num_components=20, num_samples=200`` gives
0.09). Single queries can still miss a mode: with every component started at the
prior's width near its centre, one four-mode query in six to nine left a quadrant
without a component (mass error 0.25; see the spread start below).

Weights: a final refit
----------------------
For fixed components the ELBO is concave in :math:`\pi`, and its maximiser
satisfies :math:`\mathbb E_{q_k}[\log p(x_O, z) - \log q_\pi(z)] = ` const for
every component with positive weight. After the last step, ``refit_samples``
draws per component are made once and the weights are moved by the
exponentiated-gradient fixed point :math:`\log\pi_k \leftarrow
\log\pi_k + \hat{\mathbb E}_{q_k}[\log p(x_O, z) - \log q_\pi(z)]`
(renormalised, 100 iterations on the same draws; for non-overlapping
components one iteration gives :math:`\pi_k\propto e^{\mathrm{ELBO}_k}`). A
component stuck in a low-density region thus loses its weight, and two modes
found by different numbers of components get their exact shares. It costs
``K × refit_samples`` extra evaluations of the model (about a tenth of a run at
the defaults).

Optimisation
------------
``K = 10`` (QAVI); means and log-scales by Adam at a peak learning rate of 0.3
with cosine decay to 1 % (``halve_every=n`` halves it every ``n`` steps
instead, as QAVI does: 1.0 every 30); Adam's second-moment decay is 0.9 rather
than 0.999 for the components: the first steps' gradients are huge (components
far from a narrow mode) and a long memory keeps the later steps tiny; on the
narrow far modes of the x₀ = z₁² oracle (x₀ = 5.7) components ended 2-4× too
wide with 0.999 and at the exact width with 0.9. Logits by Adam at 0.1 with the
same decay, trained from the start (``freeze_weights=0``).

The start (``init_design="spread"``). Half of the components start at the
encoder's width (the prior's without an encoder), half ``init_narrow_scale =
0.3`` times narrower; each half's means are the encoder's mean plus offsets of
length ``init_spread * sqrt(d)`` (0.3 per coordinate, in units of the encoder's
scale) along directions spread over the sphere by Coulomb repulsion
(:func:`spread_directions`; rotation invariant in law, so no axis is
preferred). Why: a component at the prior's width sees the likelihood smoothed
over its whole width, so on a symmetric posterior (x₀ = z₁², z₂²) its first
steps are pure noise and the side it ends on is a coin toss whatever its start;
ten coins leave a quadrant empty about one time in five. A narrow component
keeps the side it starts on, but starting them all narrow traps them at a
stationary point of the decoder that is no mode (held-out oracle x₀ = z₁(z₁ −
1.5)(z₁ + 1.2): 6 of 36 queries lost a whole mode, IWAE gap 93 nats); the wide
half still smooths over such points. Measured (``benchmarks/mixture_modes.py``,
36 queries per shape): queries with a mode-mass error above 0.1 over nine shapes
(the seven above, the three-mode line and a rotated four-mode pattern, these two
held out) fell from 19 of 324 to 5 (four modes 6 → 1, rotated four 8 → 1, ring
2 → 1, thin ring 2 → 1, mean IWAE gap of the thin ring 0.29 → 0.22). Not
adopted: all components narrow (7, six of them whole modes lost on the held-out
line); axis-aligned sign patterns at the
prior's width (13 on the four-mode, thin-ring and rotated shapes, as before);
the same patterns with narrow components (four modes 0 of 36, but rotated four
5: tuned to the axes).
``init_design="uniform"`` is the previous start (every component at the
encoder's width, offsets ``init_spread * U(-1, 1)``). Spreading all ``K``
directions together (narrow and wide alternating) instead of each half on its
own: four modes 1 → 0 misses of 36, but rotated four 1 → 3 and thin ring 1 → 6;
not adopted.

Re-initialisation: births (``reinit_design="birth"``). At steps 0, 20, ...,
100, if a weight fell below 0.01, all logits are reset to 0 and each collapsed
component is reborn where the target most outweighs the mixture: among
``num_samples`` draws from the start (the prior without an encoder), the one
with the largest :math:`\log p(x_O, z) - \log q(z)`, :math:`q` the mixture of
the kept components (and of the components reborn before it, so a later birth
sees the earlier ones), at ``init_narrow_scale`` times the start's width;
its Adam moments are zeroed. Why: with ``reinit_design="start"`` (the previous
rule) a collapsed component restarts from the start's design, near the prior's
centre, where on the four-mode shape the evidence on a weakly observed
coordinate is flat; restarted at step 100 it rolled to an occupied mode or to
the saddle between two (traced on the one four-mode query of 36 that kept a
quadrant empty). A missed mode is where :math:`p/q` is largest, so a birth lands
in it. Cost: ``num_samples`` model evaluations at each of the six
re-initialisation steps (under 1 % of a run). Measured
(``benchmarks/mixture_modes.py``, 36 queries per shape, nine shapes, the
benchmark's seed): queries with a mode mass error above 0.1 went 5 → 2 (four
modes 1 → 0, and on the held-out shapes three on a line 1 → 0, rotated four
1 → 0; ring and thin ring 1 each, as before); with a second seed 6 → 6 (three on
a line 1 → 0, thin ring 3 → 4; a rotated-four query kept a quadrant empty
with either rule). So births help, but less than one seed suggests: 11 → 8 of
648 over the two seeds. No shape's mean mass error or mean IWAE gap moved
beyond the seed-to-seed spread; linear-Gaussian variance ratios unchanged (1.09,
1.08, 1.09). Known weakness, traced on that rotated-four query: far from every
component :math:`\log q` falls faster than :math:`\log p`, so a birth can land
where q's tails are thinnest rather than where the target's mass is (there
far off every mode, at steps 20-100; the components then collapsed again).
Flooring q at the newborn's own density (score
:math:`\log p - \log(q + \mathcal N(c; c, w^2)/K)`) fixed that query but
erased the difference between covered and uncovered candidates elsewhere:
8 misses at the benchmark's seed, not adopted.
Re-initialising duplicate components (same mean within one scale) at the
start's design cut four-mode misses too but widened the thin ring's IWAE gap
(0.26 → 0.38), and was not adopted.

The thin ring (x₀ = z₁² + z₂², σ = 0.1) is beyond ten diagonal components, and
the cause is the family, not the optimiser: the ring's width is σ/(2r) (0.025
at r = 2), and a diagonal Gaussian can be long only along an axis, so where
the ring runs at 45° a component can be no longer than the ring is wide. The
fitted components gather where the ring runs along an axis (traced: at 0°,
90°, 180°, 270°, up to three each), the arcs between stay uncovered, and the
IWAE gap is about −log of the covered share: 0 for r ≤ 1.1, 0.4-0.8 nats at
r ≈ 2. Its mean over the 36 queries is 0.22-0.33 nats with either
re-initialisation, depending on the seed (three seeds: 0.28 on average with
restarts at the start, 0.26 with births). More components help slowly (12
queries, ``S = 100``, restarts at the start: ``K = 20`` 0.18, ``K = 40`` 0.09
with 0.37 at r = 2), at a higher cost of the weight refit and of ``log q``
(``K × S`` terms); ``K`` stays 10. The issue's goal (0.1 nats per query) would
need components that can turn (full covariance) and still about 20 of them at
r = 2 (a component can follow the curved ring only over an arc of about
:math:`2\sqrt{2 r\,\sigma/(2r)}`).
``S = 100``, ``T = 300``. L-BFGS is not offered: the estimators are stochastic
by design.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import logsumexp, ndtr
from jax.scipy.stats import norm

from vaequery.backends._base import VIBackend, _check_int, beta_log_joint, register

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

#: The gradient estimators of the ``"mixture"`` backend (module docstring).
ESTIMATORS = ("stratified", "implicit")
#: Initial component designs of the ``"mixture"`` backend (module docstring).
INIT_DESIGNS = ("spread", "uniform")
#: Where the ``"mixture"`` backend re-initialises collapsed components.
REINIT_DESIGNS = ("birth", "start")


def mixture_log_prob(params, z):
    """``log q(z)`` of a diagonal Gaussian mixture; ``z: [..., d]`` -> ``[...]``."""
    loc, log_scale = params["loc"], params["log_scale"]
    logp = jax.nn.log_softmax(params["logits"])
    u = (z[..., None, :] - loc) * jnp.exp(-log_scale)
    comp = jnp.sum(-0.5 * u**2 - log_scale - _LOG_SQRT_2PI, -1)
    return logsumexp(logp + comp, -1)


def spread_directions(key, num_components, dim, num_iters=50):
    """``K`` unit vectors ``[K, d]`` spread over the sphere, at a random orientation.

    Gaussian draws, normalised, then ``num_iters`` steps of Coulomb repulsion
    (each point moves along the summed ``(u_i - u_j) / |u_i - u_j|^3`` and is
    projected back to the sphere): no two start close together, and no
    direction is preferred (the pattern is rotation invariant in law).

    Parameters
    ----------
    key : jax.random key
    num_components : int
        ``K``, the number of directions.
    dim : int
        ``d``, the latent dimension.
    num_iters : int, default 50
        Repulsion steps (a ``lax.scan``).

    Returns
    -------
    array ``[K, d]``
        Unit vectors.
    """
    u = jax.random.normal(key, (num_components, dim))
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    eye = jnp.eye(num_components)[:, :, None]

    def body(u, _):
        diff = u[:, None, :] - u[None, :, :]  # [K, K, d]
        r2 = jnp.maximum(jnp.sum(diff**2, -1, keepdims=True), 1e-6) + eye  # d = 1: ties
        force = jnp.sum(diff / r2**1.5 * (1.0 - eye), 1)
        force = force / (jnp.max(jnp.linalg.norm(force, axis=-1), initial=0.0) + 1e-12)
        u = u + 0.1 * force
        return u / jnp.linalg.norm(u, axis=-1, keepdims=True), None

    u, _ = jax.lax.scan(body, u, None, length=num_iters)
    return u


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
        Draws per step: ``⌈S/K⌉`` per component (``"stratified"``) or ``S``
        ancestral draws (``"implicit"``).
    learning_rate : float or optax schedule, default 0.3
        Adam step size of the means and log-scales; a float is the peak of a
        cosine decay to 1 % (or halved every ``halve_every`` steps).
    beta : float, default 1.0
    num_components : int, default 10
    estimator : {"stratified", "implicit"}, default "stratified"
        The gradient estimator (module docstring); ``"implicit"`` is QAVI's.
    weight_learning_rate : float, default 0.1
        Adam step size of the logits (same decay).
    freeze_weights : int, default 0
        Steps during which the logits stay fixed (QAVI: 200).
    halve_every : int, optional
        Halve both learning rates every this many steps instead of the cosine
        decay (QAVI: 30).
    refit_samples : int, default 100
        Draws per component for the final weight refit; 0 turns it off.
    adam_b2 : float, default 0.9
        Adam's second-moment decay for the means and log-scales.
    reinit_every : int, default 20
    reinit_until : int, default 100
        Collapsed components are re-initialised after steps
        ``0, reinit_every, ..., reinit_until`` (-1: never).
    reinit_threshold : float, default 0.01
        A component whose weight is below this has collapsed.
    reinit_design : {"birth", "start"}, default "birth"
        Where a collapsed component restarts: ``"birth"`` at the draw from the
        start with the largest ``log p(x_O, z) - log q(z)`` (module
        docstring), ``"start"`` from the start's design (the previous rule).
    init_spread : float, default 0.3
        Size of the initial offsets from the start's mean, in units of the
        start's scale (the encoder's, 1 without an encoder) per coordinate.
    init_design : {"spread", "uniform"}, default "spread"
        ``"spread"``: half of the components start ``init_narrow_scale``
        times narrower than the start, half at its width; each half's offsets
        point in directions spread over the sphere (:func:`spread_directions`)
        with length ``init_spread * sqrt(d)`` (module docstring).
        ``"uniform"``: offsets ``U(-1, 1) * init_spread`` per coordinate, every
        component at the start's width (the previous default).
    init_narrow_scale : float, default 0.3
        Width of the narrow half relative to the start (``"spread"`` only).
    init : str, default "auto"
        Centre and scale of the initial components (see
        :class:`~vaequery.backends.VIBackend`).
    """

    learning_rate: Any = 0.3
    num_components: int = 10
    estimator: str = "stratified"
    weight_learning_rate: float = 0.1
    freeze_weights: int = 0
    halve_every: int | None = None
    refit_samples: int = 100
    adam_b2: float = 0.9
    reinit_every: int = 20
    reinit_until: int = 100
    reinit_threshold: float = 0.01
    init_spread: float = 0.3
    init_design: str = "spread"
    init_narrow_scale: float = 0.3
    reinit_design: str = "birth"

    def __check_init__(self):
        _check_int("num_components", self.num_components, 1)
        _check_int("freeze_weights", self.freeze_weights, 0)
        if self.halve_every is not None:
            _check_int("halve_every", self.halve_every, 1)
        _check_int("refit_samples", self.refit_samples, 0)
        _check_int("reinit_every", self.reinit_every, 1)
        _check_int("reinit_until", self.reinit_until, -1)
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.optimizer != "adam":
            raise ValueError(
                "the mixture backend's gradient estimator is stochastic by design; "
                f"optimizer must be 'adam', got {self.optimizer!r}"
            )
        if self.init_design not in INIT_DESIGNS:
            raise ValueError(f"init_design must be one of {INIT_DESIGNS}, got {self.init_design!r}")
        if self.reinit_design not in REINIT_DESIGNS:
            raise ValueError(
                f"reinit_design must be one of {REINIT_DESIGNS}, got {self.reinit_design!r}"
            )
        if not (isinstance(self.init_narrow_scale, (int, float)) and self.init_narrow_scale > 0):
            raise ValueError(
                f"init_narrow_scale must be a number > 0, got {self.init_narrow_scale!r}"
            )
        if not 0 <= self.reinit_threshold < 1:
            raise ValueError(f"reinit_threshold must be in [0, 1), got {self.reinit_threshold}")
        if not (
            isinstance(self.weight_learning_rate, (int, float)) and self.weight_learning_rate >= 0
        ):
            raise ValueError(
                f"weight_learning_rate must be a number >= 0, got {self.weight_learning_rate!r}"
            )
        if not (isinstance(self.adam_b2, (int, float)) and 0 <= self.adam_b2 < 1):
            raise ValueError(f"adam_b2 must be in [0, 1), got {self.adam_b2!r}")

    # ------------------------------------------------------------ params
    def _init_components(self, key, target, row):
        d, K = target.latent_dim, self.num_components
        loc, log_scale = self.start_loc_log_scale(target, row)
        spread = self.init_spread * jnp.exp(log_scale)
        log_scale = jnp.broadcast_to(log_scale, (K, d))
        if self.init_design == "uniform":
            noise = jax.random.uniform(key, (K, d), minval=-1.0, maxval=1.0)
            return loc + spread * noise, log_scale
        # "spread": half narrow, half at the start's width, each half spread over the sphere
        k1, k2 = jax.random.split(key)
        n1 = K // 2
        noise = jnp.concatenate([spread_directions(k1, n1, d), spread_directions(k2, K - n1, d)])
        factor = jnp.where(jnp.arange(K) < n1, self.init_narrow_scale, 1.0)
        return loc + spread * math.sqrt(d) * noise, log_scale + jnp.log(factor)[:, None]

    def init_params(self, key, target, row):
        loc, log_scale = self._init_components(key, target, row)
        return {"loc": loc, "log_scale": log_scale, "logits": jnp.zeros(self.num_components)}

    def _schedule(self, lr):
        if callable(lr):
            return lr
        if self.halve_every is not None:
            return optax.exponential_decay(lr, self.halve_every, 0.5, staircase=True)
        return optax.cosine_decay_schedule(lr, self.num_steps, alpha=0.01)

    def adam(self):
        base = self._schedule(self.weight_learning_rate)

        def weight_lr(count):
            return jnp.where(count < self.freeze_weights, 0.0, base(count))

        return optax.multi_transform(
            {
                "components": optax.adam(self._schedule(self.learning_rate), b2=self.adam_b2),
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
        """Negative ELBO estimate whose gradient is the chosen estimator's."""
        if self.estimator == "implicit":
            return self._implicit_loss(params, key, target, row)
        return self._stratified_loss(params, key, target, row)

    def _stratified_loss(self, params, key, target, row):
        sg = jax.lax.stop_gradient
        K = self.num_components
        m = -(-self.num_samples // K)
        pi = jax.nn.softmax(params["logits"])
        g = (1.0 / sg(pi))[:, None]

        def precondition(a):  # value a, gradient divided by pi_k
            return a * g - sg(a * (g - 1.0))

        q = dict(
            params, loc=precondition(params["loc"]), log_scale=precondition(params["log_scale"])
        )
        d = q["loc"].shape[-1]
        eps = jax.random.normal(key, (K, m, d))
        z = (q["loc"][:, None] + jnp.exp(q["log_scale"])[:, None] * eps).reshape(K * m, d)
        f = beta_log_joint(z, target, row, self.beta) - self.beta * mixture_log_prob(q, z)
        return -jnp.sum(pi * jnp.mean(f.reshape(K, m), -1))

    def _implicit_loss(self, params, key, target, row):
        sg = jax.lax.stop_gradient
        S = self.num_samples
        kc, ke = jax.random.split(key)
        loc, log_scale = params["loc"], params["log_scale"]
        logp = jax.nn.log_softmax(params["logits"])
        comp = jax.random.categorical(kc, sg(logp), shape=(S,))
        eps = jax.random.normal(ke, (S, loc.shape[-1]))
        z0 = sg(loc[comp] + jnp.exp(log_scale[comp]) * eps)
        z = implicit_reparam(z0, loc, log_scale, logp)
        f = beta_log_joint(z, target, row, self.beta) - self.beta * mixture_log_prob(params, z)
        fs = sg(f)
        baseline = (jnp.sum(fs) - fs) / (S - 1) if S > 1 else jnp.zeros_like(fs)
        w = jnp.exp(logp[comp])
        surrogate = jnp.mean(f) + jnp.mean((w / sg(w) - 1.0) * (fs - baseline))
        return -surrogate

    # ------------------------------------------------------------ weights
    def fit_params(self, k_init, k_steps, target, row):
        params, loss = super().fit_params(k_init, k_steps, target, row)
        if self.refit_samples > 0:
            params = self.refit_weights(params, jax.random.fold_in(k_steps, 2), target, row)
        return params, loss

    def refit_weights(self, params, key, target, row, num_iters=100):
        """The weights that maximise the ELBO for the fitted components.

        ``refit_samples`` draws per component, then ``num_iters``
        exponentiated-gradient steps on those draws (module docstring). Weights
        are left as they were if the refit is not finite.
        """
        K, M = self.num_components, self.refit_samples
        loc, log_scale = params["loc"], params["log_scale"]
        d = loc.shape[-1]
        z = loc[:, None] + jnp.exp(log_scale)[:, None] * jax.random.normal(key, (K, M, d))
        log_joint = beta_log_joint(z.reshape(K * M, d), target, row, self.beta).reshape(K, M)
        u = (z[:, :, None, :] - loc) * jnp.exp(-log_scale)  # [K, M, K', d]
        log_comp = jnp.sum(-0.5 * u**2 - log_scale - _LOG_SQRT_2PI, -1)  # [K, M, K']

        def body(logw, _):
            log_q = logsumexp(logw + log_comp, -1)  # [K, M]
            return jax.nn.log_softmax(logw + jnp.mean(log_joint - self.beta * log_q, -1)), None

        logw, _ = jax.lax.scan(body, jax.nn.log_softmax(params["logits"]), None, length=num_iters)
        ok = ~jnp.any(jnp.isnan(logw)) & jnp.any(jnp.isfinite(logw))
        return dict(params, logits=jnp.where(ok, logw, params["logits"]))

    # ------------------------------------------------------------ re-init
    def _births(self, key, params, reset, target, row):
        """Means and log-scales ``[K, d]`` for the components in ``reset`` (``"birth"``).

        ``num_samples`` candidates from the start (mean and scale of the
        encoder, or the prior); each collapsed component in turn takes the
        candidate with the largest ``log p(x_O, z) - log q(z)``, ``q`` the
        mixture of the kept components and of those placed before it (weight
        ``1/K`` each), at ``init_narrow_scale`` times the start's width.
        """
        K = self.num_components
        loc0, log_scale0 = self.start_loc_log_scale(target, row)
        d = loc0.shape[-1]
        cand = loc0 + jnp.exp(log_scale0) * jax.random.normal(key, (self.num_samples, d))
        log_joint = beta_log_joint(cand, target, row, self.beta)
        log_scale_new = log_scale0 + math.log(self.init_narrow_scale)
        loc, log_scale = params["loc"], params["log_scale"]

        def log_comp(m, ls):  # [S] log N(cand; m, diag e^{2 ls})
            u = (cand - m) * jnp.exp(-ls)
            return jnp.sum(-0.5 * u**2 - ls - _LOG_SQRT_2PI, -1)

        kept = jnp.where(reset, -jnp.inf, jax.nn.log_softmax(params["logits"]))
        log_q = logsumexp(kept + jax.vmap(log_comp)(loc, log_scale).T, -1)  # [S]

        def place(log_q, xs):
            k_reset, m_old, ls_old = xs
            score = log_joint - self.beta * log_q
            best = cand[jnp.argmax(jnp.where(jnp.isnan(score), -jnp.inf, score))]
            m = jnp.where(k_reset, best, m_old)
            ls = jnp.where(k_reset, log_scale_new, ls_old)
            added = jnp.logaddexp(log_q, log_comp(m, ls) - math.log(K))
            return jnp.where(k_reset, added, log_q), (m, ls)

        _, (new_loc, new_ls) = jax.lax.scan(place, log_q, (reset, loc, log_scale))
        return new_loc, new_ls

    def after_step(self, state, i, key, target, row):
        params = state.params
        weights = jax.nn.softmax(params["logits"])
        collapsed = weights < self.reinit_threshold
        step_due = (i % self.reinit_every == 0) & (i <= self.reinit_until)
        due = step_due & jnp.any(collapsed)
        reset = due & collapsed  # [K]
        if self.reinit_design == "birth":
            fresh = self._births
        else:

            def fresh(k, params, reset, target, row):
                return self._init_components(k, target, row)

        # ``i`` is the same for every row, so this stays a branch under vmap: the
        # fresh components are only computed at the few re-initialisation steps
        fresh_loc, fresh_ls = jax.lax.cond(
            step_due,
            lambda k: fresh(k, params, reset, target, row),
            lambda k: (params["loc"], params["log_scale"]),
            key,
        )

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
