"""Imputation of incomplete tables against classical imputers (VAEAC's protocol, issue 18).

The protocol of VAEAC (Ivanov et al. 2019, appendix A.2), at its 50 % and at 30 %:

1. Shuffle the whole table and split it 3:1 into train and test (a new split
   every repeat).
2. Hide each value independently with probability ``rate`` (missing completely
   at random) in **both** train and test.
3. Every method sees only the incomplete rows; it imputes the hidden test
   entries, which are then compared with the truth.
4. NRMSE of a table = mean over features of ``RMSE_j / sd_j``: the root mean
   squared error of the imputations over feature ``j``'s hidden test entries,
   divided by that feature's standard deviation on the (complete) test rows
   (VAEAC appendix A.2; posterior matching's code, REFERENCE_NOTES). Features
   with zero spread or no hidden test entry are left out of the mean.
5. Repeat (``--repeats``, VAEAC: 5) and report mean ± sd over repeats.

Methods:

* **vaequery**: a VAE trained by :func:`vaequery.train` on the incomplete
  train rows (its masked ELBO; 25 % of those rows held out for early stopping,
  as VAEAC selects its best epoch on 25 % of the training data; the schema's
  standardisation from the observed train entries only), then
  ``vae.given(X_test).infer(backend)`` and the posterior-predictive mean, the
  mean over draws of the decoder mean ``E[x | z]``. Backends: ``gaussian``
  (the default), ``fill_zeros`` (the trained encoder on the zero-filled row: the
  amortized posterior the masked-ELBO training itself fits) and, on request,
  ``mixture`` (QAVI's best family).
* **vaequery variants** (``--variants``, :data:`VARIANTS`; issue 18 item 2):
  models trained with the options of :func:`vaequery.train` for small,
  incomplete tables: MIWAE's importance-weighted bound (``num_importance``),
  the missingness mask as an encoder input, weight decay, early stopping on
  held-out training *entries* (``holdout``; every train row trains) and the
  small search of :mod:`vaequery.tuning` (``tune=True``). Besides the
  ``gaussian`` backend they impute by ``is``: the encoder's draws
  (``fill_zeros``, 500 per row) importance-resampled towards the posterior
  (``post.resample()``, PSIS over 5,000 proposals), MIWAE's own imputation.
  Every choice is made on training entries; test rows are only imputed.
* **scikit-learn**, all on features standardised with the observed train
  entries (``KNNImputer``'s distances need it): ``SimpleImputer(mean)``,
  ``KNNImputer(5)``, ``IterativeImputer(BayesianRidge)`` (MICE-like, 10 rounds)
  fitted on the train rows only and on train + test rows, and
  ``IterativeImputer(ExtraTreesRegressor)`` (MissForest-like) fitted on train +
  test rows, as MissForest imputes the matrix it is given.

VAEAC's published numbers (Table 1 for white wine and yeast, appendix Table 10
for the others it has) are printed beside; they are 50 % only.

Writes ``benchmarks/results/imputation.{json,md,png}`` (``imputation_quick.*``
with ``--quick``); asserts nothing about time. Everything is a function of
``--seed``: splits, masks, model initialisation and inference keys.

Usage: ``python benchmarks/imputation.py [--quick] [--tables yeast concrete]
[--rates 0.3 0.5] [--repeats 5] [--backends gaussian fill_zeros mixture]``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from _common import RESULTS, machine

import vaequery as vq
from vaequery.schema import Feature, Schema
from vaequery.tuning import TUNE_EPOCHS

#: The shipped UCI tables; ``digits`` (an 8x8 image) runs with ``--tables digits``.
TABLES = ["white_wine", "yeast", "red_wine", "concrete", "banknote", "breast_cancer"]

#: VAEAC (Ivanov et al. 2019), 50 % MCAR: NRMSE mean ± sd over 5 repeats.
#: White wine and yeast from Table 1; concrete, breast (UCI variant not stated)
#: and digits from appendix Table 10 (whose yeast row differs slightly from Table 1).
PUBLISHED = {
    "white_wine": {
        "source": "Table 1",
        "VAEAC": (0.850, 0.007),
        "MissForest": (0.878, 0.009),
        "MICE": (0.964, 0.007),
        "GAIN": (0.97, 0.02),
    },
    "yeast": {
        "source": "Table 1",
        "VAEAC": (0.94, 0.01),
        "MissForest": (1.02, 0.06),
        "MICE": (1.01, 0.01),
        "GAIN": (0.99, 0.03),
    },
    "concrete": {
        "source": "Table 10",
        "VAEAC": (0.84, 0.02),
        "MissForest": (0.78, 0.01),
        "MICE": (0.850, 0.007),
        "GAIN": (0.96, 0.01),
    },
    "breast_cancer": {
        "source": "Table 10 ('Breast')",
        "VAEAC": (0.55, 0.02),
        "MissForest": (0.515, 0.008),
        "MICE": (0.58, 0.02),
        "GAIN": (0.67, 0.01),
    },
    "digits": {
        "source": "Table 10",
        "VAEAC": (0.69, 0.02),
        "MissForest": (0.61, 0.02),
        "MICE": (0.69, 0.02),
        "GAIN": (0.79, 0.02),
    },
}

CLASSICAL = ["mean", "knn", "mice_train", "mice_train_test", "missforest_train_test"]

#: vaequery training variants (``--variants``): ``vq.train`` options and the
#: imputations scored. ``"vaequery"`` is the plain default (masked ELBO, early
#: stopping on 25 % of the train rows); the others train on every train row and
#: stop on 10 % of its observed entries held out. Labels: ``<variant>_<imputer>``.
VARIANTS = {
    "vaequery": {"train": {}, "imputers": None},  # None: the --backends
    "miwae": {
        "train": dict(num_importance=20, encoder_mask=True, weight_decay=0.05, holdout=0.1),
        "imputers": ["is", "gaussian"],
    },
    "miwae_tuned": {
        "train": dict(num_importance=20, encoder_mask=True, weight_decay=0.05, tune=True),
        "imputers": ["is"],
    },
}


def nrmse(x_hat, x_true, hidden):
    """VAEAC's NRMSE: mean over features of RMSE over hidden entries / the feature's sd.

    Parameters
    ----------
    x_hat, x_true : ndarray ``[N, D]``
        Imputed and complete test rows, raw units.
    hidden : bool ndarray ``[N, D]``
        The entries that were hidden (and are scored).

    Returns
    -------
    float
        Mean over the features that have a hidden entry and a non-zero sd on
        ``x_true`` (the complete test rows).
    """
    sd = x_true.std(0)
    err = np.where(hidden, (x_hat - x_true) ** 2, 0.0)
    count = hidden.sum(0)
    ok = (count > 0) & (sd > 0)
    rmse = np.sqrt(err.sum(0)[ok] / count[ok])
    return float(np.mean(rmse / sd[ok]))


def split_and_hide(X, rate, seed, repeat, max_test_rows=None):
    """One repeat of the protocol: a 3:1 split and MCAR masks on both parts.

    Parameters
    ----------
    X : ndarray ``[N, D]``
        The whole complete table, raw units.
    rate : float
        Probability that a value is hidden.
    seed, repeat : int
        The split is a function of ``(seed, repeat)``, the masks of ``(seed, repeat, rate)``.
    max_test_rows : int, optional
        Keep only this many of the test rows (the first of the shuffled test
        part), to bound the cost of per-row inference.

    Returns
    -------
    dict
        ``train`` (incomplete), ``test`` (incomplete), ``test_true`` (complete)
        and ``hidden`` (bool ``[N_test, D]``, the scored entries).
    """
    rng = np.random.default_rng([seed, repeat])
    perm = rng.permutation(len(X))
    n_train = int(round(0.75 * len(X)))
    train, test = X[perm[:n_train]], X[perm[n_train:]]
    if max_test_rows is not None:
        test = test[:max_test_rows]
    # Same split at every rate; masks differ by rate (and by part).
    k_train, k_test = np.random.default_rng([seed, repeat, round(1000 * rate)]).integers(
        2**31, size=2
    )
    train_inc = vq.datasets.bernoulli(train, rate, key=int(k_train)).X
    test_inc, hidden = vq.datasets.bernoulli(test, rate, key=int(k_test))
    return {"train": train_inc, "test": test_inc, "test_true": test, "hidden": hidden}


def train_schema(names, train_inc):
    """A schema standardised with the observed train entries only (no test information).

    Parameters
    ----------
    names : list of str
    train_inc : ndarray ``[N, D]``
        Incomplete train rows, NaN = hidden.

    Returns
    -------
    vaequery.Schema
    """
    loc = np.nanmean(train_inc, 0)
    scale = np.nanstd(train_inc, 0)
    scale = np.where(scale > 0, scale, 1.0)
    return Schema(
        tuple(
            Feature(n, "real", loc=float(m), scale=float(s)) for n, m, s in zip(names, loc, scale)
        )
    )


def impute_vaequery(names, data, backends, seed, repeat, train_kwargs, val_rows=True):
    """Train on the incomplete train rows, impute the test rows with each backend.

    Parameters
    ----------
    names : list of str
    data : dict
        From :func:`split_and_hide`.
    backends : list of str
        Registry names of vaequery backends, or ``"is"``: ``fill_zeros``
        draws importance-resampled with PSIS (:meth:`vaequery.Posterior.resample`).
    seed, repeat : int
    train_kwargs : dict
        Passed to :func:`vaequery.train`.
    val_rows : bool
        Hold out 25 % of the train rows for early stopping (the plain
        default); otherwise train on all of them (``holdout`` / ``tune``
        stop on held-out entries).

    Returns
    -------
    dict
        Per backend ``{"x_hat", "seconds"}`` plus ``"_train"`` with the
        training seconds and recipe.
    """
    train_inc = data["train"]
    schema = train_schema(names, train_inc)
    n_fit = int(round(0.75 * len(train_inc))) if val_rows else len(train_inc)
    t0 = time.perf_counter()
    vae = vq.train(
        train_inc[:n_fit],
        train_inc[n_fit:] if val_rows else None,
        schema=schema,
        key=seed * 101 + repeat,
        progress=False,
        **train_kwargs,
    )
    out = {"_train": {"seconds": time.perf_counter() - t0, "recipe": vae.metadata["recipe"]}}
    q = vae.given(data["test"])
    for b in backends:
        t0 = time.perf_counter()
        k = seed * 101 + repeat
        if b == "is":
            post = q.infer("fill_zeros", key=k, num_draws=500).resample(num_samples=5000, key=k + 1)
        else:
            post = q.infer(b, key=k)
        # Posterior-predictive mean: average of E[x | z] over the backend's draws.
        x_hat = np.asarray(post.x).reshape(len(data["test"]), -1, len(names)).mean(1)
        out[b] = {"x_hat": x_hat, "seconds": time.perf_counter() - t0}
    return out


def impute_classical(data, methods, seed, missforest_trees, missforest_rounds):
    """scikit-learn imputers on standardised features.

    Parameters
    ----------
    data : dict
        From :func:`split_and_hide`.
    methods : list of str
        Subset of :data:`CLASSICAL`.
    seed : int
        ``random_state`` of the iterative imputers and their trees.
    missforest_trees, missforest_rounds : int
        ``n_estimators`` of the ExtraTrees and ``max_iter`` of the
        MissForest-like imputer.

    Returns
    -------
    dict
        Per method ``{"x_hat", "seconds"}``, raw units.
    """
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
    from sklearn.linear_model import BayesianRidge

    tr, te = data["train"], data["test"]
    loc = np.nanmean(tr, 0)
    scale = np.nanstd(tr, 0)
    scale = np.where(scale > 0, scale, 1.0)
    trs, tes = (tr - loc) / scale, (te - loc) / scale
    both = np.vstack([trs, tes])

    def mice():
        return IterativeImputer(BayesianRidge(), max_iter=10, random_state=seed)

    def missforest():
        trees = ExtraTreesRegressor(n_estimators=missforest_trees, n_jobs=1, random_state=seed)
        return IterativeImputer(trees, max_iter=missforest_rounds, random_state=seed)

    recipes = {
        "mean": lambda: SimpleImputer(strategy="mean").fit(trs).transform(tes),
        "knn": lambda: KNNImputer(n_neighbors=5).fit(trs).transform(tes),
        "mice_train": lambda: mice().fit(trs).transform(tes),
        "mice_train_test": lambda: mice().fit_transform(both)[len(trs) :],
        "missforest_train_test": lambda: missforest().fit_transform(both)[len(trs) :],
    }
    out = {}
    for m in methods:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: 10 rounds is the recipe
            x_hat = recipes[m]()
        out[m] = {"x_hat": x_hat * scale + loc, "seconds": time.perf_counter() - t0}
    return out


def run(args):
    """Every table x rate x repeat; returns the result dictionary written to JSON.

    Parameters
    ----------
    args : argparse.Namespace
        See ``--help``.

    Returns
    -------
    dict
    """
    train_kwargs = {"num_epochs": args.epochs}
    if args.latent_dim is not None:
        train_kwargs["latent_dim"] = args.latent_dim
    res = {
        "benchmark": "imputation",
        **machine(),
        "vaequery_version": vq.__version__,
        "protocol": {
            "split": "3:1 train:test, new shuffle per repeat",
            "missingness": "MCAR in train and test",
            "nrmse": "mean over features of RMSE over hidden test entries / sd of the "
            "complete test rows",
            "rates": args.rates,
            "repeats": args.repeats,
            "max_test_rows": args.max_test_rows,
            "seed": args.seed,
            "vaequery_train": {**train_kwargs, "early_stopping": "25 % of train rows"},
            "vaequery_backends": args.backends,
            "vaequery_variants": {v: VARIANTS[v] for v in args.variants},
            "missforest": {"n_estimators": args.missforest_trees, "rounds": args.missforest_rounds},
        },
        "published": PUBLISHED,
        "tables": {},
    }
    prev = None
    if args.merge:
        prev = json.loads((RESULTS / f"{args.merge}.json").read_text())
        pp = prev["protocol"]
        if (pp["seed"], pp["max_test_rows"]) != (args.seed, args.max_test_rows):
            raise SystemExit(f"--merge {args.merge}: seed / max_test_rows differ from this run")
        res["protocol"]["merged_from"] = args.merge
    for name in args.tables:
        table = vq.datasets.load(name, "all")
        names = table.feature_names
        res["tables"][name] = per_rate = {}
        for rate in args.rates:
            runs = []
            for r in range(args.repeats):
                data = split_and_hide(table.X, rate, args.seed, r, args.max_test_rows)
                one = {"train_rows": len(data["train"]), "test_rows": len(data["test"])}
                one["train"], one["methods"] = {}, {}
                scored = []
                for v in args.variants:
                    spec = VARIANTS[v]
                    kw = {**train_kwargs, **spec["train"]}
                    if kw.get("tune") is True:  # the default grid, epochs capped by --epochs
                        kw["tune"] = {"num_epochs": min(args.epochs, TUNE_EPOCHS)}
                    imputers = spec["imputers"] or args.backends
                    vqo = impute_vaequery(
                        names, data, imputers, args.seed, r, kw, val_rows=v == "vaequery"
                    )
                    rec = vqo["_train"]["recipe"]
                    one["train"][v] = {
                        "seconds": vqo["_train"]["seconds"],
                        "best_epoch": rec["best_epoch"],
                        "latent_dim": rec["latent_dim"],
                        "hidden": rec["hidden"],
                        "beta": rec.get("beta", 1.0),
                        "holdout_score": rec.get("holdout_score"),
                    }
                    scored += [(f"{v}_{b}", vqo[b], vqo["_train"]["seconds"]) for b in imputers]
                cl = impute_classical(
                    data, CLASSICAL, args.seed + r, args.missforest_trees, args.missforest_rounds
                )
                scored += [(m, d, 0.0) for m, d in cl.items()]
                for label, d, t_train in scored:
                    one["methods"][label] = {
                        "nrmse": nrmse(d["x_hat"], data["test_true"], data["hidden"]),
                        "seconds": d["seconds"] + t_train,
                    }
                old = merged_runs(prev, name, rate, r)
                if old:  # same split and masks: keep the earlier run's other methods
                    one["methods"] = {**old, **one["methods"]}
                    one["merged_from_earlier_run"] = sorted(old)
                runs.append(one)
                line = "  ".join(f"{m} {v['nrmse']:.3f}" for m, v in one["methods"].items())
                print(f"{name} rate {rate} repeat {r}: {line}", flush=True)
            per_rate[str(rate)] = {"runs": runs, "summary": summarise(runs)}
        write(res, args.out)  # partial results survive an interrupted run
    return res


def merged_runs(prev, name, rate, repeat):
    """The methods of an earlier result for the same table, rate and repeat (same split).

    Parameters
    ----------
    prev : dict or None
        An earlier result of :func:`run` with the same seed and test-row cap.
    name : str
    rate : float
    repeat : int

    Returns
    -------
    dict
        ``{method: {"nrmse", "seconds"}}`` of the vaequery methods there (older
        files kept training seconds apart: added back here); empty if none.
    """
    runs = (prev or {}).get("tables", {}).get(name, {}).get(str(rate), {}).get("runs", [])
    if repeat >= len(runs):
        return {}
    old = runs[repeat]
    out = {}
    for m, v in old["methods"].items():
        if m in CLASSICAL:
            continue
        extra = old.get("vaequery_train_seconds", 0.0) if m.startswith("vaequery_") else 0.0
        out[m] = {"nrmse": v["nrmse"], "seconds": v["seconds"] + extra}
    return out


def summarise(runs):
    """Mean ± sd (over repeats) of each method's NRMSE and seconds.

    Parameters
    ----------
    runs : list of dict
        One per repeat, as built by :func:`run`.

    Returns
    -------
    dict
        Per method ``nrmse_mean``, ``nrmse_sd`` (ddof 1; 0 for one repeat),
        ``seconds_mean`` (vaequery backends: training + inference).
    """
    out = {}
    for m in runs[0]["methods"]:
        v = np.array([r["methods"][m]["nrmse"] for r in runs])
        s = np.array([r["methods"][m]["seconds"] for r in runs])  # training included
        out[m] = {
            "nrmse_mean": float(v.mean()),
            "nrmse_sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "seconds_mean": float(s.mean()),
        }
    return out


def _methods(res, rate):
    """Every method of any table at ``rate``, in first-seen order."""
    out = {}
    for t in res["tables"].values():
        out.update(dict.fromkeys(t[str(rate)]["summary"]))
    return list(out)


def markdown(res):
    """The result tables (one per rate, methods x tables) as markdown.

    Parameters
    ----------
    res : dict
        As returned by :func:`run`.

    Returns
    -------
    str
    """
    p = res["protocol"]
    tables = list(res["tables"])
    md = [
        "# Imputation of incomplete tables (VAEAC's protocol, seed 004 appendix A.2)",
        "",
        f"3:1 train/test split, values hidden completely at random in **both** train and test, "
        f"{p['repeats']} repeat(s) (new split and masks each), NRMSE = mean over features of "
        "(RMSE over the hidden test entries / the feature's sd on the complete test rows); "
        "mean ± sd over repeats; seconds = fit + impute per repeat (vaequery: training + "
        "inference). "
        + (
            f"Test rows capped at {p['max_test_rows']} per repeat (all methods scored on the "
            "same rows). "
            if p["max_test_rows"]
            else ""
        )
        + f"Machine: {res['cpu_count']} CPUs, device {res['device']}, jax {res['jax']}."
        + (f" {p['note']}" if p.get("note") else ""),
        "",
        f"vaequery: `vq.train` ({p['vaequery_train']}) on the incomplete train rows, "
        "then `given(X_test).infer(backend)` and the posterior-predictive mean. Variants "
        "(`<variant>_<imputer>`, trained on every train row, stopped on 10 % of the observed "
        "train entries held out): "
        + "; ".join(
            f"{v} = `vq.train(..., {', '.join(f'{k}={x}' for k, x in spec['train'].items())})`"
            for v, spec in p.get("vaequery_variants", {}).items()
            if spec["train"]
        )
        + "; imputer `is` = the encoder's draws importance-resampled (`infer('fill_zeros')"
        ".resample()`, PSIS). scikit-learn "
        "imputers on features standardised with the observed train entries; MICE = "
        "`IterativeImputer(BayesianRidge, max_iter=10)`; MissForest-like = "
        f"`IterativeImputer(ExtraTreesRegressor(n_estimators={p['missforest']['n_estimators']}),"
        f" max_iter={p['missforest']['rounds']})` fitted on train + test rows.",
        "",
    ]
    for rate in p["rates"]:
        md += [f"## {int(round(100 * rate))} % missing", ""]
        md.append("| method | " + " | ".join(tables) + " |")
        md.append("|---" * (len(tables) + 1) + "|")
        methods = _methods(res, rate)
        best = {
            t: min(v["nrmse_mean"] for v in res["tables"][t][str(rate)]["summary"].values())
            for t in tables
        }
        for m in methods:
            cells = []
            for t in tables:
                s = res["tables"][t][str(rate)]["summary"].get(m)
                if s is None:  # not run on this table
                    cells.append("—")
                    continue
                c = f"{s['nrmse_mean']:.3f} ± {s['nrmse_sd']:.3f}"
                cells.append(f"**{c}**" if s["nrmse_mean"] == best[t] else c)
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        if abs(rate - 0.5) < 1e-9 and any(t in PUBLISHED for t in tables):
            for who in ["VAEAC", "MissForest", "MICE"]:
                cells = []
                for t in tables:
                    pub = PUBLISHED.get(t, {}).get(who)
                    cells.append("—" if pub is None else f"{pub[0]} ± {pub[1]}")
                md.append(f"| *{who} (published)* | " + " | ".join(cells) + " |")
        md += ["", "Seconds per repeat (mean):", ""]
        md.append("| method | " + " | ".join(tables) + " |")
        md.append("|---" * (len(tables) + 1) + "|")
        for m in methods:
            cells = [
                f"{s[m]['seconds_mean']:.1f}" if m in s else "—"
                for s in (res["tables"][t][str(rate)]["summary"] for t in tables)
            ]
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        gaps = []
        for t in tables:
            s = res["tables"][t][str(rate)]["summary"]
            vq_best = min(v["nrmse_mean"] for k, v in s.items() if k not in CLASSICAL)
            cl_best = min(v["nrmse_mean"] for k, v in s.items() if k in CLASSICAL)
            gaps.append(f"{t} {vq_best / cl_best:.3f}")
        md += [
            "",
            "Best vaequery / best classical imputer (issue 18's bar: ≤ 1.02 on every table): "
            + ", ".join(gaps)
            + ".",
            "",
        ]
    pub_src = ", ".join(f"{t}: {PUBLISHED[t]['source']}" for t in tables if t in PUBLISHED)
    if pub_src:
        md += [f"Published numbers: VAEAC (Ivanov et al. 2019), 50 % only; {pub_src}.", ""]
    md.append(f"Wall time of the whole run: {res.get('wall_seconds', float('nan')):.0f} s.")
    return "\n".join(md) + "\n"


def plot(res, path):
    """Bar chart per rate: NRMSE mean ± sd of each method on each table, VAEAC's marks beside.

    Parameters
    ----------
    res : dict
        As returned by :func:`run`.
    path : Path
        Where the PNG goes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = res["protocol"]["rates"]
    tables = list(res["tables"])
    fig, axes = plt.subplots(
        len(rates), 1, figsize=(max(8, 1.9 * len(tables) + 2.5), 3.6 * len(rates)), squeeze=False
    )
    for ax, rate in zip(axes[:, 0], rates):
        methods = _methods(res, rate)
        w = 0.8 / len(methods)
        nan = {"nrmse_mean": np.nan, "nrmse_sd": 0.0}
        for i, m in enumerate(methods):
            s = [res["tables"][t][str(rate)]["summary"].get(m, nan) for t in tables]
            ax.bar(
                np.arange(len(tables)) + (i - (len(methods) - 1) / 2) * w,
                [v["nrmse_mean"] for v in s],
                w,
                yerr=[v["nrmse_sd"] for v in s],
                label=m,
                hatch="//" if m not in CLASSICAL else None,
            )
        if abs(rate - 0.5) < 1e-9:
            for who, mk in [("VAEAC", "k*"), ("MissForest", "kx"), ("MICE", "k+")]:
                xs = [j for j, t in enumerate(tables) if t in PUBLISHED]
                ys = [PUBLISHED[tables[j]][who][0] for j in xs]
                if xs:  # to the right of each table's bars
                    ax.plot(np.add(xs, 0.45), ys, mk, ms=8, ls="none", label=f"{who} (published)")
        lo = min(
            v["nrmse_mean"] - v["nrmse_sd"]
            for t in tables
            for v in res["tables"][t][str(rate)]["summary"].values()
        )
        ax.set_xticks(np.arange(len(tables)), tables)
        ax.set_ylabel("NRMSE (lower is better)")
        ax.set_title(f"{int(round(100 * rate))} % MCAR in train and test")
        ax.set_ylim(max(0.0, lo - 0.1), None)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res, out):
    """Write ``results/<out>.json``, ``.md`` and ``.png`` for the tables done so far.

    Parameters
    ----------
    res : dict
    out : str
        File stem under ``benchmarks/results``.
    """
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps(res, indent=1) + "\n")
    if res["tables"] and all(
        len(v) == len(res["protocol"]["rates"]) for v in res["tables"].values()
    ):
        (RESULTS / f"{out}.md").write_text(markdown(res))
        plot(res, RESULTS / f"{out}.png")


