"""Inference backends, registered by name (see :func:`available`)."""

from vaequery.backends._base import (
    INITS,
    AmortizedBackend,
    Backend,
    Fit,
    VIBackend,
    VIState,
    available,
    get,
    negative_elbo,
    register,
)
from vaequery.backends.chees import ChEES
from vaequery.backends.fcn import FCN
from vaequery.backends.feature_vi import FeatureVI
from vaequery.backends.fill_zeros import FillZeros, RetunedEncoder
from vaequery.backends.fullrank import FullRank
from vaequery.backends.gaussian import Gaussian
from vaequery.backends.gibbs import MetropolisWithinGibbs, PseudoGibbs
from vaequery.backends.grid import Grid
from vaequery.backends.hierarchical import Hierarchical
from vaequery.backends.hmc import HMC, NUTS, MCMCBackend
from vaequery.backends.iaf import IAF
from vaequery.backends.mixture import Mixture
from vaequery.backends.numpyro_svi import NumPyroSVI
from vaequery.backends.pathfinder import Pathfinder
from vaequery.backends.planar import Planar
from vaequery.backends.posterior_matching import DecoderOnly, PosteriorMatching

__all__ = [
    "INITS",
    "AmortizedBackend",
    "ChEES",
    "Backend",
    "DecoderOnly",
    "FCN",
    "FillZeros",
    "PosteriorMatching",
    "RetunedEncoder",
    "FeatureVI",
    "Fit",
    "FullRank",
    "Gaussian",
    "Grid",
    "IAF",
    "Mixture",
    "NumPyroSVI",
    "Pathfinder",
    "Planar",
    "HMC",
    "Hierarchical",
    "MCMCBackend",
    "MetropolisWithinGibbs",
    "NUTS",
    "PseudoGibbs",
    "VIBackend",
    "VIState",
    "available",
    "get",
    "negative_elbo",
    "register",
]
