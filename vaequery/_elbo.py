"""Masked-ELBO pieces shared by the VAE trainer and guide training (imports no trainer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _raw_values(data, schema):
    """Table / MaskedTable / DataFrame / array -> raw float ``[N, D]`` (codes, NaN = missing)."""
    from vaequery.schema import encode

    raw = getattr(data, "X", data)
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "biuf":
        raw = encode(raw, schema)
    raw = np.asarray(raw, dtype=float)
    if raw.ndim != 2 or raw.shape[1] != len(schema):
        raise ValueError(f"data must have shape [N, {len(schema)}], got {raw.shape}")
    for j, f in enumerate(schema.features):
        if f.kind == "real":
            continue
        col = raw[:, j]
        bad = ~np.isnan(col) & ((col != np.round(col)) | (col < 0) | (col >= f.num_levels))
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"feature {f.name!r} ({f.kind}) in row {r} has the value {col[r]:g}; "
                f"accepted: integer codes 0..{f.num_levels - 1} or NaN (missing)"
            )
    return raw


def _model_units(data, schema):
    """Table / MaskedTable / DataFrame / array (raw units, NaN = missing) -> (x0, mask) float32."""
    raw = _raw_values(data, schema)
    mask = ~np.isnan(raw)
    x = np.where(mask, schema.standardise(np.where(mask, raw, 0.0)), 0.0)
    return jnp.asarray(x, jnp.float32), jnp.asarray(mask)


def _row_elbo(encoder, decoder, likelihood, key, x, mask, num_samples=1):
    """ELBO per row ``[N]`` (mean over ``num_samples`` draws), standardised units."""
    loc, scale = encoder(x)
    eps = jax.random.normal(key, (num_samples,) + loc.shape)
    z = loc + scale * eps  # [S, N, d]
    # discrete heads gather by code: give every draw its own copy of the row
    x, mask = (jnp.broadcast_to(a, z.shape[:-1] + a.shape[-1:]) for a in (x, mask))
    ll = likelihood.log_prob(x, decoder(z), mask).mean(0)
    kl = 0.5 * jnp.sum(scale**2 + loc**2 - 1.0 - 2.0 * jnp.log(scale), -1)
    return ll - kl
