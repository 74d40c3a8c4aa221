r"""Fill-zeros (Nazábal et al. 2020; QAVI's baseline) and the re-tuned encoder.

``"fill_zeros"``: the model's encoder applied to the row with every unobserved
feature set to 0 (the standardised mean), taken as the posterior,
:math:`q(z) = \mathcal N(\mu_\phi(\tilde x), \operatorname{diag}\sigma_\phi^2(\tilde x))`.
The encoder never saw such rows in training, so the answer is biased
(posterior matching, appendix E).

``"retuned_encoder"``: the same, with a copy of the encoder fine-tuned on masked
rows with the decoder frozen (Collier et al. 2020), trained by
:func:`vaequery.guides.train_retuned_encoder` and stored in ``model.guides``.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from vaequery.backends._base import AmortizedBackend, bind_guide_network, register
from vaequery.backends.gaussian import diag_gaussian_sample_and_log_prob
from vaequery.model import encode_row


@register("fill_zeros")
class FillZeros(AmortizedBackend):
    """The encoder on the zero-filled row, no optimisation (QAVI "Fill Zeros")."""

    needs_encoder: ClassVar[bool] = True

    def _encode(self, target, x, observed):
        return encode_row(target.encode_fn, x, observed=observed)

    def row_state(self, target, row):
        observed = row["observed"]
        loc, scale = self._encode(target, jnp.where(observed, row["x"], 0.0), observed)
        return {"loc": loc, "log_scale": jnp.log(scale)}

    def sample_and_log_prob(self, state, key, n):
        return diag_gaussian_sample_and_log_prob(state["loc"], state["log_scale"], key, n)


@register("retuned_encoder")
class RetunedEncoder(FillZeros):
    """The encoder fine-tuned on masked rows (QAVI "Re-tuned Encoder").

    Parameters
    ----------
    guide : str, default "retuned_encoder"
        Name of the guide in ``model.guides``.
    """

    needs_encoder: ClassVar[bool] = False
    guide: str = "retuned_encoder"
    network: eqx.Module | None = None

    def bind(self, model):
        return bind_guide_network(self, model)[0]

    def _encode(self, target, x, observed):
        return encode_row(self.network, x, observed=observed)