def main():
    """Parse the command line, run, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="banknote, 1 repeat, 20 epochs")
    ap.add_argument("--tables", nargs="+", default=None)
    ap.add_argument("--rates", nargs="+", type=float, default=[0.3, 0.5])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", nargs="+", default=["gaussian", "fill_zeros"])
    ap.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT"
    )
    ap.add_argument("--epochs", type=int, default=500, help="vq.train num_epochs")
    ap.add_argument("--latent-dim", type=int, default=None, help="default: vq.train's")
    ap.add_argument("--max-test-rows", type=int, default=None)
    ap.add_argument("--missforest-trees", type=int, default=100)
    ap.add_argument("--missforest-rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--merge",
        default=None,
        help="results stem of an earlier run (same seed, test-row cap): its vaequery methods "
        "join this run's rows for the repeats both have (e.g. to add variants without "
        "retraining the default)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.tables = args.tables or ["banknote"]
        args.repeats, args.epochs = 1, 20
        args.missforest_trees, args.missforest_rounds = 10, 3
        args.max_test_rows = args.max_test_rows or 100
    args.tables = args.tables or TABLES
    args.out = args.out or ("imputation_quick" if args.quick else "imputation")
    t0 = time.perf_counter()
    res = run(args)
    res["wall_seconds"] = time.perf_counter() - t0
    write(res, args.out)
    print((RESULTS / f"{args.out}.md").read_text())


if __name__ == "__main__":
    main()
