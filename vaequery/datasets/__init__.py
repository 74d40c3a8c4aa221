"""Offline datasets and missingness patterns for queries and training.

>>> from vaequery import datasets
>>> table = datasets.load("white_wine", split="test")   # raw units, schema with scaling
>>> X, target = table.with_missing(key=1)               # QAVI: floor(D/2) features per row

Bundled: ``breast_cancer``, ``white_wine``, ``red_wine``, ``banknote``,
``concrete``, ``yeast``, ``digits`` and the mixed-type ``penguins`` (categorical
``species``, ``island``, ``sex``). ``mnist`` and ``fashion_mnist`` are read from
a path the user supplies; nothing is ever downloaded. Attribution for the bundled
files is in ``vaequery/datasets/data/SOURCES.md``.
"""

from vaequery.datasets import missing
from vaequery.datasets._tables import (
    BUNDLED,
    SPLIT_FRACTIONS,
    SPLIT_SEED,
    MaskedTable,
    Table,
    available,
    load,
)
from vaequery.datasets.missing import bernoulli, half_features, random_patches, rotating_half

__all__ = [
    "BUNDLED",
    "SPLIT_FRACTIONS",
    "SPLIT_SEED",
    "MaskedTable",
    "Table",
    "available",
    "bernoulli",
    "half_features",
    "load",
    "missing",
    "random_patches",
    "rotating_half",
]
