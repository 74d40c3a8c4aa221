"""Inference backends, registered by name (see :func:`available`)."""

from vaequery.backends._base import (
    Backend,
    Fit,
    VIBackend,
    VIState,
    available,
    get,
    negative_elbo,
    register,
)
from vaequery.backends.gaussian import Gaussian
from vaequery.backends.gibbs import MetropolisWithinGibbs, PseudoGibbs
from vaequery.backends.hmc import HMC, NUTS, MCMCBackend

__all__ = [
    "Backend",
    "Fit",
    "Gaussian",
    "HMC",
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
