"""Trainable model families beside the plain VAE (:mod:`vaequery.vae`).

:mod:`vaequery.models.vaeac`
    VAEAC (Ivanov et al., 2019): a VAE trained for arbitrary conditioning,
    built by ``vaequery.train(..., method="vaeac")``.
"""

from vaequery.models.vaeac import VAEACModel, VAEACPosterior, VAEACQuery, train_vaeac

__all__ = ["VAEACModel", "VAEACPosterior", "VAEACQuery", "train_vaeac"]
