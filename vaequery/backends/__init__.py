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

__all__ = [
    "Backend",
    "Fit",
    "Gaussian",
    "VIBackend",
    "VIState",
    "available",
    "get",
    "negative_elbo",
    "register",
]
