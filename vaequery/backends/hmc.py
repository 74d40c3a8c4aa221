r"""Hamiltonian Monte Carlo and NUTS from BlackJAX, several chains per query.

For one query the target is the unnormalised posterior
:math:`\log p(z) + \log p(x_O \mid z)` (:attr:`vaequery.model.Target.logdensity_fn`).
Each of ``num_chains`` chains

1. starts from its own draw of the prior :math:`\mathcal N(0, I)`: VAE posteriors
   given a few features are often multimodal, and chains started at one point
   tend to share a mode and hide it from R-hat (``../shared/API_NOTES.md`` §2);
2. runs Stan's window adaptation (``blackjax.window_adaptation``) for
   ``num_warmup`` steps, tuning its step size to ``target_accept`` and a
   diagonal (or, with ``dense_mass=True``, dense) inverse mass matrix;
3. draws ``num_draws`` states with the adapted kernel in a ``lax.scan``.

Chains are vmapped inside :meth:`run_one`, and :func:`vaequery.fit.run` vmaps
over queries, so a batch of ``N`` queries is one compiled program. With
``batching="vmap"`` it runs ``N × num_chains`` chains in lock-step; with
``"map"`` (NUTS's default on CPU, see :func:`sequential_on_cpu`) the vmap over
queries becomes a loop inside the program (:func:`per_query`), so a query's
chains never wait for another query's trajectories. Either way a query's draws
depend only on its own row and key, not on what the other rows of the batch hold: a row
with impossible evidence or a NaN decoder leaves the others bit-identical
(``tests/test_numerical_faults.py``).

Importance proposal
    MCMC has no density of its own, so ``Fit.state`` is a Gaussian fitted to the
    pooled draws of all chains (mean and Cholesky factor of the covariance),
    with the standard deviations multiplied by ``proposal_scale`` (1.2 by
    default) and a small ridge added: a slightly wider proposal keeps the
    importance weights of the IWAE likelihood bounded when the posterior has
    heavier tails than the fitted Gaussian. It is a *proposal*, not the
    posterior; the draws are in ``Posterior.z``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import blackjax
import blackjax.adaptation.base
import blackjax.mcmc.hmc
import jax
import jax.numpy as jnp
import numpy as np

from vaequery.backends._base import Backend, Fit, register

_LOG_2PI = math.log(2 * math.pi)


def fit_gaussian(z, scale=1.2, ridge=1e-4):
    """Gaussian ``{"loc": [d], "chol": [d, d]}`` fitted to draws ``z: [..., d]``.

    The covariance is the sample covariance of all draws (chains pooled),
    multiplied by ``scale**2``, plus ``ridge`` on the diagonal.
    """
    d = z.shape[-1]
    flat = z.reshape(-1, d)
    loc = flat.mean(0)
    centred = flat - loc
    n = flat.shape[0]
    cov = centred.T @ centred / max(n - 1, 1)
    cov = scale**2 * cov + ridge * jnp.eye(d, dtype=z.dtype)
    return {"loc": loc, "chol": jnp.linalg.cholesky(cov)}


def gaussian_sample_and_log_prob(state, key, n):
    """``n`` draws of ``N(loc, chol chol^T)`` and their log-densities."""
    loc, chol = state["loc"], state["chol"]
    d = loc.shape[-1]
    eps = jax.random.normal(key, (n, d), loc.dtype)
    z = loc + eps @ chol.T
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(chol))))
    log_q = -0.5 * jnp.sum(eps**2, -1) - log_det - 0.5 * d * _LOG_2PI
    return z, log_q


def at_finite_density(z, logdensity):
    """Draws ``z [..., d]``, NaN where the log-density ``[...]`` of the draw is not finite.

    A chain started where the target is ``-inf`` or NaN (evidence impossible
    under every ``z``, so a log-likelihood of ``-inf`` everywhere; a decoder
    returning NaN there) rejects every proposal and keeps its start, a prior
    draw: finite numbers that are not posterior draws. Made NaN, they flag the
    row in ``Posterior.failed`` like a variational row with a non-finite loss.
    A decoder that is NaN only on part of the space is not a failure of a chain
    that stays out of it: proposals there are rejected (and counted in
    ``diverging``), as for any region of zero density.

    Parameters
    ----------
    z : array ``[..., d]``
    logdensity : array ``[...]``
        The target's log-density at each draw.

    Returns
    -------
    array ``[..., d]``
    """
    return jnp.where(jnp.isfinite(logdensity)[..., None], z, jnp.nan)


#: Accepted values of the ``batching`` hyper-parameter of the HMC-type backends.
BATCHING = ("auto", "vmap", "map")


def sequential_on_cpu(platform: str) -> str:
    """``"map"`` on CPU, ``"vmap"`` elsewhere: ``batching="auto"`` of NUTS and ChEES.

    Measured on 2 CPU cores, 32 breast-cancer queries
    (``benchmarks/results/batched_mcmc.md``): NUTS reaches 1.5x the bulk ESS/s
    with queries one after another than vmapped (a vmapped transition waits for
    the longest tree of the batch: 31 % of the leapfrog steps paid for are
    useful, against 75 % within one query's chains), ChEES 1.8x (adapted path
    lengths differ up to sevenfold between queries: 38 % useful). A CPU gains
    little from batching more than one query's chains. A GPU is another
    matter: one query's chains leave it mostly idle, so there the lock-step
    waste is the cheaper price (not measured here: no GPU in these runs).
    """
    return "map" if platform == "cpu" else "vmap"


def per_query(fn, batching):
    """``fn(key, row)``, run one query at a time under ``vmap`` when ``batching == "map"``.

    :func:`vaequery.fit.run` vmaps ``run_one`` over the queries of a batch. With
    ``"map"`` the function is wrapped in :func:`jax.custom_batching.sequential_vmap`,
    so that vmap becomes a loop over queries inside the same compiled program
    (what ``lax.map`` does): chains of one query still run vmapped, but no query
    waits for another's trajectories. With ``"vmap"`` it is returned unchanged.
    """
    if batching == "map":
        return jax.custom_batching.sequential_vmap(fn)
    return fn


def _check_int(name, value, low):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class MCMCBackend(Backend):
    """Shared parts of the MCMC backends: chains, the Gaussian proposal.

    Subclasses implement ``_chain(key, z0, target, row, num_draws)`` returning
    ``(z [num_draws, d], info dict)`` for one chain. When ``info`` holds the
    target's ``"logdensity"`` ``[num_draws]`` at each draw, draws where it is
    not finite become NaN (:func:`at_finite_density`): the row is then flagged
    as failed.
    """

    family: ClassVar[str] = "mcmc"
    num_chains: int = 4
    proposal_scale: float = 1.2

    @property
    def default_num_draws(self) -> int:
        return 250

    def __check_init__(self):
        _check_int("num_chains", self.num_chains, 1)
        if not self.proposal_scale > 0:
            raise ValueError(f"proposal_scale must be > 0, got {self.proposal_scale!r}")

    def _initial_positions(self, key, target, row):
        return jax.random.normal(key, (int(self.num_chains), target.latent_dim))

    def run_one(self, key, target, row, num_draws):
        k0, k_chains = jax.random.split(key)
        z0 = self._initial_positions(k0, target, row)
        keys = jax.random.split(k_chains, int(self.num_chains))
        z, info = jax.vmap(lambda k, z_init: self._chain(k, z_init, target, row, num_draws))(
            keys, z0
        )
        if "logdensity" in info:
            z = at_finite_density(z, info["logdensity"])
        state = fit_gaussian(z, self.proposal_scale)
        return Fit(state, z, jnp.zeros((0,), z.dtype), info)

    def sample_and_log_prob(self, state, key, n):
        return gaussian_sample_and_log_prob(state, key, n)


class _BlackjaxHMC(MCMCBackend):
    num_warmup: int = 500
    target_accept: float = 0.8
    dense_mass: bool = False
    batching: str = "auto"

    def _auto_batching(self, platform: str) -> str:
        """What ``batching="auto"`` means on ``platform`` ("cpu", "gpu", "tpu")."""
        # static-path HMC: trajectories differ only by the jitter, lock-step is
        # cheap and a vmapped batch ran at 2x one query at a time on CPU
        # (benchmarks/results/mcmc_throughput.md)
        return "vmap"

    def _batching(self) -> str:
        if self.batching == "auto":
            return self._auto_batching(jax.default_backend())
        return self.batching

    def run_one(self, key, target, row, num_draws):
        def one_query(key, row):
            return MCMCBackend.run_one(self, key, target, row, num_draws)

        return per_query(one_query, self._batching())(key, row)

    def _algorithm(self):
        raise NotImplementedError

    def _extra(self) -> dict:
        return {}

    def _sampling_step(self, logdensity, params):
        """``step(key, state) -> (state, info)`` with the adapted parameters."""
        return self._algorithm()(logdensity, **{**self._extra(), **params}).step

    def __check_init__(self):
        _check_int("num_warmup", self.num_warmup, 1)  # blackjax needs >= 1
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {list(BATCHING)}, got {self.batching!r}")

    def _chain(self, key, z0, target, row, num_draws):
        def logdensity(z):
            return target.logdensity_fn(z, row)

        algo = self._algorithm()
        k_warm, k_draw = jax.random.split(key)
        warm = blackjax.window_adaptation(
            algo,
            logdensity,
            is_mass_matrix_diagonal=not self.dense_mass,
            target_acceptance_rate=self.target_accept,
            adaptation_info_fn=blackjax.adaptation.base.get_filter_adapt_info_fn(),
            **self._extra(),
        )
        (state, params), _ = warm.run(k_warm, z0, num_steps=int(self.num_warmup))
        step = self._sampling_step(logdensity, params)

        def one(s, k):
            s, info = step(k, s)
            return s, (
                s.position,
                s.logdensity,
                info.acceptance_rate,
                info.is_divergent,
                info.num_integration_steps,
            )

        _, (z, lp, acc, div, nsteps) = jax.lax.scan(one, state, jax.random.split(k_draw, num_draws))
        info = {
            "logdensity": lp,
            "acceptance_rate": acc,
            "diverging": div,
            "num_integration_steps": jnp.asarray(nsteps, jnp.int32),
            "step_size": params["step_size"],
        }
        return z, info


@register("nuts")
class NUTS(_BlackjaxHMC):
    """No-U-Turn sampler (BlackJAX) with window adaptation, several chains per query.

    Parameters
    ----------
    num_chains : int, default 4
        Chains per query, each started from its own prior draw.
    num_warmup : int, default 500
        Window-adaptation steps (step size and diagonal mass matrix), discarded.
    target_accept : float, default 0.8
        Target mean acceptance probability of the step-size adaptation.
    dense_mass : bool, default False
        Adapt a dense inverse mass matrix instead of a diagonal one: costs
        ``O(d^2)`` per gradient but shortens trajectories on correlated
        posteriors (on a 16-latent tabular VAE: about 20 % fewer leapfrog steps,
        half the lock-step cost in a vmapped batch, higher ESS).
    max_num_doublings : int, default 10
        Maximum tree depth (at most ``2**max_num_doublings`` leapfrog steps).
    batching : {"auto", "vmap", "map"}, default "auto"
        How the queries of a batch share the machine. ``"vmap"``: all chains of
        all queries in lock-step, each transition as long as the longest tree
        of the batch. ``"map"``: queries one after another in the same compiled
        program, the chains of each vmapped. ``"auto"``: ``"map"`` on CPU
        (1.5x the bulk ESS/s of ``"vmap"`` on 32 breast-cancer queries),
        ``"vmap"`` elsewhere (:func:`sequential_on_cpu`).
    proposal_scale : float, default 1.2
        Inflation of the standard deviations of the Gaussian fitted to the
        draws, which serves as the IWAE/PSIS proposal (module docstring).

    Notes
    -----
    ``num_draws`` (default 250) is per chain: ``Posterior.z`` is
    ``[N, num_chains, num_draws, d]``. ``Fit.info`` holds, per query,
    ``acceptance_rate`` and ``diverging`` ``[chains, draws]``,
    ``num_integration_steps`` ``[chains, draws]`` and the adapted
    ``step_size`` ``[chains]``.
    """

    max_num_doublings: int = 10

    def __check_init__(self):
        _check_int("max_num_doublings", self.max_num_doublings, 1)

    def _auto_batching(self, platform):
        return sequential_on_cpu(platform)

    def _algorithm(self):
        return blackjax.nuts

    def _extra(self):
        return {"max_num_doublings": int(self.max_num_doublings)}


@register("hmc")
class HMC(_BlackjaxHMC):
    """Static-path Hamiltonian Monte Carlo (BlackJAX) with window adaptation.

    Parameters
    ----------
    num_chains : int, default 4
        Chains per query, each started from its own prior draw.
    num_warmup : int, default 500
        Window-adaptation steps (step size and diagonal mass matrix), discarded.
    target_accept : float, default 0.8
        Target mean acceptance probability of the step-size adaptation.
    dense_mass : bool, default False
        Adapt a dense inverse mass matrix instead of a diagonal one: costs
        ``O(d^2)`` per gradient but shortens trajectories on correlated
        posteriors (on a 16-latent tabular VAE: about 20 % fewer leapfrog steps,
        half the lock-step cost in a vmapped batch, higher ESS).
    num_integration_steps : int, default 16
        Leapfrog steps per proposal during adaptation, and their mean while
        drawing (NUTS chooses the path length itself).
    path_jitter : float, default 0.5
        While drawing, the number of leapfrog steps is uniform on
        ``num_integration_steps * (1 ± path_jitter)``: a fixed path length can
        resonate with the posterior and mix badly (0 disables it).
    batching : {"auto", "vmap", "map"}, default "auto"
        As for :class:`NUTS`, but ``"auto"`` is ``"vmap"`` everywhere: paths
        differ only by the jitter, so lock-step wastes little.
    proposal_scale : float, default 1.2
        Inflation of the standard deviations of the Gaussian fitted to the
        draws, which serves as the IWAE/PSIS proposal.

    Notes
    -----
    Draws and ``Fit.info`` as for :class:`NUTS`.
    """

    num_integration_steps: int = 16
    path_jitter: float = 0.5

    def __check_init__(self):
        _check_int("num_integration_steps", self.num_integration_steps, 1)
        if not 0 <= self.path_jitter < 1:
            raise ValueError(f"path_jitter must be in [0, 1), got {self.path_jitter!r}")

    def _algorithm(self):
        return blackjax.hmc

    def _extra(self):
        return {"num_integration_steps": int(self.num_integration_steps)}

    def _sampling_step(self, logdensity, params):
        # A fixed path length resonates with the posterior's oscillation
        # periods (on a Gaussian, trajectories near a half period barely move
        # some coordinates and R-hat stays high); drawing the number of leapfrog
        # steps per transition breaks this (Neal 2011, §5.4.2.2 / Mackenzie 1989).
        kernel = blackjax.mcmc.hmc.build_kernel()
        L = int(self.num_integration_steps)
        spread = int(self.path_jitter * L)

        def step(key, state):
            k_len, k_step = jax.random.split(key)
            n = jax.random.randint(k_len, (), L - spread, L + spread + 1)
            return kernel(
                k_step, state, logdensity, params["step_size"], params["inverse_mass_matrix"], n
            )

        return step
