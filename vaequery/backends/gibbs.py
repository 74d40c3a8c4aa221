r"""Encoder/decoder Gibbs-type samplers: Metropolis-within-Gibbs and pseudo-Gibbs.

Both sample the joint :math:`p(z, x_M \mid x_O)` of the latent code and every
unobserved feature by alternating two moves on the completed row
:math:`x = (x_O, x_M)`:

* **z-move**: draw :math:`z' \sim q(z \mid x)` from the model's amortised
  encoder;
* **x-move**: draw :math:`x_M \sim p(x_M \mid z)` from the decoder's likelihood
  (:attr:`vaequery.model.Target.sample_x_fn`), keeping :math:`x_O` fixed.

:class:`PseudoGibbs` (Rezende et al. 2014) always accepts :math:`z'`. Its
stationary distribution is the one of the encoder/decoder pair, **not** the
posterior, unless the encoder is the exact posterior :math:`p(z \mid x)`: it is
biased for any real encoder.

:class:`MetropolisWithinGibbs` (Mattei & Frellsen 2018) uses the encoder as an
independence proposal and accepts :math:`z'` with probability

.. math::
    \min\Big(1, \frac{p(x \mid z')\,p(z')\,q(z \mid x)}
                     {p(x \mid z)\,p(z)\,q(z' \mid x)}\Big),

which makes the z-move leave :math:`p(z \mid x)` invariant, so the chain targets
the exact posterior whatever the encoder (a poor encoder only slows mixing).

Schedule (QAVI's baselines): every chain starts from the zero-filled row (the
standardised mean, which is how rows arrive) and runs ``num_burnin`` = 20
pseudo-Gibbs steps, then ``num_draws`` recorded steps (default 300) of its own
kernel, keeping every ``thin``-th. Several chains (default 4) per query give
R-hat. Both backends need the encoder (``needs_encoder = True``).

The IWAE proposal (``Fit.state``) is a Gaussian fitted to the draws, as for
:mod:`vaequery.backends.hmc`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from vaequery.backends._base import register
from vaequery.backends.hmc import MCMCBackend, _check_int
from vaequery.model import encode_row

_LOG_2PI = math.log(2 * math.pi)


def _normal_logpdf(z, loc, scale):
    return jnp.sum(-0.5 * ((z - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * _LOG_2PI, -1)


class _EncoderDecoderGibbs(MCMCBackend):
    needs_encoder: ClassVar[bool] = True
    #: apply the Metropolis-Hastings correction after the burn-in
    _corrected: ClassVar[bool] = True

    num_burnin: int = 20
    thin: int = 1

    @property
    def default_num_draws(self) -> int:
        return 300

    def __check_init__(self):
        _check_int("num_burnin", self.num_burnin, 0)
        _check_int("thin", self.thin, 1)

    def _initial_positions(self, key, target, row):
        # The position is overwritten by the first z-move; only the shape matters.
        return jnp.zeros((int(self.num_chains), target.latent_dim))

    def _chain(self, key, z0, target, row, num_draws):
        if target.encode_fn is None or target.sample_x_fn is None:
            raise ValueError(
                f"backend {self.name!r} needs a model with an encoder and a sampling "
                "likelihood (Target.encode_fn and Target.sample_x_fn)"
            )
        x_obs, observed = row["x"], row["observed"]
        full = jnp.ones_like(observed)

        def log_joint(z, x):  # log p(z) + log p(x | z) on the completed row
            return target.logdensity_fn(z, {"x": x, "observed": full})

        def x_move(key, z):
            return jnp.where(observed, x_obs, target.sample_x_fn(key, z))

        def step(carry, key, corrected):
            z, x = carry
            k_prop, k_acc, k_x = jax.random.split(key, 3)
            loc, scale = encode_row(target.encode_fn, x, observed=full)  # a completed row
            z_prop = loc + scale * jax.random.normal(k_prop, loc.shape, loc.dtype)
            if corrected:
                lp_prop, lp = log_joint(z_prop, x), log_joint(z, x)
                log_q_ratio = _normal_logpdf(z, loc, scale) - _normal_logpdf(z_prop, loc, scale)
                log_ratio = lp_prop - lp + log_q_ratio
                log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
                accept = jnp.log(jax.random.uniform(k_acc)) < log_ratio
                z = jnp.where(accept, z_prop, z)
                lp = jnp.where(accept, lp_prop, lp)
                acc_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
            else:
                # pseudo-Gibbs never evaluates the density: nothing to check
                z, lp, acc_prob = z_prop, jnp.zeros((), loc.dtype), jnp.ones((), loc.dtype)
            return (z, x_move(k_x, z)), (z, lp, acc_prob)

        k_burn, k_draw = jax.random.split(key)
        carry = (z0, jnp.where(observed, x_obs, 0.0))
        carry, _ = jax.lax.scan(
            lambda c, k: step(c, k, False), carry, jax.random.split(k_burn, int(self.num_burnin))
        )
        thin = int(self.thin)

        def thinned(c, k):
            c, (z, lp, acc) = jax.lax.scan(
                lambda c_, k_: step(c_, k_, self._corrected), c, jax.random.split(k, thin)
            )
            return c, (z[-1], lp[-1], acc.mean())

        _, (z, lp, acc) = jax.lax.scan(thinned, carry, jax.random.split(k_draw, num_draws))
        if not self._corrected:
            return z, {"acceptance_rate": acc}
        return z, {"logdensity": lp, "acceptance_rate": acc}


@register("mwg")
class MetropolisWithinGibbs(_EncoderDecoderGibbs):
    """Metropolis-within-Gibbs with the encoder as independence proposal.

    Exact in the limit (module docstring); needs the model's encoder.

    Parameters
    ----------
    num_chains : int, default 4
        Chains per query, all started from the zero-filled row.
    num_burnin : int, default 20
        Pseudo-Gibbs steps before the chain (QAVI), discarded.
    thin : int, default 1
        Keep every ``thin``-th state; ``num_draws`` (default 300, QAVI's
        number of steps) states are kept per chain.
    proposal_scale : float, default 1.2
        Inflation of the Gaussian fitted to the draws for the IWAE proposal.

    Notes
    -----
    ``Fit.info["acceptance_rate"]`` ``[chains, draws]`` is the Metropolis-
    Hastings acceptance probability of the z-move (mean over a thinning block);
    ``Fit.info["logdensity"]`` ``[chains, draws]`` is ``log p(z, x)`` of the
    completed row (``x_O`` and the imputation the z-move was made with) at
    each kept ``z``. Draws where it is not finite are NaN and flag the row
    (:func:`~vaequery.backends.hmc.at_finite_density`): evidence impossible
    under every ``z`` leaves the chain at its burn-in state.
    """


@register("pseudo_gibbs")
class PseudoGibbs(_EncoderDecoderGibbs):
    """Pseudo-Gibbs sampling (Rezende et al. 2014): **biased**.

    Alternates encoder and decoder draws without any correction; its
    stationary distribution equals the posterior only if the encoder is the
    exact posterior ``p(z | x)``. Prefer ``"mwg"``; this is a QAVI baseline.

    Parameters
    ----------
    num_chains : int, default 4
        Chains per query, all started from the zero-filled row.
    num_burnin : int, default 20
        Steps discarded before recording.
    thin : int, default 1
        Keep every ``thin``-th state; ``num_draws`` (default 300) per chain.
    proposal_scale : float, default 1.2
        Inflation of the Gaussian fitted to the draws for the IWAE proposal.

    Notes
    -----
    ``Fit.info["acceptance_rate"]`` is identically 1. Pseudo-Gibbs never
    evaluates the density of the evidence, so unlike ``"mwg"`` it cannot tell
    impossible evidence (a log-likelihood of ``-inf`` for every ``z``) from
    any other: only non-finite draws flag a row.
    """

    _corrected: ClassVar[bool] = False
