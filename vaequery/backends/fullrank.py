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
learning rate as :class:`~vaequery.backends.Gaussian` (peak 0.3, cosine decay to
1 %), and starts at the prior (or the encoder's output) with :math:`L = I`
(diagonal = the encoder's scales). ``optimizer="lbfgs"`` gives Wu et al.'s
de-randomised L-BFGS.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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
        A float is the peak of a cosine decay to 1 % (as ``"gaussian"``).
    beta : float, default 1.0
    optimizer : {"adam", "lbfgs"}, default "adam"
    init_scale : float, default 1.0
        Initial diagonal of ``L`` when starting from the prior.
    init : str, default "auto"
        Start of each query (see :class:`~vaequery.backends.VIBackend`); a
        full-covariance start (posterior matching, a previous posterior) is
        used whole.
    """

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
