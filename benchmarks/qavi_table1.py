"""QAVI Table 1 on the shipped UCI tables: every applicable backend, the paper's numbers beside.

Protocol (Agarwal et al., Table 1; ``../shared/REFERENCE_NOTES.md``):

* the shipped model of each table (``vq.pretrained``) and its test split
  (standardised with the whole table's mean/sd, shuffle seed 1234,
  65/15/20 %), at most ``--rows`` test rows (QAVI: up to 1,000);
* every test row loses exactly ``floor(D/2)`` features chosen uniformly
  without replacement (``vq.datasets.missing.half_features``);
* every backend answers the same queries with the same key (``vq.compare``);
* **LL**: IWAE ``log p(x_U | x_O)`` with ``--samples`` importance draws from
  each backend's fitted approximation (QAVI: S = 10,000), nats per test row,
  standardised units, not divided by the number of missing features; for
  ``grid`` (latent dim <= 2) the quadrature value, exact;
* **NRMSE** (QAVI's text, their code has none): per row, the RMSE over the
  missing features in standardised units (each feature's sd is 1, so this is
  the sd-normalised RMSE), minimum over the posterior draws, then averaged over
  rows. Variational and amortized backends return ``--samples`` draws (QAVI:
  the minimum over S = 10,000); MCMC backends keep their own number of draws
  (``num_chains x num_draws``), reported per backend. The NRMSE of the mean
  imputation (VAEAC's form) is reported too.

Backends: every name in ``vaequery.backends.available()`` except ``grid`` on
models with a latent dimension above 2 (it integrates on a grid, d <= 2 only)
and ``decoder_only`` when the model ships no decoder-only guide (training one
takes 50-100 CPU-seconds per model; ``benchmarks/amortized.py`` does it).
Every backend runs at its defaults.

Orderings: for the backends QAVI also ran, the rank correlation (Kendall tau)
of our LL with the paper's per table, and every pair the two order
differently, with our paired difference and its standard error over rows (a
pair within two standard errors is a tie, not a contradiction).

Writes ``benchmarks/results/qavi_table1.{json,md,png}`` (``--out`` renames);
asserts nothing. Full protocol (hours on 2 CPU cores)::

    python benchmarks/qavi_table1.py --rows 1000 --samples 10000

The committed results are a reduced run, stated in the files. ``--quick``:
8 rows of banknote, S = 200, a few backends, nothing written unless
``--out`` is given (a smoke run, < 2 min).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import RESULTS, machine

import vaequery as vq

TABLES = ["breast_cancer", "red_wine", "white_wine", "banknote", "concrete", "yeast"]

#: QAVI Table 1, transcribed from the paper (seed 002): (LL, NRMSE) per table and method.
#: LL: IWAE log-likelihood of the missing features, S = 10,000 samples, in nats (the
#: paper does not say whether per test row or per missing feature; its code has both);
#: NRMSE: per test row the minimum over the S samples, averaged over rows. QAVI's
#: models have a latent dimension d = 1 and were trained for ~2,000 epochs.
PAPER = {
    "breast_cancer": {
        "mixture": (-9.16, 0.39),
        "iaf": (-9.14, 0.39),
        "gaussian": (-9.21, 0.39),
        "feature_vi": (-16.32, 0.37),
        "posterior_matching": (-15.14, 0.33),
        "retuned_encoder": (-12.82, 0.40),
        "mwg": (-23.94, 0.44),
        "pseudo_gibbs": (-12.61, 0.33),
        "fill_zeros": (-32.56, 0.40),
    },
    "red_wine": {
        "mixture": (-6.35, 0.26),
        "iaf": (-6.47, 0.26),
        "gaussian": (-6.56, 0.30),
        "feature_vi": (-13.20, 0.28),
        "posterior_matching": (-14.83, 0.42),
        "retuned_encoder": (-12.96, 0.40),
        "mwg": (-74.22, 0.68),
        "pseudo_gibbs": (-33.53, 0.36),
        "fill_zeros": (-21.97, 0.36),
    },
    "white_wine": {
        "mixture": (-7.03, 0.35),
        "iaf": (-7.03, 0.35),
        "gaussian": (-6.94, 0.30),
        "feature_vi": (-8.80, 0.38),
        "posterior_matching": (-9.19, 0.39),
        "retuned_encoder": (-9.59, 0.39),
        "mwg": (-19.83, 0.58),
        "pseudo_gibbs": (-10.68, 0.36),
        "fill_zeros": (-10.09, 0.37),
    },
    "banknote": {
        "mixture": (-2.25, 0.10),
        "iaf": (-2.24, 0.10),
        "gaussian": (-2.35, 0.10),
        "feature_vi": (-8.27, 0.15),
        "posterior_matching": (-4.42, 0.14),
        "retuned_encoder": (-4.26, 0.14),
        "mwg": (-49.51, 0.68),
        "pseudo_gibbs": (-44.16, 0.40),
        "fill_zeros": (-17.46, 0.32),
    },
    "concrete": {
        "mixture": (-2.70, 0.17),
        "iaf": (-2.65, 0.17),
        "gaussian": (-2.82, 0.17),
        "feature_vi": (-15.14, 0.23),
        "posterior_matching": (-15.05, 0.40),
        "retuned_encoder": (-11.48, 0.35),
        "mwg": (-265.62, 0.62),
        "pseudo_gibbs": (-249.06, 0.36),
        "fill_zeros": (-23.33, 0.32),
    },
    "yeast": {
        "mixture": (2.42, 0.46),
        "iaf": (2.55, 0.46),
        "gaussian": (2.82, 0.46),
        "feature_vi": (-7.81, 0.47),
        "posterior_matching": (-430.36, 0.47),
        "retuned_encoder": (-33.62, 0.50),
        "mwg": (-1.86, 0.54),
        "pseudo_gibbs": (-5.11, 0.48),
        "fill_zeros": (-11.27, 0.48),
    },
}

#: QAVI's row label for each vaequery backend it ran.
PAPER_LABEL = {
    "mixture": "Mix. QAVI",
    "iaf": "Flow QAVI",
    "gaussian": "Gaus. QAVI",
    "feature_vi": "Feat. QAVI",
    "posterior_matching": "Posterior Match",
    "retuned_encoder": "Re-tuned Encoder",
    "mwg": "Metropolis-in-Gibbs",
    "pseudo_gibbs": "pseudo-Gibbs",
    "fill_zeros": "Fill Zeros",
}

#: Backends whose draws are MCMC states: they keep their own number of draws.
MCMC = {"nuts", "hmc", "chees", "mwg", "pseudo_gibbs"}

QUICK_BACKENDS = ["gaussian", "posterior_matching", "fill_zeros", "grid", "mwg"]


def backends_for(vae, wanted=None):
    """``(run, skipped)``: the backends that apply to ``vae`` and why the others do not.

    Parameters
    ----------
    vae : vaequery.VAE
        The shipped model.
    wanted : list of str, optional
        Restrict to these names (default: every registered backend).

    Returns
    -------
    run : list of str
    skipped : dict of str to str
        Backend name to the reason it was not run.
    """
    names = vq.backends.available() if wanted is None else list(wanted)
    unknown = sorted(set(names) - set(vq.backends.available()))
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; available: {vq.backends.available()}")
    run, skipped = [], {}
    for b in names:
        if b == "grid" and vae.latent_dim > 2:
            skipped[b] = f"quadrature needs latent dim <= 2, the model has d = {vae.latent_dim}"
        elif b == "decoder_only" and "decoder_only" not in vae.guides:
            skipped[b] = "no decoder-only guide shipped (benchmarks/amortized.py trains one)"
        else:
            run.append(b)
    return run, skipped


def _paired(per_query, a, b):
    """Mean and standard error over rows of ``LL_a - LL_b`` on the same queries."""
    d = per_query.loc[a, "log_lik"].to_numpy() - per_query.loc[b, "log_lik"].to_numpy()
    d = d[np.isfinite(d)]
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.nan


def orderings(name, per_backend, per_query):
    """How our LL ordering of QAVI's backends compares with the paper's on one table.

    Parameters
    ----------
    name : str
        Table name (a key of :data:`PAPER`).
    per_backend : dict
        Our results per backend (``log_lik``, ``nrmse_min``).
    per_query : pandas.DataFrame
        ``Comparison.per_query`` of all backends (index ``(backend, query)``).

    Returns
    -------
    dict
        ``kendall_tau_ll``, ``kendall_tau_nrmse``, ``backends`` (those in both),
        ``discordant``: pairs ordered differently by LL, each with our paired
        difference ``diff`` (paper's better minus paper's worse), its ``se`` and
        ``significant`` (``|diff| > 2 se``).
    """
    from scipy.stats import kendalltau

    common = [b for b in PAPER[name] if b in per_backend]
    if len(common) < 2:
        return {"backends": common, "discordant": []}
    ours = np.array([per_backend[b]["log_lik"] for b in common])
    paper = np.array([PAPER[name][b][0] for b in common])
    ours_n = np.array([per_backend[b]["nrmse_min"] for b in common])
    paper_n = np.array([PAPER[name][b][1] for b in common])
    disc = []
    for i, a in enumerate(common):
        for b in common[i + 1 :]:
            hi, lo = (a, b) if PAPER[name][a][0] > PAPER[name][b][0] else (b, a)
            if PAPER[name][a][0] == PAPER[name][b][0]:
                continue
            diff, se = _paired(per_query, hi, lo)
            if diff < 0:
                disc.append(
                    {
                        "paper_better": hi,
                        "paper_worse": lo,
                        "diff": diff,
                        "se": se,
                        "significant": bool(abs(diff) > 2 * se),
                    }
                )
    return {
        "backends": common,
        "kendall_tau_ll": float(kendalltau(ours, paper).statistic),
        "kendall_tau_nrmse": float(kendalltau(-ours_n, -paper_n).statistic),
        "discordant": disc,
    }


def run_table(name, rows, samples, backends, key=0, diagnostics=True):
    """Run QAVI's protocol on one shipped table with every applicable backend.

    Parameters
    ----------
    name : str
        Shipped table (``vq.pretrained(name)``, ``vq.datasets.load(name, "test")``).
    rows : int
        At most this many test rows (the first ones).
    samples : int
        S: IWAE importance draws, and draws per query of non-MCMC backends.
    backends : list of str or None
        Names to try (None: all registered); those that do not apply are skipped.
    key : int
        Key of the masks and of every backend.
    diagnostics : bool
        Also record the PSIS k-hat share and MCMC R-hat/ESS.

    Returns
    -------
    dict
        Per-table metadata, ``backends`` (per-backend metrics), ``skipped`` and
        ``orderings``.
    """
    import pandas as pd

    vae = vq.pretrained(name)
    X_true = vq.datasets.load(name, "test").X[:rows]
    Xq = vq.datasets.missing.half_features(X_true, key=key)
    run, skipped = backends_for(vae, backends)
    groups = [
        ([b for b in run if b not in MCMC], samples),
        ([b for b in run if b in MCMC], None),
    ]
    tables, per_query, posts = [], [], {}
    for names, draws in groups:
        if not names:
            continue
        c = vq.compare(
            vae,
            Xq,
            X_true,
            backends=names,
            key=key,
            num_draws=draws,
            num_samples=samples,
            diagnostics=diagnostics,
            progress=True,
        )
        tables.append(c.table)
        per_query.append(c.per_query)
        posts.update(c.posteriors)
    table = pd.concat(tables)
    per_query = pd.concat(per_query)
    per = {}
    for b in table.index:
        ll = per_query.loc[b, "log_lik"].to_numpy()
        ok = np.isfinite(ll)
        rec = {k: (v if isinstance(v, str) else float(v)) for k, v in table.loc[b].items()}
        rec["log_lik_se"] = float(ll[ok].std(ddof=1) / np.sqrt(ok.sum()))
        rec["nrmse_draws"] = int(np.prod(posts[b].z.shape[1:-1]))
        rec["seconds"] = rec["compile_s"] + rec["answer_s"]
        per[b] = rec
    if "grid" in per:
        ref = per_query.loc["grid", "log_lik"].to_numpy()
        for b in per:
            per[b]["log_lik_gap_to_grid"] = float(
                np.nanmean(ref - per_query.loc[b, "log_lik"].to_numpy())
            )
    for b, v in sorted(per.items(), key=lambda kv: -kv[1]["log_lik"]):
        p = PAPER[name].get(b)
        print(
            f"{name:14s} {b:20s} LL {v['log_lik']:9.3f} ± {v['log_lik_se']:.3f}  "
            f"NRMSE {v['nrmse_min']:.3f}  ({v['seconds']:.1f} s)"
            + (f"  paper {p[0]:.2f}, {p[1]:.2f}" if p else "")
        )
    return {
        "rows": int(len(X_true)),
        "features": vae.num_features,
        "missing_per_row": vae.num_features // 2,
        "latent_dim": vae.latent_dim,
        "backends": per,
        "skipped": skipped,
        "orderings": orderings(name, per, per_query),
    }


def _fmt(v, nd=3):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def markdown(res):
    """The results as markdown: a paper-shaped summary, then one table per dataset.

    Parameters
    ----------
    res : dict
        What :func:`main` writes to JSON.

    Returns
    -------
    str
    """
    S = res["samples"]
    md = ["# QAVI Table 1 (Agarwal et al.) on the shipped tables", ""]
    md += [
        f"Run: `{res['command']}`. {res['reduction']}",
        "",
        f"Machine: {res['cpu_count']} CPU cores shared with other jobs, device "
        f"{res['device']}, jax {res['jax']}, vaequery {res['vaequery_version']}. "
        f"Total CPU time {res['cpu_seconds']:.0f} s, wall {res['wall_seconds']:.0f} s.",
        "",
        f"Protocol: ⌊D/2⌋ features hidden per test row; LL = IWAE log p(x_U | x_O) with S = {S} "
        "importance draws (QAVI: 10,000), nats per test row, standardised units, not divided by "
        "the number of missing features (`grid`: exact quadrature); NRMSE = per row the minimum "
        f"over the draws of the RMSE of the missing features in sd units, averaged over rows "
        f"(non-MCMC backends: {S} draws, QAVI: 10,000; MCMC: their own draws, column 'draws'). "
        "Every backend at its defaults, same queries, same key (`vq.compare`). "
        "Paper = QAVI Table 1 (their d = 1 models, ~2,000 epochs, S = 10,000, up to 1,000 rows).",
        "",
        "## Summary: LL (NRMSE), ours | paper",
        "",
    ]
    names = list(res["tables"])
    md.append("| backend | QAVI row | " + " | ".join(names) + " |")
    md.append("|---|---|" + "---|" * len(names))
    allb = []
    for n in names:
        allb += [b for b in res["tables"][n]["backends"] if b not in allb]
    allb = [b for b in PAPER_LABEL if b in allb] + [b for b in allb if b not in PAPER_LABEL]
    for b in allb:
        cells = []
        for n in names:
            v = res["tables"][n]["backends"].get(b)
            p = PAPER[n].get(b)
            ours = f"{v['log_lik']:.2f} ({v['nrmse_min']:.2f})" if v else "not run"
            cells.append(ours + (f" \\| {p[0]:.2f} ({p[1]:.2f})" if p else ""))
        md.append(f"| `{b}` | {PAPER_LABEL.get(b, '—')} | " + " | ".join(cells) + " |")
    md += ["", "Kendall tau between our and the paper's ordering of the backends both ran:", ""]
    md += ["| table | backends | tau (LL) | tau (NRMSE) | discordant LL pairs (significant) |"]
    md += ["|---|---|---|---|---|"]
    for n in names:
        o = res["tables"][n]["orderings"]
        d = o["discordant"]
        md.append(
            f"| {n} | {len(o['backends'])} | {_fmt(o.get('kendall_tau_ll'), 2)} | "
            f"{_fmt(o.get('kendall_tau_nrmse'), 2)} | {len(d)} "
            f"({sum(x['significant'] for x in d)}) |"
        )
    md.append("")
    for n in names:
        r = res["tables"][n]
        md += [
            f"## {n} ({r['rows']} test rows, D = {r['features']}, "
            f"{r['missing_per_row']} hidden per row, d = {r['latent_dim']})",
            "",
        ]
        has_gap = any("log_lik_gap_to_grid" in v for v in r["backends"].values())
        head = "| rank | backend | LL ± se | NRMSE min | NRMSE of mean | draws | k̂ > 0.7 "
        head += "| nats below grid " if has_gap else ""
        head += "| seconds (compile + answer) | paper LL | paper NRMSE | paper rank |"
        md += [head, "|" + "---|" * (head.count("|") - 1)]
        prank = sorted(PAPER[n], key=lambda b: -PAPER[n][b][0])
        for i, (b, v) in enumerate(
            sorted(r["backends"].items(), key=lambda kv: -kv[1]["log_lik"]), 1
        ):
            p = PAPER[n].get(b)
            row = (
                f"| {i} | `{b}` | {v['log_lik']:.3f} ± {v['log_lik_se']:.3f} | "
                f"{v['nrmse_min']:.3f} | {v['nrmse_mean']:.3f} | {v['nrmse_draws']} | "
                f"{_fmt(v.get('khat_gt_0.7'), 2)} | "
            )
            if has_gap:
                row += f"{_fmt(v.get('log_lik_gap_to_grid'))} | "
            row += f"{v['compile_s']:.1f} + {v['answer_s']:.1f} | "
            row += f"{p[0]:.2f} | {p[1]:.2f} | {prank.index(b) + 1} |" if p else "— | — | — |"
            md.append(row)
        md.append("")
        if r["skipped"]:
            md.append(
                "Skipped: " + "; ".join(f"`{b}` ({why})" for b, why in r["skipped"].items()) + "."
            )
            md.append("")
        d = r["orderings"]["discordant"]
        if d:
            md.append(
                "Pairs ordered differently from the paper (our LL of the paper's better "
                "minus its worse, paired over rows):"
            )
            md.append("")
            for x in d:
                md.append(
                    f"- `{x['paper_better']}` > `{x['paper_worse']}` in the paper; ours "
                    f"{x['diff']:.3f} ± {x['se']:.3f}"
                    + (" (significant)" if x["significant"] else " (within 2 se: a tie)")
                )
            md.append("")
        else:
            md += ["Every pair of the paper's backends is ordered as in the paper.", ""]
    if res.get("discussion"):
        md += ["## Where the orderings differ, and why", "", res["discussion"], ""]
    return "\n".join(md) + "\n"


def plot(res, path):
    """Slope chart per table: each backend's LL rank in the paper and in ours.

    Parameters
    ----------
    res : dict
        What :func:`main` writes to JSON.
    path : Path
        PNG written there.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["tables"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 4.2), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        common = res["tables"][n]["orderings"]["backends"]
        ours = res["tables"][n]["backends"]
        pr = sorted(common, key=lambda b: -PAPER[n][b][0])
        orr = sorted(common, key=lambda b: -ours[b]["log_lik"])
        for b in common:
            y0, y1 = pr.index(b) + 1, orr.index(b) + 1
            ax.plot([0, 1], [y0, y1], "o-", color="C3" if y0 != y1 else "C0", alpha=0.8)
            ax.text(-0.05, y0, b, ha="right", va="center", fontsize=7)
            ax.text(1.05, y1, b, ha="left", va="center", fontsize=7)
        ax.set_xlim(-0.9, 1.9)
        ax.set_ylim(len(common) + 0.5, 0.5)
        ax.set_xticks([0, 1], ["paper", "ours"])
        ax.set_yticks([])
        tau = res["tables"][n]["orderings"].get("kendall_tau_ll", np.nan)
        ax.set_title(f"{n}\nLL rank, Kendall tau {tau:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(paths):
    """Combine result files of runs on separate tables (e.g. one process per table).

    Parameters
    ----------
    paths : list of str
        JSON files written by this script with the same ``--rows`` and ``--samples``.

    Returns
    -------
    dict
        One result: the tables in :data:`TABLES` order, CPU seconds summed, wall
        seconds the longest run's (the runs are meant to run side by side).
    """
    runs = [json.loads(open(p).read()) for p in paths]
    for key in ("rows", "samples"):
        vals = {r[key] for r in runs}
        if len(vals) > 1:
            raise ValueError(f"cannot merge runs with different {key}: {sorted(vals)} ({paths})")
    res = dict(runs[0])
    tables = {n: t for r in runs for n, t in r["tables"].items()}
    res["tables"] = {n: tables[n] for n in TABLES if n in tables}
    res["paper"] = {n: PAPER[n] for n in res["tables"]}
    res["cpu_seconds"] = sum(r["cpu_seconds"] for r in runs)
    res["wall_seconds"] = max(r["wall_seconds"] for r in runs)
    res["command"] = " ; ".join(r["command"] for r in runs) + " (side by side, then --merge)"
    res["full_protocol"] = all(r["full_protocol"] for r in runs) and len(tables) == len(TABLES)
    if not res["full_protocol"]:
        res["reduction"] = _reduction(res["rows"], res["samples"], list(res["tables"]))
    return res


def _reduction(rows, samples, tables):
    return (
        f"**Reduced run**: at most {rows} test rows per table (QAVI: up to 1,000), "
        f"S = {samples} (QAVI: 10,000), tables {', '.join(tables)} "
        f"(QAVI: all six). Full protocol: `python benchmarks/qavi_table1.py --rows 1000 "
        "--samples 10000`."
    )


def write(res, out):
    """Write ``<out>.json``, ``<out>.md`` and ``<out>.png`` under ``benchmarks/results``.

    Parameters
    ----------
    res : dict
        A result (see :func:`main`).
    out : str
        File stem (an absolute path writes there instead).
    """
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{out}.md").write_text(markdown(res))
    plot(res, RESULTS / f"{out}.png")


def main():
    """Command line: see the module docstring and ``--help``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=TABLES, choices=TABLES)
    ap.add_argument("--backends", nargs="+", default=None, help="default: every applicable one")
    ap.add_argument("--rows", type=int, default=1000, help="test rows per table (QAVI: 1,000)")
    ap.add_argument("--samples", type=int, default=10_000, help="S (QAVI: 10,000)")
    ap.add_argument("--no-diagnostics", action="store_true", help="skip PSIS k-hat / R-hat")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 banknote rows, S = 200")
    ap.add_argument("--discussion", default=None, help="markdown file appended to the results")
    ap.add_argument("--out", default=None, help="results file stem (default qavi_table1)")
    ap.add_argument("--merge", nargs="+", default=None, help="combine these result JSONs")
    args = ap.parse_args()
    if args.merge:
        res = merge(args.merge)
        if args.discussion:
            with open(args.discussion) as f:
                res["discussion"] = f.read().strip()
        write(res, args.out or "qavi_table1")
        print(markdown(res))
        return
    if args.quick:
        args.tables, args.rows, args.samples = ["banknote"], 8, 200
        args.backends = args.backends or QUICK_BACKENDS
    out = args.out or (None if args.quick else "qavi_table1")
    full = args.rows >= 1000 and args.samples >= 10_000 and len(args.tables) == len(TABLES)
    cmd = "python benchmarks/qavi_table1.py " + " ".join(
        [f"--tables {' '.join(args.tables)}", f"--rows {args.rows}", f"--samples {args.samples}"]
        + ([f"--backends {' '.join(args.backends)}"] if args.backends else [])
    )
    reduction = "Full protocol." if full else _reduction(args.rows, args.samples, args.tables)
    res = {
        "benchmark": "qavi_table1",
        **machine(),
        "vaequery_version": vq.__version__,
        "command": cmd,
        "reduction": reduction,
        "full_protocol": full,
        "rows": args.rows,
        "samples": args.samples,
        "paper": {n: PAPER[n] for n in args.tables},
        "paper_units": "LL: nats (IWAE, S = 10,000; per row or per feature unstated); "
        "NRMSE: min over S samples per row, mean over rows",
    }
    t0, c0 = time.perf_counter(), time.process_time()
    res["tables"] = {
        n: run_table(n, args.rows, args.samples, args.backends, diagnostics=not args.no_diagnostics)
        for n in args.tables
    }
    res["wall_seconds"] = time.perf_counter() - t0
    res["cpu_seconds"] = time.process_time() - c0
    if args.discussion:
        with open(args.discussion) as f:
            res["discussion"] = f.read().strip()
    print(markdown(res))
    if out is None:  # --quick without --out: nothing written
        return
    write(res, out)


if __name__ == "__main__":
    main()
