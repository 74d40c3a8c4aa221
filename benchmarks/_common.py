"""What the throughput benchmarks share: the breast-cancer-shaped model and queries."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import jax
import numpy as np

import vaequery as vq

RESULTS = Path(__file__).parent / "results"


def breast_cancer_model():
    """``(vae, description)``: the shipped model, or one of its shape with random weights."""
    try:
        return vq.pretrained("breast_cancer"), "vq.pretrained('breast_cancer')"
    except Exception:  # pretrained weights not available: same shape, random weights
        from vaequery.decoder import MLPDecoder

        dec = MLPDecoder(16, 30, (128, 128), key=jax.random.key(0))
        return vq.from_decoder(dec, 16, 30), "random MLPDecoder(16, 30, (128, 128))"


def random_queries(vae, n, seed=0):
    """``[n, D]`` raw-unit rows with about half the features observed (NaN elsewhere)."""
    rng = np.random.default_rng(seed)
    D = vae.num_features
    raw = vae.schema.unstandardise(rng.standard_normal((n, D)))
    obs = rng.random((n, D)) < 0.5
    return np.where(obs, raw, np.nan)


def machine():
    """What every result file records about where it ran (device, cores, platform, jax)."""
    return {
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
    }
