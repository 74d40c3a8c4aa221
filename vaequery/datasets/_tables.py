"""Offline dataset loaders: :func:`load`, :class:`Table` and :class:`MaskedTable`."""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np

from vaequery.datasets.missing import MaskedTable  # noqa: F401  (re-exported)
from vaequery.schema import Feature, Schema

DATA_DIR = Path(__file__).parent / "data"

#: QAVI's protocol: shuffle with seed 1234, then 65 / 15 / 20 % train / val / test.
SPLIT_SEED = 1234
SPLIT_FRACTIONS = (0.65, 0.15, 0.20)
SPLITS = ("train", "val", "test", "all")

_CONCRETE_NAMES = (
    "cement",
    "blast_furnace_slag",
    "fly_ash",
    "water",
    "superplasticizer",
    "coarse_aggregate",
    "fine_aggregate",
    "age",
    "strength",
)


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """A dataset split: raw values plus the schema a model needs.

    Attributes
    ----------
    name : str
    split : {"train", "val", "test", "all"}
    X : ndarray ``[N, D]``
        Raw units (float64).
    schema : vaequery.Schema
        Names, kinds and standardisation (``loc``/``scale`` computed on the whole
        dataset, QAVI).
    index : ndarray ``[N]``
        Row numbers in the original file, so splits can be checked for overlap.
    y : ndarray ``[N]`` or None
        Labels that are not features (digit, diagnosis, yeast class).
    image_shape : tuple or None
        ``(height, width)`` for image datasets.
    """

    name: str
    split: str
    X: np.ndarray
    schema: Schema
    index: np.ndarray
    y: np.ndarray | None = None
    image_shape: tuple | None = None
    y_levels: tuple = ()

    @property
    def shape(self) -> tuple:
        """``(N, D)``."""
        return self.X.shape

    @property
    def feature_names(self) -> list[str]:
        """Column names."""
        return self.schema.names

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, rows) -> Table:
        """Row subset (slice, index array or boolean mask) as a new table."""
        return dataclasses.replace(
            self,
            X=self.X[rows],
            index=self.index[rows],
            y=None if self.y is None else self.y[rows],
        )

    def __repr__(self) -> str:
        img = f", image_shape={self.image_shape}" if self.image_shape else ""
        return f"Table({self.name!r}, split={self.split!r}, shape={self.X.shape}{img})"

    def standardised(self) -> np.ndarray:
        """``X`` in model units, ``(X - loc) / scale``."""
        return self.schema.standardise(self.X)

    def to_pandas(self):
        """The table as a :class:`pandas.DataFrame` with the feature names as columns."""
        import pandas as pd

        return pd.DataFrame(self.X, columns=self.schema.names)

    def with_missing(
        self, rate=None, *, key=0, pattern=None, max_rows=None, **options
    ) -> MaskedTable:
        """Hide some entries to make query evidence.

        Parameters
        ----------
        rate : float, optional
            With a rate, each entry is hidden independently with this
            probability (MCAR, the VAEAC / posterior-matching protocol with 0.5).
            Without one, exactly ``floor(D / 2)`` features per row (QAVI).
        key : int or jax PRNG key
            Same key, same mask.
        pattern : {"half_features", "bernoulli", "patches", "rotating_half"}, optional
            Defaults to ``"bernoulli"`` with a rate and ``"half_features"``
            without. The image patterns (QAVI section 5) need an image dataset.
        max_rows : int, optional
            Keep only the first ``max_rows`` rows (QAVI uses up to 1,000 test rows).
        **options
            Passed to the pattern's generator (e.g. ``size=3`` for patches).

        Returns
        -------
        MaskedTable
            ``(X with NaN where hidden, target_mask)``.

        Examples
        --------
        >>> from vaequery import datasets
        >>> X, target = datasets.load("banknote", "test").with_missing(key=1)
        >>> int(target.sum(1).min()), int(target.sum(1).max())
        (2, 2)
        """
        from vaequery.datasets import missing

        table = self if max_rows is None else self[:max_rows]
        if pattern is None:
            pattern = "half_features" if rate is None else "bernoulli"
        if pattern == "half_features":
            if rate is not None:
                raise TypeError("pattern 'half_features' hides floor(D/2) features; drop rate=")
            return missing.half_features(table.X, key=key, **options)
        if pattern == "bernoulli":
            if rate is None:
                raise TypeError("pattern 'bernoulli' needs rate= (e.g. 0.5)")
            return missing.bernoulli(table.X, rate, key=key, **options)
        if pattern in ("patches", "rotating_half"):
            if table.image_shape is None:
                raise ValueError(
                    f"pattern {pattern!r} needs an image dataset; {self.name!r} is a table"
                )
            fn = missing.random_patches if pattern == "patches" else missing.rotating_half
            return fn(table.X, table.image_shape, key=key, **options)
        raise ValueError(
            f"unknown missingness pattern {pattern!r}; accepted: "
            "'half_features', 'bernoulli', 'patches', 'rotating_half'"
        )


