"""Trainable model families beside the plain VAE (:mod:`vaequery.vae`).

:mod:`vaequery.models.vaeac`
    VAEAC (Ivanov et al., 2019): a VAE trained for arbitrary conditioning,
    built by ``vaequery.train(..., method="vaeac")``.
:mod:`vaequery.models.hvae`
    A top-down hierarchical VAE (latent layers ``z1, z2, ...``), built by
    ``vaequery.train(..., method="hvae", hierarchy=[d1, d2])``.
"""

from vaequery.models.hvae import HVAEModel, MLPHierarchy, train_hvae
from vaequery.models.vaeac import VAEACModel, VAEACPosterior, VAEACQuery, train_vaeac

__all__ = [
    "HVAEModel",
    "MLPHierarchy",
    "train_hvae",
    "VAEACModel",
    "VAEACPosterior",
    "VAEACQuery",
    "train_vaeac",
]
