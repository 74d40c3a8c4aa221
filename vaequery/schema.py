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


# ----------------------------------------------------------------- inference
def _is_missing(v) -> bool:
    """``None``, NaN and pandas' NA / NaT."""
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN and NaT are the values unequal to themselves
    except (TypeError, ValueError):  # pd.NA raises in bool()
        return True


def _level_name(v) -> str:
    """Level name of a raw value: ``3.0`` -> ``"3"``, ``"red"`` -> ``"red"``."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _columns(data, names):
    """``(names, [column as 1-D object-or-numeric ndarray], [is_textual])``."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        if names is not None:
            raise TypeError(
                "names= is for arrays; a DataFrame's column names are its feature names "
                "(rename the columns instead)"
            )
        cols, textual = [], []
        for c in data.columns:
            s = data[c]
            is_text = (
                isinstance(s.dtype, pd.CategoricalDtype)
                or pd.api.types.is_object_dtype(s.dtype)
                or pd.api.types.is_string_dtype(s.dtype)
            )
            if pd.api.types.is_bool_dtype(s.dtype):
                cols.append(s.to_numpy(object))
                textual.append("bool")
            elif is_text:
                cols.append(s.astype(object).to_numpy(object))
                textual.append("text")
            else:
                cols.append(s.to_numpy(float, na_value=np.nan))
                textual.append("number")
        return [str(c) for c in data.columns], cols, textual
    if isinstance(data, Sequence) and not isinstance(data, str) and len(data) == 0:
        raise ValueError("cannot infer a schema from an empty table (no rows)")
    a = np.asarray(data)
    if a.ndim != 2:
        raise ValueError(f"data must be a table [N, D] (2-D), got shape {a.shape}")
    if names is None:
        raise TypeError(
            f"a plain array [N, {a.shape[1]}] carries no feature names, so its schema cannot be "
            f"inferred: pass names=[...] ({a.shape[1]} strings, one per column), a pandas "
            "DataFrame, or schema=vaequery.Schema(...)"
        )
    names = [str(n) for n in names]
    if len(names) != a.shape[1]:
        raise ValueError(f"names has {len(names)} entries but the data have {a.shape[1]} columns")
    if a.dtype == bool:
        return names, [a[:, j].astype(object) for j in range(a.shape[1])], ["bool"] * a.shape[1]
    if a.dtype.kind in "biuf":
        cols = [a[:, j].astype(float) for j in range(a.shape[1])]
        return names, cols, ["number"] * a.shape[1]
    cols, textual = [], []
    for j in range(a.shape[1]):
        col = a[:, j].astype(object)
        try:
            cols.append(np.array([np.nan if _is_missing(v) else float(v) for v in col], float))
            textual.append("number")
        except (TypeError, ValueError):
            cols.append(col)
            textual.append("text")
    return names, cols, textual


