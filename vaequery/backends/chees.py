r"""ChEES-HMC: many chains per query that move in lock-step (BlackJAX).

NUTS chooses a trajectory length per chain and per transition. Under ``vmap``
every chain of every query then waits for the longest tree of the batch: on
the breast-cancer benchmark a vmapped batch of NUTS runs at 0.71x the speed of
one query at a time (``benchmarks/results/mcmc_throughput.md``). ChEES-HMC
(Hoffman, Radul & Sountsov 2021) is designed for that hardware model instead:

1. ``num_chains`` chains per query start from their own prior draws (as in
   :mod:`vaequery.backends.hmc`: dispersed starts keep R-hat honest on the
   multimodal posteriors that partial evidence gives);
2. ``blackjax.chees_adaptation`` runs ``num_warmup`` steps of jittered HMC in
   which **all chains of a query share one step size and one trajectory
   length**: the step size by dual averaging of the harmonic-mean acceptance
   rate (target 0.651, the optimum of Beskos et al. 2013), the trajectory
   length by Adam ascent on the ChEES criterion -- the change in the
   ensemble's expected squared distance from its mean, estimated across
   chains -- and, with ``diagonal_mass=True``, a diagonal inverse mass matrix
   estimated from the pooled chains over the last half of warmup;
3. ``num_draws * thin`` transitions of dynamic HMC then follow in a
   ``lax.scan``, every ``thin``-th one kept. At transition ``t`` every chain
   integrates ``ceil(u_t L)`` leapfrog steps, ``L`` the adapted mean length
   and ``u_t`` the ``t``-th point of a Halton sequence on (0, 1] (jitter breaks
   the resonances a fixed path length has). ``u_t`` depends only on ``t``, so
   all chains of a query integrate the same number of steps: they move in
   lock-step, and none waits for a longer random tree as NUTS chains do.

Defaults, measured on the breast-cancer model (16 latents, 32 queries, 2 CPU
cores; ``benchmarks/results/batched_mcmc.md``, where they give 7.3x the bulk
ESS per second of NUTS run one query at a time, max R-hat 1.003):

* 8 chains, 300 warmup steps: 500 warmup steps gave no better R-hat or ESS.
* ``num_draws=500`` per chain with ``thin=4``: R-hat is a between-chain
  statistic and its upward bias shrinks with the ESS *per chain*. 1000 kept
  draws per chain without thinning left the worst of 32 queries at R-hat
  1.009-1.012; 500 draws thinned by 4 gave 1.003 with almost the bulk ESS of
  keeping all 2000 transitions (min 1967 vs 2038 per query), at a quarter of
  the memory and decoder passes. ``thin=8`` lost about 30 % of the ESS.
* ``max_leapfrog_steps=256`` only caps a badly adapted query: the adapted
  mean lengths were 5-35 leapfrog steps.

Batching
    ``batching="auto"`` is ``"map"`` on CPU -- queries one after another in
    the same compiled program (``jax.custom_batching.sequential_vmap``), the
    chains of each vmapped -- and ``"vmap"`` elsewhere. The adapted lengths
    of different queries differ up to sevenfold, so a vmapped batch on a CPU
    pays for the longest one (1.8x fewer ESS/s than ``"map"``), while a GPU left
    with one query's chains at a time would mostly idle (see
    :func:`vaequery.backends.hmc.sequential_on_cpu`).

Importance proposal
    As for the other MCMC backends, ``Fit.state`` is a Gaussian fitted to the
    pooled draws (:func:`vaequery.backends.hmc.fit_gaussian`), widened by
    ``proposal_scale``; it serves the IWAE likelihood and PSIS diagnostics.
"""

from __future__ import annotations

import blackjax
import blackjax.adaptation.base
import jax
import jax.numpy as jnp
import optax

from vaequery.backends._base import Fit, register
from vaequery.backends.hmc import (
    BATCHING,
    MCMCBackend,
    _check_int,
    at_finite_density,
    fit_gaussian,
    per_query,
    sequential_on_cpu,
)


