"""Amortized guides that belong to a model: trained once, then answer any query in one pass.

See :mod:`vaequery.guides.training` for the objectives, :mod:`vaequery.guides.networks`
for the partial encoder and its heads, :mod:`vaequery.guides.masks` for the
training mask distributions, :mod:`vaequery.guides.lookahead` for posterior
matching's lookahead network (feature acquisition).
"""

from vaequery.guides.guide import KINDS, Guide
from vaequery.guides.lookahead import LookaheadNetwork, train_lookahead
from vaequery.guides.masks import (
    MCAR,
    HalfMissing,
    MaskDistribution,
    MixtureOfMasks,
    Patches,
    UniformCount,
    as_mask_distribution,
)
from vaequery.guides.networks import ARMixtureHead, GaussianHead, PartialEncoder, ResidualMLP
from vaequery.guides.training import (
    train_decoder_only,
    train_posterior_matching,
    train_retuned_encoder,
)

__all__ = [
    "ARMixtureHead",
    "GaussianHead",
    "Guide",
    "HalfMissing",
    "KINDS",
    "LookaheadNetwork",
    "MCAR",
    "MaskDistribution",
    "MixtureOfMasks",
    "PartialEncoder",
    "Patches",
    "ResidualMLP",
    "UniformCount",
    "as_mask_distribution",
    "train_decoder_only",
    "train_lookahead",
    "train_posterior_matching",
    "train_retuned_encoder",
]