def infer_schema(data, names=None, kinds=None) -> Schema:
    """Infer a :class:`Schema` (kinds, levels, standardisation) from a table.

    Rules, column by column (missing values -- NaN, None -- are ignored):

    * a ``bool`` column, or a numeric one whose observed values are exactly
      ``{0, 1}``, is ``"binary"``;
    * a text column (pandas ``category``, ``object`` or ``string`` dtype, or
      strings in an object array) is ``"categorical"``, its level names the
      sorted distinct values;
    * any other numeric column is ``"real"``, standardised with the observed
      values' mean and standard deviation (``scale = 1`` for a constant
      column).

    Parameters
    ----------
    data : pandas.DataFrame or array ``[N, D]``
        Raw values. An array needs ``names``.
    names : sequence of str, optional
        Column names of an array.
    kinds : dict of str to str, optional
        Overrides, e.g. ``{"grade": "categorical"}``: a numeric column made
        categorical gets its sorted distinct values as levels (``3.0`` is
        named ``"3"``); a two-valued text column may be made ``"binary"``
        (level names sorted, codes 0 and 1).

    Returns
    -------
    Schema

    Raises
    ------
    TypeError
        An array without ``names`` (no way to name its features).
    ValueError
        A column with no observed value, a text column declared ``"real"``,
        a ``"binary"`` column with other than two values, an unknown kind or
        an override for a column that does not exist.

    Examples
    --------
    >>> import pandas as pd
    >>> from vaequery.schema import infer_schema
    >>> df = pd.DataFrame({"age": [30.0, 50.0], "smoker": [0, 1], "city": ["Oslo", "Bergen"]})
    >>> s = infer_schema(df)
    >>> s.kinds, s.features[2].levels, s.features[0].loc
    (['real', 'binary', 'categorical'], ('Bergen', 'Oslo'), 40.0)
    """
    names, cols, textual = _columns(data, names)
    kinds = dict(kinds or {})
    unknown = sorted(set(kinds) - set(names))
    if unknown:
        raise ValueError(f"kinds= names columns that do not exist: {unknown}; columns: {names}")
    features = []
    for name, col, tx in zip(names, cols, textual):
        observed = [v for v in col if not _is_missing(v)] if tx != "number" else None
        if tx == "number":
            vals = col[~np.isnan(col)]
            n_obs = vals.size
        else:
            n_obs = len(observed)
        if n_obs == 0:
            raise ValueError(
                f"column {name!r} has no observed value, so neither its kind nor its scaling "
                "can be inferred; drop the column or pass schema="
            )
        kind = kinds.get(name)
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kinds[{name!r}] = {kind!r} is not one of {KINDS}")
        if kind is None:
            if tx == "bool":
                kind = "binary"
            elif tx == "text":
                kind = "categorical"
            else:
                kind = "binary" if set(np.unique(vals).tolist()) == {0.0, 1.0} else "real"
        if kind == "real":
            if tx != "number":
                raise ValueError(
                    f"column {name!r} holds text (e.g. {observed[0]!r}), so it cannot be "
                    "'real'; leave it categorical or convert it to numbers first"
                )
            loc, scale = float(vals.mean()), float(vals.std())
            features.append(Feature(name, "real", loc=loc, scale=scale if scale > 0 else 1.0))
            continue
        raw = vals.tolist() if tx == "number" else observed
        levels = tuple(sorted({_level_name(v) for v in raw}))
        if kind == "binary":
            if tx == "bool" or (tx == "number" and set(levels) <= {"0", "1"}):
                features.append(Feature(name, "binary"))
                continue
            if len(levels) != 2:
                raise ValueError(
                    f"column {name!r} has {len(levels)} distinct values {list(levels)[:10]}; "
                    "'binary' needs exactly two (or 0/1 numbers)"
                )
            features.append(Feature(name, "binary", levels=levels))
            continue
        if len(levels) < 2:
            raise ValueError(
                f"column {name!r} has a single value {levels[0]!r}; a categorical feature "
                "needs at least two levels (drop the column, or declare it 'real')"
            )
        features.append(Feature(name, "categorical", num_levels=len(levels), levels=levels))
    return Schema(tuple(features))


def encode(data, schema: Schema) -> np.ndarray:
    """A table in raw units as the float array ``[N, D]`` models read.

    Real columns are kept as numbers, binary and categorical ones become
    integer codes (level names are looked up in the schema), missing values
    (NaN, None) become NaN.

    Parameters
    ----------
    data : pandas.DataFrame or array ``[N, D]``
        A DataFrame's columns are matched by name (extra columns are
        ignored); an array's by position.
    schema : Schema

    Returns
    -------
    ndarray ``[N, D]`` of float

    Raises
    ------
    ValueError
        A missing column, a value that is not one of a feature's levels (the
        column, row and accepted levels are named) or text in a real column.
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        missing = [n for n in schema.names if n not in data.columns]
        if missing:
            raise ValueError(
                f"the table lacks the model's columns {missing}; it has {list(data.columns)}"
            )
        cols = [data[n].astype(object).to_numpy(object) for n in schema.names]
    else:
        a = np.asarray(data)
        if a.ndim != 2 or a.shape[1] != len(schema):
            raise ValueError(f"data must have shape [N, {len(schema)}], got {a.shape}")
        if a.dtype.kind in "biuf":
            return a.astype(float)
        cols = [a[:, j].astype(object) for j in range(a.shape[1])]
    n = len(cols[0]) if cols else 0
    out = np.full((n, len(schema)), np.nan)
    for j, (f, col) in enumerate(zip(schema.features, cols)):
        miss = np.fromiter((_is_missing(v) for v in col), bool, n)
        if f.levels:
            lookup = {name: k for k, name in enumerate(f.levels)}
            names = [v if isinstance(v, str) else _level_name(v) for v in col[~miss]]
            codes = np.array([lookup.get(name, -1) for name in names], float)
            bad = np.flatnonzero(codes < 0)
            if bad.size:
                r = int(np.flatnonzero(~miss)[bad[0]])
                raise ValueError(
                    f"feature {f.name!r} in row {r} has the value {col[r]!r}, which is not one "
                    f"of its levels {list(f.levels)}"
                )
            out[~miss, j] = codes
            continue
        try:
            out[~miss, j] = np.asarray(col[~miss], float)
        except (TypeError, ValueError):
            r = next(r for r in np.flatnonzero(~miss) if not _is_number(col[r]))
            raise ValueError(
                f"feature {f.name!r} ({f.kind}) in row {int(r)} has the text {col[r]!r}; "
                "it needs a number"
            ) from None
    return out


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True