@register("chees")
class ChEES(MCMCBackend):
    """ChEES-adapted jittered HMC (BlackJAX), many chains per query in lock-step.

    Parameters
    ----------
    num_chains : int, default 8
        Chains per query, each started from its own prior draw. The ChEES
        criterion and the step-size statistics are averages over these chains.
    num_warmup : int, default 300
        ChEES adaptation steps (step size, trajectory length and, optionally,
        diagonal mass matrix), discarded.
    target_accept : float, default 0.651
        Target harmonic-mean acceptance probability of the step-size dual
        averaging (Hoffman et al. 2021 use 0.651).
    learning_rate : float, default 0.025
        Adam's step size on the log trajectory length (BlackJAX's example value).
    initial_step_size : float, default 0.1
        Leapfrog step size at the start of warmup.
    diagonal_mass : bool, default True
        Estimate a diagonal inverse mass matrix from the pooled chains over the
        last half of warmup (otherwise the identity).
    jitter : float, default 1.0
        The number of leapfrog steps is ``ceil(L (1 - jitter + jitter u_t))``
        with ``u_t`` a Halton point in (0, 1]; 0 disables jitter.
    max_leapfrog_steps : int, default 256
        Cap on the adapted mean number of leapfrog steps per transition.
    thin : int, default 4
        Transitions per kept draw: ``num_draws * thin`` transitions per chain.
    batching : {"auto", "vmap", "map"}, default "auto"
        How the queries of a batch share the machine: ``"vmap"`` (all in
        lock-step), ``"map"`` (one after another in the same program) or
        ``"auto"`` (``"map"`` on CPU, ``"vmap"`` elsewhere; module docstring).
    proposal_scale : float, default 1.2
        Inflation of the standard deviations of the Gaussian fitted to the
        draws, which serves as the IWAE/PSIS proposal.

    Notes
    -----
    ``num_draws`` (default 500) is per chain: ``Posterior.z`` is
    ``[N, num_chains, num_draws, d]``. ``Fit.info`` holds, per query and per
    kept draw, ``logdensity`` (the target's at the draw; draws where it is not
    finite are NaN, see :func:`~vaequery.backends.hmc.at_finite_density`),
    ``acceptance_rate`` (mean over the ``thin`` transitions that led
    to it), ``diverging`` (any of them) and ``num_integration_steps`` (their
    total: gradients per kept draw; equal across chains, which move in
    lock-step), all ``[chains, draws]``, and the adapted ``step_size``
    ``[chains]`` (one value shared by the chains, repeated so that it reads
    like NUTS's).
    """

    num_chains: int = 8
    num_warmup: int = 300
    target_accept: float = 0.651
    learning_rate: float = 0.025
    initial_step_size: float = 0.1
    diagonal_mass: bool = True
    jitter: float = 1.0
    max_leapfrog_steps: int = 256
    thin: int = 4
    batching: str = "auto"

    def __check_init__(self):
        _check_int("num_warmup", self.num_warmup, 1)
        _check_int("max_leapfrog_steps", self.max_leapfrog_steps, 1)
        _check_int("thin", self.thin, 1)
        # the adaptation averages its statistics over the chains of a query
        _check_int("num_chains", self.num_chains, 2)
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept!r}")
        for name in ("learning_rate", "initial_step_size"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.jitter, (int, float)) and 0 <= self.jitter <= 1):
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter!r}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {list(BATCHING)}, got {self.batching!r}")

    @property
    def default_num_draws(self) -> int:
        return 500

    def _batching(self) -> str:
        if self.batching == "auto":
            return sequential_on_cpu(jax.default_backend())
        return self.batching

    def run_one(self, key, target, row, num_draws):
        def one_query(key, row):
            return self._run_query(key, target, row, num_draws)

        return per_query(one_query, self._batching())(key, row)

    def _run_query(self, key, target, row, num_draws):
        C = int(self.num_chains)

        def logdensity(z):
            return target.logdensity_fn(z, row)

        k0, k_warm, k_draw = jax.random.split(key, 3)
        z0 = self._initial_positions(k0, target, row)
        warm = blackjax.chees_adaptation(
            logdensity,
            C,
            target_acceptance_rate=self.target_accept,
            jitter_amount=float(self.jitter),
            max_leapfrog_steps=int(self.max_leapfrog_steps),
            mass_matrix_estimation="diagonal" if self.diagonal_mass else None,
            adaptation_info_fn=blackjax.adaptation.base.get_filter_adapt_info_fn(),
        )
        (states, params), _ = warm.run(
            k_warm,
            z0,
            step_size=float(self.initial_step_size),
            optim=optax.adam(float(self.learning_rate)),
            num_steps=int(self.num_warmup),
            max_sampling_steps=num_draws * int(self.thin),
        )
        step = blackjax.dynamic_hmc(logdensity, **params).step
        thin = int(self.thin)

        def transition(s, k):
            s, info = jax.vmap(step)(jax.random.split(k, C), s)
            return s, (info.acceptance_rate, info.is_divergent, info.num_integration_steps)

        def draw(s, k):
            s, (acc, div, n) = jax.lax.scan(transition, s, jax.random.split(k, thin))
            return s, (s.position, s.logdensity, acc.mean(0), div.any(0), n.sum(0))

        _, out = jax.lax.scan(draw, states, jax.random.split(k_draw, num_draws))
        z, lp, acc, div, nsteps = (jnp.swapaxes(a, 0, 1) for a in out)  # [C, S, ...]
        z = at_finite_density(z, lp)
        info = {
            "logdensity": lp,
            "acceptance_rate": acc,
            "diverging": div,
            "num_integration_steps": jnp.asarray(nsteps, jnp.int32),
            "step_size": jnp.broadcast_to(params["step_size"], (C,)),
        }
        return Fit(fit_gaussian(z, self.proposal_scale), z, jnp.zeros((0,), z.dtype), info)
