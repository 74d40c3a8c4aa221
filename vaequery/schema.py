"""Feature schema: names, kinds and scaling of the columns a model decodes.

A :class:`Schema` is the single place that knows which column is which. Queries
use it to turn feature names into column indices, likelihoods use it to know the
kind of each column, and datasets use it to move between raw and standardised
units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

KINDS = ("real", "binary", "categorical")


class UnknownFeatureError(KeyError, ValueError):
    """A feature name the model does not have.

    Both a ``KeyError`` (a failed look-up by name) and a ``ValueError`` (bad
    input to a query), so either ``except`` clause catches it.
    """

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its message, quotes and all
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class Feature:
    """One column of the data.

    Parameters
    ----------
    name : str
        Feature name used in queries (``model.given(name=value)``).
    kind : {"real", "binary", "categorical"}
        Real-valued (Gaussian), binary 0/1 (Bernoulli) or categorical with
        integer codes ``0 .. num_levels - 1`` (Categorical).
    num_levels : int, optional
        Number of levels of a categorical feature (2 for binary, 0 for real).
    loc, scale : float
        Standardisation: the model works in ``(raw - loc) / scale`` units.
        Identity (0, 1) unless a dataset says otherwise.
    levels : tuple of str, optional
        Human-readable names of the categorical levels.
    """

    name: str
    kind: str = "real"
    num_levels: int = 0
    loc: float = 0.0
    scale: float = 1.0
    levels: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "binary":
            object.__setattr__(self, "num_levels", 2)
        if self.kind == "categorical" and self.num_levels < 2:
            raise ValueError(
                f"categorical feature {self.name!r} needs num_levels >= 2, got {self.num_levels}"
            )
        if not self.scale > 0:
            raise ValueError(f"feature {self.name!r}: scale must be > 0, got {self.scale}")

    def to_dict(self) -> dict:
        """JSON-serialisable form of the feature."""
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        return d


@dataclasses.dataclass(frozen=True)
class Schema:
    """An ordered collection of :class:`Feature`.

    Parameters
    ----------
    features : sequence of Feature
        One per column, in column order. Names must be unique.
    """

    features: tuple

    def __post_init__(self):
        feats = tuple(f if isinstance(f, Feature) else Feature(str(f)) for f in self.features)
        object.__setattr__(self, "features", feats)
        names = [f.name for f in feats]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"feature names must be unique; repeated: {dup}")
        if not feats:
            raise ValueError("a schema needs at least one feature")

    @classmethod
    def from_names(cls, names: Sequence[str], kind: str = "real") -> Schema:
        """Schema of ``len(names)`` features of one kind."""
        return cls(tuple(Feature(str(n), kind) for n in names))

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(Feature(**{**f, "levels": tuple(f.get("levels", ()))}) for f in d["features"])
        )

    def to_dict(self) -> dict:
        """JSON-serialisable form of the schema."""
        return {"features": [f.to_dict() for f in self.features]}

    @property
    def names(self) -> list[str]:
        """Feature names in column order."""
        return [f.name for f in self.features]

    @property
    def kinds(self) -> list[str]:
        """Feature kinds in column order."""
        return [f.kind for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self):
        return iter(self.features)

    def index(self, name: str) -> int:
        """Column index of feature ``name`` with a helpful error if unknown.

        Raises
        ------
        TypeError
            ``name`` is not a string.
        UnknownFeatureError
            No feature has that name (a ``KeyError`` and a ``ValueError``).
        """
        if not isinstance(name, str):
            raise TypeError(
                f"features are named by strings, got {type(name).__name__} {name!r}; "
                f"known features: {self.names}"
            )
        try:
            return self.names.index(name)
        except ValueError:
            close = [n for n in self.names if name.lower() in n.lower()]
            hint = f" Did you mean {close}?" if close else ""
            raise UnknownFeatureError(
                f"unknown feature {name!r}.{hint} Known features: {self.names}"
            ) from None

    def indices(self, kind: str) -> np.ndarray:
        """Column indices of all features of ``kind``."""
        return np.array([i for i, f in enumerate(self.features) if f.kind == kind], int)

    @property
    def loc(self) -> np.ndarray:
        """Per-feature standardisation offsets, shape ``[D]``."""
        return np.array([f.loc for f in self.features], float)

    @property
    def scale(self) -> np.ndarray:
        """Per-feature standardisation scales, shape ``[D]``."""
        return np.array([f.scale for f in self.features], float)

    def standardise(self, x_raw):
        """Raw units -> model units (categorical/binary columns untouched)."""
        real = np.array([f.kind == "real" for f in self.features])
        x = np.asarray(x_raw, float)
        return np.where(real, (x - self.loc) / self.scale, x)

    def unstandardise(self, x):
        """Model units -> raw units (categorical/binary columns untouched)."""
        real = np.array([f.kind == "real" for f in self.features])
        x = np.asarray(x, float)
        return np.where(real, x * self.scale + self.loc, x)
