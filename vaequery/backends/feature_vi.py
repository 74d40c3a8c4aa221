r"""Variational inference over the missing features (QAVI "Feat. QAVI", §3.1).

For one query the variational family is hierarchical,
:math:`q_\lambda(x_M, z) = q_\lambda(x_M)\,q_\phi(z \mid x_O, x_M)`: a diagonal
Gaussian :math:`q_\lambda(x_M) = \mathcal N(m, \operatorname{diag} s^2)` over
*every* unobserved feature of the row (model units, i.e. standardised), pushed
through the model's pretrained encoder :math:`q_\phi(z \mid x)`. Each Monte-Carlo
sample completes the row, :math:`x^{(s)} = (x_O, x_M^{(s)})` with
:math:`x_M^{(s)} = m + s \odot \varepsilon`, encodes it and draws
:math:`z^{(s)} = \mu_\phi(x^{(s)}) + \sigma_\phi(x^{(s)}) \odot \eta`
(both reparameterised). Adam maximises QAVI eq. (6)-(7),

.. math::
    \mathcal L_M(\lambda) = \frac1S \sum_{s=1}^S \Big[\log p(x_O, x_M^{(s)} \mid z^{(s)})
    - \beta\,\mathrm{KL}\big(q_\phi(z \mid x^{(s)})\,\|\,\mathcal N(0, I)\big)\Big]
    + \gamma\,\mathbb H[q_\lambda(x_M)],

with the KL and the entropy (over the unobserved features only) in closed
form; the loss trace is :math:`-\mathcal L_M`. Only the decoder's likelihood of
the completed row is needed, through :meth:`vaequery.model.Target.loglik_fn` with
an all-observed mask (soft evidence from ``Query.where`` is included there).
With an exact encoder and :math:`\beta = \gamma = 1` the objective is the ELBO
:math:`\mathbb E_{q_\lambda}[\log p(x_O, x_M)] + \mathbb H[q_\lambda]`, so
:math:`q_\lambda` is the mean-field Gaussian approximation of
:math:`p(x_M \mid x_O)`: the mean of :math:`z` is then exact, its spread too small
(the correlations between missing features are lost), by far where few features
are observed.

Defaults
    QAVI uses :math:`\beta = 50`, :math:`\gamma = 10` for images, where the plain
    ELBO gave missing-feature posteriors with unrealistically small variance
    (reference notes). For tables vaequery keeps :math:`\beta = \gamma = 1`, the
    proper ELBO. On the linear-Gaussian oracle with its exact encoder it then
    recovers the exact posterior mean of :math:`z` within Monte-Carlo error (the
    variances of :math:`z` are those of the mean-field optimum in :math:`x_M`,
    0.07-1.05 times the exact ones; ``tests/test_feature_vi.py``), whereas the
    optimum under :math:`\beta = 50, \gamma = 10` moves the mean of :math:`z`
    by 0.8-1.3 posterior sd on average (up to 5) and the variances to 0.1-2.7
    times the exact ones (two oracles, 64 rows each). On the shipped
    ``breast_cancer`` model (64 test rows, half the features hidden) the image
    setting :math:`\beta = 50, \gamma = 10` gives a mean IWAE
    :math:`\log p(x_U \mid x_O)` of -6.6 nats against -1.7 with
    :math:`\beta = \gamma = 1` (``red_wine``: -4.96 against -4.87).
    ``S = 100`` samples and ``T = 300`` Adam steps as QAVI. The learning rate is
    a cosine decay from 0.3 to 1 % of it (the schedule of
    :class:`~vaequery.backends.Gaussian`): on a ``d = 8``, ``D = 24`` oracle a
    peak of 0.1 leaves the mean of :math:`z` up to 0.6 posterior sd off after
    300 steps (0.03: 3 sd), 0.3 within 0.08 sd, as accurate as 1,000 steps at
    0.1; on ``breast_cancer`` 0.3 ends at a loss of 13.9 against 15.7 at 0.1.

Parameters start at the decoder's mean of the encoder's code for the zero-filled
row (the observed entries keep their values) with :math:`s = 1`, the scale of a
standardised feature. The ``init`` starts of the other variational backends
do not apply (:math:`q_\lambda` lives in feature space): only ``"auto"`` /
``"encoder"`` are accepted.

Draws and importance proposal
    ``Fit.z`` holds draws of the hierarchical :math:`q`: :math:`x_M \sim q_\lambda`,
    then :math:`z \sim q_\phi(z \mid x)`. Its density in :math:`z` alone is an
    intractable mixture, so the state handed to
    :meth:`FeatureVI.sample_and_log_prob` (the IWAE / PSIS proposal) is, as for
    the MCMC backends, a Gaussian fitted to ``num_proposal_draws`` draws of
    :math:`z` with the standard deviations multiplied by ``proposal_scale`` and a
    small ridge (:func:`vaequery.backends.hmc.fit_gaussian`). The widening is
    1.5 rather than the MCMC backends' 1.2 because the draws are too narrow
    where few features are observed (above). Measured PSIS k-hat of the proposal
    (median; share of rows above 0.7) on the shipped models, 64 test rows with
    half the features hidden: ``red_wine`` (``d = 6``) 0.55, 20 % at 1.2; 0.28,
    6 % at 1.5; 0.13, 0 % at 2.0; ``breast_cancer`` (``d = 16``) 0.61, 38 % at
    1.2; 0.49, 22 % at 1.5; 1.25, 97 % at 2.0 (too wide in 16 dimensions). The
    fitted :math:`q_\lambda(x_M)` itself is returned in ``Fit.info``
    (``x_loc``, ``x_scale``, ``[D]`` per query; observed entries are the
    evidence with scale 0).

Feature kinds
    :math:`q_\lambda` is Gaussian over real values. Binary features are relaxed
    (the Bernoulli density is evaluated at real values; untested); categorical
    features are refused.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from vaequery.backends._base import Fit, VIBackend, register
from vaequery.backends.gaussian import _schedule
from vaequery.backends.hmc import fit_gaussian, gaussian_sample_and_log_prob
from vaequery.likelihoods import Categorical, Mixed
from vaequery.model import encode_row

_HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)


def _decoder_mean(target, z):
    """Predictive mean ``[D]`` of ``p(x | z)`` in model units."""
    params = target.decode_fn(z)
    likelihood = getattr(target.sample_x_fn, "likelihood", None)
    if likelihood is not None:
        return likelihood.mean(params)
    if isinstance(params, dict):
        return params["loc"]
    return jnp.asarray(params)


def _check_feature_kinds(target):
    likelihood = getattr(target.sample_x_fn, "likelihood", None)
    if isinstance(likelihood, Categorical) or (
        isinstance(likelihood, Mixed) and "categorical" in likelihood.columns
    ):
        raise ValueError(
            "backend 'feature_vi' places a Gaussian on the missing features' values "
            "and cannot model categorical features; use an inference backend over z "
            "(e.g. 'gaussian') for models with categorical features"
        )


@register("feature_vi")
class FeatureVI(VIBackend):
    """Feat. QAVI: a diagonal Gaussian over the missing features, encoded to ``z``.

    See the module docstring for the objective, the defaults and the proposal.

    Parameters
    ----------
    num_steps : int, default 300
        Adam steps (QAVI: 300).
    num_samples : int, default 100
        Monte-Carlo samples ``S`` of ``(x_M, z)`` per step (QAVI: 100).
    learning_rate : float or optax schedule, default 0.3
        A float is the peak of a cosine decay to 1 % over ``num_steps``.
    beta : float, default 1.0
        Weight of the encoder's KL to the prior (QAVI: 50 for images).
    entropy_weight : float, default 1.0
        Weight ``gamma`` of the entropy of ``q(x_M)`` (QAVI: 10 for images).
    optimizer : {"adam", "lbfgs"}, default "adam"
        As :class:`~vaequery.backends.VIBackend`.
    num_proposal_draws : int, default 1000
        Draws of ``z`` the Gaussian importance proposal is fitted to.
    proposal_scale : float, default 1.5
        Inflation of that Gaussian's standard deviations.

    Notes
    -----
    ``Fit.state`` is the Gaussian proposal ``{"loc": [d], "chol": [d, d]}``;
    ``Fit.info`` holds ``final_loss`` and the fitted ``x_loc``, ``x_scale``
    ``[D]``.
    """

    needs_encoder: ClassVar[bool] = True

    num_steps: int = 300
    num_samples: int = 100
    learning_rate: Any = 0.3
    beta: float = 1.0
    entropy_weight: float = 1.0
    num_proposal_draws: int = 1000
    proposal_scale: float = 1.5

    def __check_init__(self):
        w = self.entropy_weight
        if isinstance(w, bool) or not (isinstance(w, (int, float)) and w > 0):
            raise ValueError(f"entropy_weight must be a positive number, got {w!r}")
        n = self.num_proposal_draws
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"num_proposal_draws must be an integer >= 2, got {n!r}")
        if not (isinstance(self.proposal_scale, (int, float)) and self.proposal_scale > 0):
            raise ValueError(f"proposal_scale must be > 0, got {self.proposal_scale!r}")

    def bind(self, model):
        if self.init not in ("auto", "encoder"):
            raise ValueError(
                "feature_vi starts from the encoder's reconstruction of the zero-filled row "
                f"(its q lives over the missing features); init={self.init!r} is not supported"
            )
        return self

    def adam(self):
        return optax.adam(_schedule(self.learning_rate, self.num_steps))

    def init_params(self, key, target, row):
        """``{"loc": [D], "log_scale": [D]}``: the decoded encoder code, scale 1."""
        x, observed = row["x"], row["observed"]
        z0, _ = encode_row(target.encode_fn, jnp.where(observed, x, 0.0), observed=observed)
        x0 = _decoder_mean(target, z0).astype(x.dtype)
        return {"loc": jnp.where(observed, x, x0), "log_scale": jnp.zeros_like(x)}

    def sample_x_z(self, params, key, target, row, n):
        """``n`` draws of the hierarchical ``q``.

        Returns
        -------
        (x [n, D], z [n, d], z_loc [n, d], z_scale [n, d])
            Completed rows (observed entries copied), codes and the encoder's
            Gaussian for each completed row.
        """
        x_obs, observed = row["x"], row["observed"]
        D, d = x_obs.shape[-1], target.latent_dim
        # One flat draw, reshaped: with JAX's partitionable threefry a 2-D
        # ``normal(key, (n, D))`` under vmap takes seconds longer to compile.
        eps = jax.random.normal(key, (n * (D + d),), x_obs.dtype).reshape(n, D + d)
        x_m = params["loc"] + jnp.exp(params["log_scale"]) * eps[:, :D]
        x = jnp.where(observed, x_obs, x_m)
        full = jnp.ones(D, bool)  # completed rows: every feature is present
        z_loc, z_scale = jax.vmap(lambda r: encode_row(target.encode_fn, r, observed=full))(x)
        z = z_loc + z_scale * eps[:, D:]
        return x, z, z_loc, z_scale

    def feature_entropy(self, params, observed):
        """Entropy of ``q(x_M)`` over the unobserved features of the row."""
        h = params["log_scale"] + _HALF_LOG_2PIE
        return jnp.sum(jnp.where(observed, 0.0, h))

    def loss_fn(self, params, key, target, row):
        """``-L_M`` (QAVI eq. 7) with ``num_samples`` samples."""
        observed = row["observed"]
        x, z, z_loc, z_scale = self.sample_x_z(params, key, target, row, self.num_samples)
        # a row dict of its own: the caller's row may carry extra keys
        full = jnp.ones_like(observed)
        loglik = jax.vmap(lambda zs, xs: target.loglik_fn(zs, {"x": xs, "observed": full}))(z, x)
        kl = 0.5 * jnp.sum(z_loc**2 + z_scale**2 - 1.0 - 2.0 * jnp.log(z_scale), -1)
        return -(
            jnp.mean(loglik - self.beta * kl)
            + self.entropy_weight * self.feature_entropy(params, observed)
        )

    def run_one(self, key, target, row, num_draws):
        _check_feature_kinds(target)
        k_init, k_steps, k_draw, k_prop = jax.random.split(key, 4)
        params, loss = self.fit_params(k_init, k_steps, target, row)
        _, z, _, _ = self.sample_x_z(params, k_draw, target, row, num_draws)
        _, z_prop, _, _ = self.sample_x_z(params, k_prop, target, row, self.num_proposal_draws)
        observed = row["observed"]
        info = {
            "final_loss": loss[-1],
            "x_loc": params["loc"],
            "x_scale": jnp.where(observed, 0.0, jnp.exp(params["log_scale"])),
        }
        if self.tol is not None:
            info["num_steps_used"] = self.steps_used(loss)
        return Fit(fit_gaussian(z_prop, self.proposal_scale), z, loss, info)

    def sample_and_log_prob(self, state, key, n):
        """Draws of the Gaussian proposal fitted to ``z`` (module docstring)."""
        return gaussian_sample_and_log_prob(state, key, n)