# ----------------------------------------------------------------- loaders
def _read_csv(fname):
    import pandas as pd

    return pd.read_csv(DATA_DIR / fname)


def _clean(name: str) -> str:
    return "_".join(str(name).strip().split())


def _uci(fname, rename=None, drop=(), label=None):
    def loader(path=None):
        df = _read_csv(fname)
        y, levels = None, ()
        if label is not None:
            cat = df[label].astype("category")
            y, levels = cat.cat.codes.to_numpy(), tuple(cat.cat.categories)
            drop_cols = (*drop, label)
        else:
            drop_cols = drop
        df = df.drop(columns=list(drop_cols))
        names = rename or tuple(_clean(c) for c in df.columns)
        return df.to_numpy(float), names, y, levels, None

    return loader


def _penguins(path=None):
    # Palmer penguins (CC0): species, island and sex are categorical (level names
    # sorted); "NA" entries stay NaN. The survey year is not a feature.
    from vaequery.schema import encode, infer_schema

    df = _read_csv("penguins.csv").drop(columns=["year"])
    schema = infer_schema(df)
    return encode(df, schema), schema, None, (), None


def _breast_cancer(path=None):
    from sklearn.datasets import load_breast_cancer

    b = load_breast_cancer()
    names = tuple(_clean(n) for n in b.feature_names)
    return b.data.astype(float), names, b.target, tuple(b.target_names), None


def _digits(path=None):
    from sklearn.datasets import load_digits

    d = load_digits()
    names = tuple(f"px_{i}_{j}" for i in range(8) for j in range(8))
    return d.data.astype(float), names, d.target, (), (8, 8)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


_IDX = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _mnist_like(name):
    env = f"VAEQUERY_{name.upper()}_PATH"

    def loader(path=None):
        path = path or os.environ.get(env)
        if path is None:
            raise FileNotFoundError(
                f"{name!r} is not shipped with vaequery and is never downloaded. Pass "
                f"path= (a folder holding {_IDX['x_train']}.gz, {_IDX['y_train']}.gz, "
                f"{_IDX['x_test']}.gz, {_IDX['y_test']}.gz, or a {name}.npz file with "
                f"x_train/y_train/x_test/y_test) or set the environment variable {env}."
            )
        p = Path(path).expanduser()
        if p.is_dir() and (p / f"{name}.npz").exists():
            p = p / f"{name}.npz"
        if p.suffix == ".npz":
            if not p.exists():
                raise FileNotFoundError(
                    f"{name!r}: expected an .npz file at {p}; it does not exist"
                )
            with np.load(p) as f:
                arrays = {k: f[k] for k in _IDX}
        else:
            arrays = {}
            for k, stem in _IDX.items():
                cands = [p / f"{stem}.gz", p / stem]
                found = next((c for c in cands if c.exists()), None)
                if found is None:
                    raise FileNotFoundError(
                        f"{name!r}: expected the IDX file {cands[0]} (or {cands[1]}); it does "
                        f"not exist. vaequery never downloads data: put the four IDX files "
                        f"there or pass path= to a {name}.npz file."
                    )
                arrays[k] = _read_idx(found)
        x = np.concatenate([arrays["x_train"], arrays["x_test"]]).reshape(-1, 784)
        y = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(int)
        names = tuple(f"px_{i}_{j}" for i in range(28) for j in range(28))
        return x.astype(float), names, y, (), (28, 28), len(arrays["x_train"])

    return loader


