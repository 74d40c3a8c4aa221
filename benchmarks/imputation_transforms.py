"""Does Gaussianising the columns close vaequery's imputation gap? (issue 18, a prototype study).

Benchmark-side only: the library is not changed. On the splits and masks of
``benchmarks/imputation.py`` (VAEAC's protocol: 3:1 split, values hidden
completely at random in train and test, NRMSE in raw units over the hidden
test entries, test rows capped), it compares

* ``miwae``: today's best recipe, ``vq.train(..., num_importance=20,
  encoder_mask=True, weight_decay=0.05, holdout=0.1)`` on the incomplete train
  rows, imputed by the encoder's draws importance-resampled (``fill_zeros``,
  500 draws, PSIS over 5,000 proposals: ``miwae_is`` of the protocol);
* ``qt``: the same, trained on the table after a per-column monotone map to a
  standard normal (scikit-learn ``QuantileTransformer(output_distribution=
  "normal")``) fitted on the observed training entries only;
* ``yj``: the same with ``PowerTransformer(method="yeo-johnson")``;
* ``tuned_<qt|yj>``: whichever of the two scores better on the validation
  entries (below), plus ``tune=True`` (the search of :mod:`vaequery.tuning`);
* MICE and MissForest-like, fitted on train + test rows, for reference
  (:func:`imputation.impute_classical`, unchanged).

Point imputation. A transformed model is imputed in its own units and mapped
back: each importance-resampled draw ``z`` gives one predictive draw ``t ~
p(t | z)`` (decoder noise included), ``x = g^{-1}(t)``; the point imputation is
the mean of those ``x`` (``_is``, the predictive mean in raw units) or their
median (``_is_median``). ``miwae_is`` is the protocol's (mean of the decoder
means); ``miwae_is_median`` the median of its predictive draws. Before
``g^{-1}`` draws are clipped to the range of the transformed observed training
values (Yeo-Johnson's inverse is undefined beyond ``-1/lambda`` for ``lambda <
0``; the quantile map clips there anyway), so a transformed model never
imputes outside the observed training range (nor does a tree).

Choosing nothing on test data. In each repeat, 15 % of the observed entries of
the first 300 train rows (``--val-rate``, ``--val-rows``) are hidden from
every vaequery variant (transform fit, training, its own early stopping) and
imputed by it afterwards, with the same imputer as the test rows; their NRMSE
(per feature over the validation entries / the observed training sd) is the
*validation NRMSE*. It alone picks the transform of ``tuned_*`` and the
``val_selected`` row (the variant and point summary with the lowest validation
NRMSE in that repeat); the report says where the test winner differs. The
classical imputers see the full training table, as in the protocol, so the
vaequery variants here train on slightly fewer entries than ``miwae_is`` in
``results/imputation_training.md``.

Writes ``benchmarks/results/imputation_transforms.{json,md,png}`` after every
table; asserts nothing about time. Everything is a function of ``--seed``.

Usage: ``python benchmarks/imputation_transforms.py [--tables concrete
white_wine] [--repeats 2] [--epochs 500] [--no-tune]``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from _common import RESULTS, machine
from imputation import impute_classical, nrmse, split_and_hide, train_schema

import vaequery as vq
from vaequery.report.imputation import predictive_draws
from vaequery.tuning import TUNE_EPOCHS

TABLES = ["concrete", "white_wine", "breast_cancer", "red_wine", "yeast"]

#: The recipe shared by every variant (issue 18's best so far, ``miwae`` of the protocol).
TRAIN = dict(num_importance=20, encoder_mask=True, weight_decay=0.05, holdout=0.1)

TRANSFORMS = ["identity", "quantile", "yeojohnson"]
LABEL = {"identity": "miwae", "quantile": "qt", "yeojohnson": "yj"}
CLASSICAL = ["mice_train_test", "missforest_train_test"]


class ColumnTransform:
    """A per-column monotone map fitted on the observed (non-NaN) training entries.

    Parameters
    ----------
    kind : {"identity", "quantile", "yeojohnson"}
        ``quantile``: ``QuantileTransformer(output_distribution="normal")``
        (``n_quantiles`` = min(1000, rows)); ``yeojohnson``:
        ``PowerTransformer(method="yeo-johnson", standardize=True)``.
    """

    def __init__(self, kind):
        if kind not in TRANSFORMS:
            raise ValueError(f"kind must be one of {TRANSFORMS}, got {kind!r}")
        self.kind = kind
        self.tf = None

    def fit(self, X):
        """Fit on ``X [N, D]`` (raw units, NaN = unobserved; NaNs are ignored).

        Parameters
        ----------
        X : ndarray ``[N, D]``

        Returns
        -------
        ColumnTransform
            ``self``.
        """
        from sklearn.preprocessing import PowerTransformer, QuantileTransformer

        if self.kind == "quantile":
            self.tf = QuantileTransformer(
                n_quantiles=min(1000, len(X)), output_distribution="normal", random_state=0
            ).fit(X)
        elif self.kind == "yeojohnson":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # overflow warnings of the lambda search
                self.tf = PowerTransformer(method="yeo-johnson").fit(X)
        if self.tf is not None:
            t = self.forward(X)
            # Yeo-Johnson's inverse is undefined beyond -1/lambda (lambda < 0): stay inside.
            self.lo, self.hi = np.nanmin(t, 0), np.nanmax(t, 0)
        return self

    def forward(self, X):
        """Raw units -> transformed units; NaN stays NaN.

        Parameters
        ----------
        X : ndarray ``[N, D]``

        Returns
        -------
        ndarray ``[N, D]``
        """
        return X if self.tf is None else self.tf.transform(X)

    def inverse(self, T):
        """Transformed units ``[..., D]`` -> raw units (clipped to the training range).

        Parameters
        ----------
        T : ndarray ``[..., D]``

        Returns
        -------
        ndarray ``[..., D]``
        """
        if self.tf is None:
            return T
        shape = T.shape
        T = np.clip(T.reshape(-1, shape[-1]), self.lo, self.hi)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.tf.inverse_transform(T).reshape(shape)


def hide_validation(train_inc, seed, repeat, rate, max_rows):
    """Hide a fraction of the observed entries of the first train rows (the validation entries).

    Parameters
    ----------
    train_inc : ndarray ``[N, D]``
        Incomplete train rows (already shuffled by the protocol).
    seed, repeat : int
    rate : float
        Probability that an observed entry of a validation row is hidden.
    max_rows : int
        Validation entries are drawn from the first ``max_rows`` rows only.

    Returns
    -------
    train_fit : ndarray ``[N, D]``
        ``train_inc`` with the validation entries NaN.
    held : bool ndarray ``[N, D]``
        The validation entries.
    """
    rng = np.random.default_rng([seed, repeat, 15])
    n = min(max_rows, len(train_inc))
    held = np.zeros(train_inc.shape, bool)
    held[:n] = ~np.isnan(train_inc[:n]) & (rng.random((n, train_inc.shape[1])) < rate)
    return np.where(held, np.nan, train_inc), held


def val_nrmse(x_hat, train_inc, held):
    """NRMSE over the validation entries, each feature scaled by its observed training sd.

    Parameters
    ----------
    x_hat : ndarray ``[n, D]``
        Imputations of the first ``n`` train rows, raw units.
    train_inc : ndarray ``[N, D]``
        The incomplete train rows before the validation entries were hidden.
    held : bool ndarray ``[N, D]``

    Returns
    -------
    float
    """
    n = len(x_hat)
    sd = np.nanstd(train_inc, 0)
    h = held[:n]
    err = np.where(h, (x_hat - np.nan_to_num(train_inc[:n])) ** 2, 0.0)
    cnt = h.sum(0)
    ok = (cnt > 0) & (sd > 0)
    return float(np.mean(np.sqrt(err.sum(0)[ok] / cnt[ok]) / sd[ok]))


def twin_rows(X, seed, repeat, test_true, max_diff=2):
    """Test rows with a *twin*: a complete train row equal on all but ``max_diff`` columns.

    A diagnostic only (it reads the complete rows): concrete repeats each mix
    design at several ages, the wine tables hold exact duplicate rows, and a
    tree fitted on train + test rows can look such a twin up.

    Parameters
    ----------
    X : ndarray ``[N, D]``
        The whole complete table (the train rows are recovered with the
        protocol's permutation, as :func:`imputation.split_and_hide` draws it).
    seed, repeat : int
    test_true : ndarray ``[n, D]``
    max_diff : int

    Returns
    -------
    bool ndarray ``[n]``
    """
    perm = np.random.default_rng([seed, repeat]).permutation(len(X))
    train = X[perm[: int(round(0.75 * len(X)))]]
    out = np.zeros(len(test_true), bool)
    for i, row in enumerate(test_true):
        out[i] = ((train != row).sum(1) <= max_diff).any()
    return out


def split_nrmse(x_hat, x_true, hidden, rows):
    """NRMSE over the hidden entries of ``rows`` only, sd from every test row (as :func:`nrmse`).

    Parameters
    ----------
    x_hat, x_true : ndarray ``[n, D]``
    hidden : bool ndarray ``[n, D]``
    rows : bool ndarray ``[n]``

    Returns
    -------
    float
    """
    if not rows.any():  # breast_cancer has no twins
        return float("nan")
    sd = x_true.std(0)
    h = hidden & rows[:, None]
    err = np.where(h, (x_hat - x_true) ** 2, 0.0)
    cnt = h.sum(0)
    ok = (cnt > 0) & (sd > 0)
    return float(np.mean(np.sqrt(err.sum(0)[ok] / cnt[ok]) / sd[ok]))


def impute_variant(names, train_fit, queries, transform, train_kwargs, key, args):
    """Fit the transform and a model on ``train_fit``; impute each query table.

    Parameters
    ----------
    names : list of str
    train_fit : ndarray ``[N, D]``
        Raw units, NaN = unobserved (validation entries included).
    queries : dict of str to ndarray ``[n, D]``
        Tables to impute (raw units, NaN = to impute).
    transform : str
        A :data:`TRANSFORMS` entry.
    train_kwargs : dict
        Passed to :func:`vaequery.train`.
    key : int
    args : argparse.Namespace
        ``num_draws``, ``num_samples``.

    Returns
    -------
    dict
        ``train_seconds``, ``recipe`` (a digest) and, per query,
        ``{"mean", "median", "seconds"}`` (raw units ``[n, D]``).
    """
    tf = ColumnTransform(transform).fit(train_fit)
    t_fit = tf.forward(train_fit)
    schema = train_schema(names, t_fit)
    t0 = time.perf_counter()
    vae = vq.train(t_fit, None, schema=schema, key=key, progress=False, **train_kwargs)
    rec = vae.metadata["recipe"]
    out = {
        "train_seconds": time.perf_counter() - t0,
        "recipe": {
            "best_epoch": rec["best_epoch"],
            "latent_dim": rec["latent_dim"],
            "hidden": rec["hidden"],
            "beta": rec.get("beta", 1.0),
            "holdout_score": rec.get("holdout_score"),
        },
    }
    for qname, Q in queries.items():
        t0 = time.perf_counter()
        post = vae.given(tf.forward(Q)).infer("fill_zeros", key=key, num_draws=args.num_draws)
        post = post.resample(num_samples=args.num_samples, key=key + 1)
        # t ~ p(t | z) for each resampled z, in the transformed table's units.
        draws = tf.inverse(schema.unstandardise(predictive_draws(post, key=key + 2)))
        if transform == "identity":  # the protocol's point: mean of the decoder means
            mean = np.asarray(post.x).reshape(len(Q), -1, len(names)).mean(1)
        else:
            mean = draws.mean(1)
        out[qname] = {
            "mean": mean,
            "median": np.median(draws, 1),
            "seconds": time.perf_counter() - t0,
        }
    return out


def run(args):
    """Every table x repeat; returns the result dictionary written to JSON.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    dict
    """
    rate = 0.3
    res = {
        "benchmark": "imputation_transforms",
        **machine(),
        "vaequery_version": vq.__version__,
        "protocol": {
            "rate": rate,
            "repeats": args.repeats,
            "max_test_rows": args.max_test_rows,
            "seed": args.seed,
            "train": {**TRAIN, "num_epochs": args.epochs},
            "tune": None if args.no_tune else {"num_epochs": min(args.epochs, TUNE_EPOCHS)},
            "validation": {"rate": args.val_rate, "rows": args.val_rows},
            "imputer": {"num_draws": args.num_draws, "num_samples": args.num_samples},
            "missforest": {"n_estimators": args.missforest_trees, "rounds": args.missforest_rounds},
        },
        "tables": {},
    }
    if args.merge:  # keep the tables of an earlier run of this script (same protocol)
        prev = json.loads((RESULTS / f"{args.out}.json").read_text())
        res["tables"] = {t: v for t, v in prev["tables"].items() if t not in args.tables}
        res["protocol"]["earlier_runs"] = prev["protocol"].get("earlier_runs", []) + [
            {
                "tables": list(res["tables"]),
                "protocol": {k: v for k, v in prev["protocol"].items() if k != "earlier_runs"},
            }
        ]
    for name in args.tables:
        table = vq.datasets.load(name, "all")
        names = table.feature_names
        runs = []
        for r in range(args.repeats):
            data = split_and_hide(table.X, rate, args.seed, r, args.max_test_rows)
            train_fit, held = hide_validation(
                data["train"], args.seed, r, args.val_rate, args.val_rows
            )
            n_val = min(args.val_rows, len(train_fit))
            queries = {"val": train_fit[:n_val], "test": data["test"]}
            key = args.seed * 101 + r
            one = {"train_rows": len(data["train"]), "test_rows": len(data["test"])}
            one["val_entries"] = int(held.sum())
            twin = twin_rows(table.X, args.seed, r, data["test_true"])
            one["twin_test_rows"] = int(twin.sum())
            xhats = {}

            def split(x_hat):
                return {
                    "nrmse_twin_rows": split_nrmse(x_hat, data["test_true"], data["hidden"], twin),
                    "nrmse_other_rows": split_nrmse(
                        x_hat, data["test_true"], data["hidden"], ~twin
                    ),
                }

            one["train"], one["methods"] = {}, {}

            def score(label, out, trained):
                one["train"][label] = {"seconds": out["train_seconds"], **out["recipe"]}
                for summ, suffix in (("mean", ""), ("median", "_median")):
                    xhats[f"{label}_is{suffix}"] = out["test"][summ]
                    one["methods"][f"{label}_is{suffix}"] = {
                        "nrmse": nrmse(out["test"][summ], data["test_true"], data["hidden"]),
                        **split(out["test"][summ]),
                        "val_nrmse": val_nrmse(out["val"][summ], data["train"], held),
                        "seconds": out["train_seconds"] + out["test"]["seconds"],
                        "transform": trained,
                    }

            for tr in TRANSFORMS:
                kw = {**TRAIN, "num_epochs": args.epochs}
                score(LABEL[tr], impute_variant(names, train_fit, queries, tr, kw, key, args), tr)
            if not args.no_tune:
                # The transform for the search: the better of qt / yj on validation entries.
                best_tr = min(
                    ("quantile", "yeojohnson"),
                    key=lambda t: min(
                        one["methods"][f"{LABEL[t]}_is{s}"]["val_nrmse"] for s in ("", "_median")
                    ),
                )
                kw = {**TRAIN, "num_epochs": args.epochs, "tune": res["protocol"]["tune"]}
                kw.pop("holdout")  # the search's own (10 %)
                out = impute_variant(names, train_fit, queries, best_tr, kw, key, args)
                score("tuned", out, best_tr)
            vq_labels = list(one["methods"])
            sel = min(vq_labels, key=lambda m: one["methods"][m]["val_nrmse"])
            one["val_selected"] = sel
            one["methods"]["val_selected"] = {**one["methods"][sel], "is": sel}
            cl = impute_classical(
                data, CLASSICAL, args.seed + r, args.missforest_trees, args.missforest_rounds
            )
            for m, d in cl.items():
                xhats[m] = d["x_hat"]
                one["methods"][m] = {
                    "nrmse": nrmse(d["x_hat"], data["test_true"], data["hidden"]),
                    **split(d["x_hat"]),
                    "seconds": d["seconds"],
                }
            one["test_winner_vaequery"] = min(vq_labels, key=lambda m: one["methods"][m]["nrmse"])
            runs.append(one)
            if args.save_imputations:
                np.savez_compressed(
                    f"{args.save_imputations}/{name}_{r}.npz",
                    test_true=data["test_true"],
                    hidden=data["hidden"],
                    twin=twin,
                    **xhats,
                )
            line = "  ".join(f"{m} {v['nrmse']:.3f}" for m, v in one["methods"].items())
            print(f"{name} repeat {r}: {line}  [val picks {sel}]", flush=True)
        res["tables"][name] = {"runs": runs, "summary": summarise(runs)}
        write(res, args.out)  # partial results survive an interrupted run
    return res


def summarise(runs):
    """Mean ± sd (ddof 1) over repeats of test NRMSE, validation NRMSE and seconds.

    Parameters
    ----------
    runs : list of dict

    Returns
    -------
    dict
    """
    out = {}
    for m in runs[0]["methods"]:
        rows = [r["methods"][m] for r in runs]
        v = np.array([x["nrmse"] for x in rows])
        s = np.array([x["seconds"] for x in rows])
        out[m] = {
            "nrmse_mean": float(v.mean()),
            "nrmse_sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "seconds_mean": float(s.mean()),
        }
        if "nrmse_twin_rows" in rows[0]:
            for k in ("nrmse_twin_rows", "nrmse_other_rows"):
                out[m][k + "_mean"] = float(np.mean([x[k] for x in rows]))
        if "val_nrmse" in rows[0]:
            w = np.array([x["val_nrmse"] for x in rows])
            out[m]["val_nrmse_mean"] = float(w.mean())
            out[m]["val_nrmse_sd"] = float(w.std(ddof=1)) if len(w) > 1 else 0.0
        # paired difference to today's recipe (same split, masks and validation entries)
        if m != "miwae_is" and "miwae_is" in runs[0]["methods"]:
            d = v - np.array([r["methods"]["miwae_is"]["nrmse"] for r in runs])
            out[m]["diff_vs_miwae_is_mean"] = float(d.mean())
            out[m]["diff_vs_miwae_is_sd"] = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return out


def markdown(res):
    """The result tables (method x table: test NRMSE, validation NRMSE, seconds) as markdown.

    Parameters
    ----------
    res : dict

    Returns
    -------
    str
    """
    p = res["protocol"]
    tables = list(res["tables"])
    methods = list(dict.fromkeys(m for t in tables for m in res["tables"][t]["summary"]))

    def grid(title, cell):
        md = [title, "", "| method | " + " | ".join(tables) + " |"]
        md.append("|---" * (len(tables) + 1) + "|")
        for m in methods:
            cells = []
            for t in tables:
                s = res["tables"][t]["summary"].get(m)
                cells.append("—" if s is None else cell(s))
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        return md + [""]

    runs_meta = [{"tables": tables, "protocol": p}, *p.get("earlier_runs", [])]
    tune_desc = next((e["protocol"]["tune"] for e in runs_meta if e["protocol"]["tune"]), None)
    tune_tables = "run on: " + (
        ", ".join(t for t in tables if "tuned_is" in res["tables"][t]["summary"]) or "none"
    )
    md = [
        "# Gaussianising columns before training: a prototype study (issue 18)",
        "",
        f"VAEAC's protocol as `benchmarks/imputation.py` (same splits and masks): "
        f"{int(100 * p['rate'])} % MCAR in train and test, seed {p['seed']}, {p['repeats']} "
        f"repeat(s), ≤ {p['max_test_rows']} test rows, NRMSE in raw units over the hidden test "
        "entries (mean over features of RMSE / the complete test rows' sd); mean ± sd over "
        f"repeats. Machine: {res['cpu_count']} CPUs shared with other jobs (seconds inflated), "
        f"device {res['device']}, jax {res['jax']}.",
        "",
        "Every vaequery row: `vq.train(..., "
        + ", ".join(f"{k}={v}" for k, v in p["train"].items())
        + ")`"
        " on the train rows with the validation entries hidden, then "
        f"`infer('fill_zeros', num_draws={p['imputer']['num_draws']}).resample("
        f"num_samples={p['imputer']['num_samples']})`. `miwae` = no transform, `qt` = "
        "QuantileTransformer(normal), `yj` = Yeo-Johnson, each fitted per column on the observed "
        "training entries; `tuned` = the better of qt/yj on validation entries (per repeat) "
        f"plus `tune={tune_desc}` ({tune_tables}). `_is` = predictive mean in raw units "
        "(mean of back-transformed "
        "predictive draws; for `miwae` the protocol's mean of decoder means), `_is_median` = "
        "median of the predictive draws. `val_selected` = the vaequery row with the lowest "
        "validation NRMSE in each repeat. Validation entries: "
        f"{int(100 * p['validation']['rate'])} % of the observed entries of the first "
        f"{p['validation']['rows']} train rows. MICE / MissForest-like as the protocol "
        f"(ExtraTrees n_estimators={p['missforest']['n_estimators']}, "
        f"max_iter={p['missforest']['rounds']}), fitted on train + test rows, full train table.",
        "",
    ]
    md += grid("## Test NRMSE", lambda s: f"{s['nrmse_mean']:.3f} ± {s['nrmse_sd']:.3f}")
    md += grid(
        "## Paired difference to `miwae_is` (test NRMSE, same splits; negative = better)",
        lambda s: (
            f"{s['diff_vs_miwae_is_mean']:+.3f} ± {s['diff_vs_miwae_is_sd']:.3f}"
            if "diff_vs_miwae_is_mean" in s
            else "—"
        ),
    )
    md += grid(
        "## Validation NRMSE (held-out training entries; the only thing choices see)",
        lambda s: (
            f"{s['val_nrmse_mean']:.3f} ± {s['val_nrmse_sd']:.3f}" if "val_nrmse_mean" in s else "—"
        ),
    )
    md += grid(
        "## Test NRMSE split by rows with a twin (a complete train row equal on all but 2 "
        "columns) / the other rows (mean over repeats; a diagnostic that reads the truth)",
        lambda s: (
            " / ".join(
                "—" if np.isnan(s[k]) else f"{s[k]:.3f}"
                for k in ("nrmse_twin_rows_mean", "nrmse_other_rows_mean")
            )
            if "nrmse_twin_rows_mean" in s
            else "—"
        ),
    )
    twins = [
        f"{t} {np.mean([r['twin_test_rows'] for r in res['tables'][t]['runs']]):.0f}"
        for t in tables
        if "twin_test_rows" in res["tables"][t]["runs"][0]
    ]
    if twins:
        md += ["Test rows with a twin (mean over repeats): " + ", ".join(twins) + ".", ""]
    md += grid(
        "## Seconds per repeat (training + test imputation)", lambda s: f"{s['seconds_mean']:.0f}"
    )
    md += ["## Choices and the bar", ""]
    for t in tables:
        tt = res["tables"][t]
        s = tt["summary"]
        cl = min(s[m]["nrmse_mean"] for m in CLASSICAL if m in s)
        picks = ", ".join(
            f"repeat {i}: val picks `{r['val_selected']}`, "
            f"test winner `{r['test_winner_vaequery']}`"
            + ("" if r["val_selected"] == r["test_winner_vaequery"] else " (differs)")
            + (
                f", tuned transform `{r['methods']['tuned_is']['transform']}`"
                if "tuned_is" in r["methods"]
                else ""
            )
            for i, r in enumerate(tt["runs"])
        )
        md.append(
            f"- {t}: val_selected / best classical = {s['val_selected']['nrmse_mean'] / cl:.3f}; "
            f"miwae_is / best classical = {s['miwae_is']['nrmse_mean'] / cl:.3f}. {picks}."
        )
    md += ["", f"Wall time of the whole run: {res.get('wall_seconds', float('nan')):.0f} s."]
    return "\n".join(md) + "\n"


def plot(res, path):
    """Bar chart: test NRMSE mean ± sd of each method on each table.

    Parameters
    ----------
    res : dict
    path : Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = list(res["tables"])
    methods = [
        m
        for m in dict.fromkeys(m for t in tables for m in res["tables"][t]["summary"])
        if not m.endswith("_median")
    ]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(tables) + 2.5), 3.8))
    w = 0.8 / len(methods)
    nan = {"nrmse_mean": np.nan, "nrmse_sd": 0.0}
    for i, m in enumerate(methods):
        s = [res["tables"][t]["summary"].get(m, nan) for t in tables]
        ax.bar(
            np.arange(len(tables)) + (i - (len(methods) - 1) / 2) * w,
            [v["nrmse_mean"] for v in s],
            w,
            yerr=[v["nrmse_sd"] for v in s],
            label=m,
            hatch="//" if m in CLASSICAL else None,
        )
    ax.set_xticks(np.arange(len(tables)), tables)
    ax.set_ylabel("test NRMSE (lower is better)")
    ax.set_ylim(0.3, None)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(res, out):
    """Write ``results/<out>.{json,md,png}`` for the tables done so far.

    Parameters
    ----------
    res : dict
    out : str
    """
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"{out}.md").write_text(markdown(res))
    plot(res, RESULTS / f"{out}.png")


def main():
    """Parse the command line, run, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=TABLES[:3])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=500, help="vq.train num_epochs (cap)")
    ap.add_argument("--no-tune", action="store_true", help="skip the tuned_* variant")
    ap.add_argument("--max-test-rows", type=int, default=300)
    ap.add_argument("--val-rate", type=float, default=0.15)
    ap.add_argument("--val-rows", type=int, default=300)
    ap.add_argument("--num-draws", type=int, default=500)
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--missforest-trees", type=int, default=50)
    ap.add_argument("--missforest-rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="imputation_transforms")
    ap.add_argument(
        "--save-imputations", default=None, help="a folder for per-repeat .npz of the imputations"
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the other tables of results/<out>.json (their protocol is recorded)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run(args)
    res["wall_seconds"] = time.perf_counter() - t0
    write(res, args.out)
    print((RESULTS / f"{args.out}.md").read_text())


if __name__ == "__main__":
    main()
