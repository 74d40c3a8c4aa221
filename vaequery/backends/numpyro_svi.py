r"""Any NumPyro AutoGuide, fitted by NumPyro's own SVI on the query's model.

The query is an ordinary NumPyro model ``model(x, observed)`` with latent site
``"z"`` (:func:`vaequery.model.build_numpyro_model`). This backend builds the
chosen :mod:`numpyro.infer.autoguide` guide on it and runs
:class:`numpyro.infer.SVI` with :class:`numpyro.infer.Trace_ELBO`
(``num_samples`` particles, i.e. the reparameterised ELBO with the guide's
Monte-Carlo entropy) for ``num_steps`` Adam steps. Each row runs
``svi.init`` then ``svi.update`` inside a ``lax.scan``, so
:func:`vaequery.fit.run` vmaps it over rows like any other backend.

For the IWAE likelihood the fitted guide is re-instantiated on a latent-only
model with the same ``"z"`` site, run with the fitted parameters substituted,
and ``log q(z)`` is the sum of the guide trace's sample-site log-densities
(for :class:`~numpyro.infer.autoguide.AutoContinuous` guides that is the
density of the packed latent, the unpacking to ``z`` being the identity here).

A target without a NumPyro model (a hand-built
:class:`~vaequery.model.Target`) gets the equivalent model
``z ~ N(0, I); factor(log p(x_O | z))``.

Defaults: ``guide="AutoNormal"``, ``S = 100``, ``T = 300``, Adam peak lr 0.3
with cosine decay to 1 % (as ``"gaussian"``); ``beta`` other than 1 and
L-BFGS are not offered (NumPyro's ELBO has no KL weight; use the native
backends for those).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO, autoguide

from vaequery.backends._base import Fit, VIBackend, register
from vaequery.backends.gaussian import _schedule


class GuideState(NamedTuple):
    """Fitted guide: NumPyro's constrained ``params`` and a ``[d]`` zero vector
    carrying the latent dimension (so the guide can be rebuilt for sampling)."""

    params: dict
    latent: jax.Array


def _guide_class(guide):
    if isinstance(guide, str):
        cls = getattr(autoguide, guide, None)
        if not (isinstance(cls, type) and issubclass(cls, autoguide.AutoGuide)):
            names = sorted(
                n
                for n in dir(autoguide)
                if n.startswith("Auto")
                and isinstance(getattr(autoguide, n), type)
                and issubclass(getattr(autoguide, n), autoguide.AutoGuide)
            )
            raise ValueError(f"unknown NumPyro AutoGuide guide={guide!r}; available: {names}")
        return cls
    if callable(guide):
        return guide
    raise TypeError(f"guide must be an AutoGuide name or class, got {guide!r}")


@register("numpyro")
class NumPyroSVI(VIBackend):
    """A NumPyro AutoGuide run by ``numpyro.infer.SVI`` (see the module docstring).

    Parameters
    ----------
    guide : str or callable, default "AutoNormal"
        A name in :mod:`numpyro.infer.autoguide` (``"AutoNormal"``,
        ``"AutoMultivariateNormal"``, ``"AutoIAFNormal"``, ...) or a callable
        ``guide(model) -> AutoGuide`` (e.g. an AutoGuide class or a
        ``functools.partial`` of one with its options).
    num_steps : int, default 300
    num_samples : int, default 100
        ``Trace_ELBO`` particles.
    learning_rate : float or optax schedule, default 0.3
        A float is the peak of a cosine decay to 1 %.
    """

    guide: Any = "AutoNormal"
    learning_rate: Any = 0.3

    supports_tol: ClassVar[bool] = False  # NumPyro's SVI runs its own loop

    def __check_init__(self):
        _guide_class(self.guide)
        if self.beta != 1.0:
            raise ValueError("the numpyro backend supports beta=1 only (NumPyro's Trace_ELBO)")
        if self.optimizer != "adam":
            raise ValueError(
                f"the numpyro backend supports optimizer='adam' only, got {self.optimizer!r}"
            )

    def bind(self, model):
        if self.init not in ("auto", "prior"):
            raise ValueError(
                "the numpyro backend starts where its AutoGuide's init_loc_fn says; "
                f"init={self.init!r} is not supported here (use gaussian/fullrank/iaf/planar/"
                "mixture for warm starts)"
            )
        return self

    def adam(self):
        import optax

        return optax.adam(_schedule(self.learning_rate, self.num_steps))

    def _model(self, target):
        if getattr(target, "numpyro_model", None) is not None:
            return target.numpyro_model
        d = target.latent_dim

        def model(**row):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
            numpyro.factor("loglik", target.loglik_fn(z, row))

        return model

    def run_one(self, key, target, row, num_draws):
        k_init, k_draw = jax.random.split(key)
        guide = _guide_class(self.guide)(self._model(target))
        svi = SVI(self._model(target), guide, self.adam(), Trace_ELBO(self.num_samples))
        state = svi.init(k_init, **row)

        def body(s, _):
            return svi.update(s, **row)

        state, loss = jax.lax.scan(body, state, None, length=self.num_steps)
        fitted = GuideState(svi.get_params(state), jnp.zeros(target.latent_dim))
        z, _ = self.sample_and_log_prob(fitted, k_draw, num_draws)
        return Fit(fitted, z, loss, {"final_loss": loss[-1]})

    def sample_and_log_prob(self, state, key, n):
        d = state.latent.shape[-1]

        def latent_model():
            numpyro.sample("z", dist.Normal(jnp.zeros(d), 1.0).to_event(1))

        guide = _guide_class(self.guide)(latent_model)
        guide = handlers.substitute(guide, data=state.params)

        def one(k):
            tr = handlers.trace(handlers.seed(guide, k)).get_trace()
            log_q = sum(
                jnp.sum(site["fn"].log_prob(site["value"]))
                for site in tr.values()
                if site["type"] == "sample" and not site.get("is_observed")
            )
            return tr["z"]["value"], log_q

        return jax.vmap(one)(jax.random.split(key, n))
