"""The small, deterministic search behind ``vaequery.train(..., tune=True)``.

Issue 18: on tables of a few hundred incomplete rows the best width, depth,
latent size and KL weight differ from table to table, and the test rows must
never choose them. :func:`tune_candidates` lists a handful of configurations;
:func:`vaequery.train` trains each with the same key (common random numbers:
the same shuffles, the same held-out entries), stops each on a fraction of the
observed *training* entries that it hides from training (``holdout``), and
keeps the configuration (and its best epoch) with the best held-out score.
Ties go to the earlier candidate, so the search is a pure function of the
training table, the options and the key.
"""

from __future__ import annotations

import itertools

#: The default search, relative to the number of features ``D``: latent sizes
#: as fractions of ``D`` (at least 1), widths/depths and KL weights. It is
#: preceded by the configuration ``train`` was given (its ``latent_dim``,
#: ``hidden``, ``beta``), so the search never scores worse on the held-out
#: entries than not searching. Kept to a handful of configurations so that
#: tuning costs a few trainings.
TUNE_GRID = (
    {"hidden": (128, 128), "latent": 0.5, "beta": 1.0},
    {"hidden": (128, 128), "latent": 0.25, "beta": 1.0},
    {"hidden": (64,), "latent": 0.5, "beta": 1.0},
    {"hidden": (128, 128), "latent": 0.5, "beta": 0.5},
)

#: Held-out fraction and epoch cap used by the search unless given.
TUNE_HOLDOUT = 0.1
TUNE_EPOCHS = 200

_KEYS = ("latent_dim", "hidden", "beta", "num_epochs", "holdout")


def _latent(num_features, fraction):
    return max(1, int(round(fraction * num_features)))


def tune_candidates(num_features: int, tune, base: dict) -> list[dict]:
    """The configurations the search trains, in order (ties go to the first).

    Parameters
    ----------
    num_features : int
        ``D``, the table's number of columns.
    tune : True or dict
        ``True``: ``train``'s own configuration, then :data:`TUNE_GRID`
        (latent sizes relative to ``D``). A dict
        replaces parts of it with a full grid over its lists: ``latent_dim``
        (ints), ``hidden`` (tuples of widths), ``beta`` (floats); and sets
        ``num_epochs`` (the cap of each run, default :data:`TUNE_EPOCHS`) and
        ``holdout`` (default :data:`TUNE_HOLDOUT`, or ``train``'s own when set).
    base : dict
        :func:`vaequery.train`'s other options (``num_importance``,
        ``encoder_mask``, ``weight_decay``, ``select_by``, ...), copied into
        every candidate.

    Returns
    -------
    list of dict
        Complete configurations for the trainer.

    Raises
    ------
    ValueError
        An unknown key or an empty or invalid list in ``tune``.
    """
    if tune is True:
        spec = {}
    elif isinstance(tune, dict):
        spec = dict(tune)
    else:
        raise TypeError(f"tune must be True, False or a dict of search lists, got {tune!r}")
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise ValueError(f"tune got unknown key(s) {unknown}; accepted: {list(_KEYS)}")
    holdout = float(spec.get("holdout", base["holdout"] or TUNE_HOLDOUT))
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"tune needs a holdout fraction in (0, 1), got {holdout!r}")
    epochs = int(spec.get("num_epochs", TUNE_EPOCHS))
    if epochs < 1:
        raise ValueError(f"tune's num_epochs must be >= 1, got {epochs}")
    if any(k in spec for k in ("latent_dim", "hidden", "beta")):
        lists = {}
        defaults = {"latent_dim": [base["latent_dim"]], "hidden": [base["hidden"]]}
        defaults["beta"] = [base["beta"]]
        for k in ("latent_dim", "hidden", "beta"):
            v = spec.get(k, defaults[k])
            v = list(v) if isinstance(v, (list, tuple)) and k != "hidden" else v
            if k == "hidden":
                v = [v] if v and isinstance(v[0], int) else list(v)
            if not v:
                raise ValueError(f"tune[{k!r}] is empty; give at least one value")
            lists[k] = v
        grid = [
            {"latent_dim": int(d), "hidden": tuple(int(h) for h in hs), "beta": float(b)}
            for d, hs, b in itertools.product(lists["latent_dim"], lists["hidden"], lists["beta"])
        ]
    else:
        given = {"latent_dim": int(base["latent_dim"]), "hidden": tuple(base["hidden"])}
        grid = [{**given, "beta": float(base["beta"])}] + [
            {
                "latent_dim": _latent(num_features, g["latent"]),
                "hidden": g["hidden"],
                "beta": g["beta"],
            }
            for g in TUNE_GRID
        ]
    out, seen = [], set()
    for g in grid:
        if g["latent_dim"] < 1 or g["beta"] <= 0 or not g["hidden"] or min(g["hidden"]) < 1:
            raise ValueError(
                f"tune: invalid candidate {g}; latent_dim and widths must be >= 1, beta > 0"
            )
        sig = (g["latent_dim"], g["hidden"], g["beta"])
        if sig in seen:  # small D can map two fractions to one latent size
            continue
        seen.add(sig)
        out.append({**base, **g, "num_epochs": epochs, "holdout": holdout})
    return out
