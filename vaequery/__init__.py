"""vaequery: conditional queries on a pretrained VAE, answered in batch by many backends."""

from vaequery import backends, datasets, guides, likelihoods, models, stream, testing
from vaequery._version import __version__  # noqa: F401  (one place; io reads it too)
from vaequery.acquisition import acquire
from vaequery.cache import disable_compilation_cache, enable_compilation_cache
from vaequery.compare import Comparison, compare
from vaequery.fit import InferenceError, InferenceWarning
from vaequery.io import load, load_posterior, pretrained
from vaequery.posterior import Posterior
from vaequery.query import Interval, Query, above, below, between
from vaequery.report.imputation import rubin
from vaequery.schema import Feature, Schema
from vaequery.train import train
from vaequery.vae import VAE, from_decoder

__all__ = [
    "VAE",
    "Comparison",
    "Feature",
    "Interval",
    "InferenceError",
    "InferenceWarning",
    "Posterior",
    "Query",
    "Schema",
    "above",
    "acquire",
    "backends",
    "below",
    "between",
    "rubin",
    "compare",
    "datasets",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "from_decoder",
    "guides",
    "likelihoods",
    "models",
    "load",
    "load_posterior",
    "pretrained",
    "stream",
    "testing",
    "train",
]
