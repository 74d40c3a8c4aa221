r"""Posterior matching (Strauss & Oliva 2022): one network pass per query.

The model's trained partial encoder :math:`q_\theta(z\mid x_O, b)` (see
:func:`vaequery.guides.train_posterior_matching`) answers every row of a batch
in one forward pass: its head gives the per-row distribution, draws and
:math:`\log q` come from it, so IWAE, PSIS and ArviZ work as for every backend.
No per-query optimisation; accuracy is whatever the amortization gap leaves
(QAVI Table 1 puts it below non-amortized VI). To refine its answer, start a
VI backend from it: ``infer("gaussian", init="posterior_matching")``.

``"decoder_only"`` is the same backend reading the guide trained from the
decoder's own samples (:func:`vaequery.guides.train_decoder_only`).
"""

from __future__ import annotations

import equinox as eqx

from vaequery.backends._base import AmortizedBackend, bind_guide_network, register


@register("posterior_matching")
class PosteriorMatching(AmortizedBackend):
    """Answer queries with the model's trained partial encoder.

    Parameters
    ----------
    guide : str, default "posterior_matching"
        Name of the guide in ``model.guides`` (e.g. a mixture-head guide trained
        with ``name="pm_mixture"``).
    """

    guide: str = "posterior_matching"
    network: eqx.Module | None = None

    def bind(self, model):
        bound, g = bind_guide_network(self, model)
        if not hasattr(g.network, "head"):
            from vaequery.backends._base import available

            use = (
                f"answer with infer({g.kind!r})"
                if g.kind in available()
                else "it is not an inference backend ("
                + ("q.next_feature(method='lookahead')" if g.kind == "lookahead" else g.kind)
                + ")"
            )
            raise ValueError(
                f"guide {self.guide!r} is a {g.kind!r} guide, not a partial encoder; {use}"
            )
        return bound

    def row_state(self, target, row):
        return self.network.state(row["x"], row["observed"])

    def sample_and_log_prob(self, state, key, n):
        return self.network.sample_and_log_prob(state, key, n)


@register("decoder_only")
class DecoderOnly(PosteriorMatching):
    """Answer queries with the guide trained on the decoder's samples alone.

    Parameters
    ----------
    guide : str, default "decoder_only"
        Name of the guide in ``model.guides``.
    """

    guide: str = "decoder_only"
