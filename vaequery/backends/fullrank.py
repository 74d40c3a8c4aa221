r"""Full-rank Gaussian variational inference (Wu, Domke & Sanner, "GVI").

For one query, :math:`q(z) = \mathcal N(b, LL^\top)` with
:math:`z = L\varepsilon + b`, :math:`\varepsilon \sim \mathcal N(0, I)`, and
:math:`L` lower-triangular with a positive diagonal :math:`L_{jj} = e^{\ell_j}`
(the strictly-lower part is free). The entropy is analytic,

.. math::
    \mathbb H[q] = \sum_j \ell_j + \tfrac d2 \log(2\pi e),

so the β-ELBO of :class:`vaequery.backends.VIBackend` is estimated with
reparameterised samples of the expected log-joint only.

Defaults. Wu et al. initialise the full matrix at the identity and run RMSProp
(lr 1e-3, 5,000 iterations) or L-BFGS on a fixed noise set; vaequery keeps
QAVI's budget (``S = 100``, ``T = 300`` Adam steps) with the same decaying
learning rate as :class:`~vaequery.backends.Gaussian` (peak 0.3, cosine decay;
but to 0.1 %, see below), and starts at the prior (or the encoder's output) with :math:`L = I`
(diagonal = the encoder's scales). ``optimizer="lbfgs"`` gives Wu et al.'s
de-randomised L-BFGS.

Adam's second-moment decay is 0.9 (``adam_b2``; optax's default 0.999) and the
cosine decay ends at 0.1 % of the peak rather than 1 %. Why: the first steps'
gradients are huge when the posterior is narrow (the start is the prior, the
posterior's scale 0.02-0.1), and with a memory of 1,000 steps they keep Adam's
later steps tiny, so the long axis of a correlated posterior is still shrinking
when the run ends. On the narrow linear-Gaussian oracle of
``benchmarks/mixture_modes.py`` (d = 3, D = 8, σ = 0.05, 2 models × 24 queries,
half of the features observed) the largest ratio of a coordinate's fitted
variance to the exact one was 4.1 after 300 steps (1.45 after 1,000) and the
exact KL(q‖p) 0.17 nats on average (max 0.87); with b2 = 0.9 alone 1.15 and
0.012 (the last steps then jitter more: KL 0.003 instead of 0.001 at σ = 0.3),
with the lower end of the decay as well 1.11 and 0.005. Oracles not used to
choose this (mean KL in nats and largest variance ratio, before → after; 2 × 24
queries each): d = 3, D = 8, σ = 0.02: 3.6 → 0.007 and 23 → 1.14; d = 2, D = 6,
σ = 0.05: 0.019 → 0.002 and 1.88 → 1.10; d = 5, D = 12, σ = 0.15: 0.013 → 0.008
and 1.13 → 1.10. The price is on wide
posteriors, already exact: d = 3, σ = 0.3 and 0.5: KL 0.001 → 0.002, largest
variance ratio 1.04 → 1.10 (the last iterate's jitter). A column-scaled
Cholesky factor (``L = M diag(e^ℓ)``, so shrinking a column is one coordinate)
reached 2.8 (row-scaled: 2.1) with 0.999 and was not adopted.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from vaequery.backends._base import register
from vaequery.backends.gaussian import GaussianFamily

_HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)


@register("fullrank")
class FullRank(GaussianFamily):
    """Full-covariance Gaussian VI, ``z = L eps + b``.

    Parameters
    ----------
    num_steps : int, default 300
    num_samples : int, default 100
    learning_rate : float or optax schedule, default 0.3
        A float is the peak of a cosine decay to 0.1 % (module docstring).
    beta : float, default 1.0
    optimizer : {"adam", "lbfgs"}, default "adam"
    init_scale : float, default 1.0
        Initial diagonal of ``L`` when starting from the prior.
    init : str, default "auto"
        Start of each query (see :class:`~vaequery.backends.VIBackend`); a
        full-covariance start (posterior matching, a previous posterior) is
        used whole.
    adam_b2 : float, default 0.9
        Adam's second-moment decay (module docstring; optax's default is
        0.999).
    """

    adam_b2: float = 0.9

    def __check_init__(self):
        if not (isinstance(self.adam_b2, (int, float)) and 0 <= self.adam_b2 < 1):
            raise ValueError(f"adam_b2 must be in [0, 1), got {self.adam_b2!r}")

    def adam(self):
        lr = self.learning_rate
        if not callable(lr):
            lr = optax.cosine_decay_schedule(lr, self.num_steps, alpha=0.001)
        return optax.adam(lr, b2=self.adam_b2)

    def init_params(self, key, target, row):
        loc, tril = self.start(target, row)
        diag = jnp.diagonal(tril)
        return {"loc": loc, "log_diag": jnp.log(jnp.abs(diag)), "off_diag": jnp.tril(tril, -1)}

    @staticmethod
    def cholesky(params):
        """The factor ``L [..., d, d]`` (lower-triangular, positive diagonal)."""
        diag = jnp.exp(params["log_diag"])
        return jnp.tril(params["off_diag"], -1) + diag[..., None] * jnp.eye(diag.shape[-1])

    def sample_and_log_prob(self, params, key, n):
        loc = params["loc"]
        d = loc.shape[-1]
        eps = jax.random.normal(key, (n, d))
        z = loc + eps @ self.cholesky(params).T
        log_q = (
            -0.5 * jnp.sum(eps**2, -1)
            - jnp.sum(params["log_diag"])
            - 0.5 * d * math.log(2 * math.pi)
        )
        return z, log_q

    def entropy(self, params):
        log_diag = params["log_diag"]
        return jnp.sum(log_diag) + log_diag.shape[-1] * _HALF_LOG_2PIE
