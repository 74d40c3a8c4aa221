"""Metrics of conditional queries: see :mod:`vaequery.report.metrics`.

Kept so that ``vaequery.metrics.iwae_log_likelihood``, ``nrmse`` and ``hdi``
stay where users found them; the definitions live in the reporting layer.
"""

from vaequery.report.metrics import (
    _iwae,
    hdi,
    iwae_log_likelihood,
    log_likelihood,
    nrmse,
    posterior_nrmse,
    true_model_units,
)

__all__ = [
    "_iwae",
    "hdi",
    "iwae_log_likelihood",
    "log_likelihood",
    "nrmse",
    "posterior_nrmse",
    "true_model_units",
]