_LOADERS = {
    "breast_cancer": _breast_cancer,
    "white_wine": _uci("white_wine.csv"),
    "red_wine": _uci("red_wine.csv"),
    "banknote": _uci("banknote.csv"),
    "concrete": _uci("concrete.csv", rename=_CONCRETE_NAMES),
    "yeast": _uci("yeast.csv", drop=("sequence_name",), label="class"),
    "digits": _digits,
    "penguins": _penguins,
    "mnist": _mnist_like("mnist"),
    "fashion_mnist": _mnist_like("fashion_mnist"),
}

#: Names that load without any user-supplied file.
BUNDLED = (
    "breast_cancer",
    "white_wine",
    "red_wine",
    "banknote",
    "concrete",
    "yeast",
    "digits",
    "penguins",
)


def available() -> list[str]:
    """Every dataset name :func:`load` knows (MNIST-like ones need ``path=``)."""
    return list(_LOADERS)


def _split_indices(n: int, split: str, official_train: int | None = None) -> np.ndarray:
    if split == "all":
        return np.arange(n)
    if official_train is not None:
        # MNIST-like: keep the official test set; the last 10,000 training images validate.
        n_val = min(10_000, official_train // 6)
        bounds = {
            "train": (0, official_train - n_val),
            "val": (official_train - n_val, official_train),
            "test": (official_train, n),
        }
        return np.arange(*bounds[split])
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_train = int(SPLIT_FRACTIONS[0] * n)
    n_val = int(SPLIT_FRACTIONS[1] * n)
    parts = {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
    return parts[split]


def load(name: str, split: str = "train", *, path=None) -> Table:
    """Load a dataset split, offline.

    Parameters
    ----------
    name : str
        One of :func:`available`: ``breast_cancer``, ``white_wine``, ``red_wine``,
        ``banknote``, ``concrete``, ``yeast``, ``digits``, ``penguins`` (bundled) or ``mnist``,
        ``fashion_mnist`` (read from ``path``).
    split : {"train", "val", "test", "all"}
        Tables: rows shuffled with seed 1234, then 65 / 15 / 20 % (QAVI).
        MNIST-like: the official test set; the last 10,000 training images are
        ``val``.
    path : str or Path, optional
        MNIST-like data only: a folder with the four IDX files (``.gz`` or not)
        or an ``.npz`` with ``x_train, y_train, x_test, y_test``. Default: the
        environment variable ``VAEQUERY_MNIST_PATH`` / ``VAEQUERY_FASHION_MNIST_PATH``.

    Returns
    -------
    Table

    Examples
    --------
    >>> from vaequery import datasets
    >>> t = datasets.load("white_wine", "test")
    >>> t.shape, t.feature_names[-1]
    ((981, 12), 'quality')
    """
    key = str(name).lower().replace("-", "_")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {available()}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {SPLITS}")
    out = _LOADERS[key](path)
    X, names, y, levels, image_shape = out[:5]
    official_train = out[5] if len(out) > 5 else None
    if isinstance(names, Schema):  # a mixed-kind table brings its own schema (whole-data scaling)
        schema = names
    elif image_shape is not None:
        top = float(X.max()) if key == "digits" else 255.0
        loc, scale = np.zeros(X.shape[1]), np.full(X.shape[1], top)
    else:
        loc, scale = X.mean(0), X.std(0)
        scale = np.where(scale > 0, scale, 1.0)
    if not isinstance(names, Schema):
        schema = Schema(
            tuple(
                Feature(n, "real", loc=float(m), scale=float(s))
                for n, m, s in zip(names, loc, scale)
            )
        )
    idx = _split_indices(len(X), split, official_train)
    return Table(
        name=key,
        split=split,
        X=X[idx],
        schema=schema,
        index=idx,
        y=None if y is None else np.asarray(y)[idx],
        image_shape=image_shape,
        y_levels=tuple(str(v) for v in levels),
    )
