"""Greedy active feature acquisition in the style of posterior matching's Figure 7.

Test rows of shipped tables (white wine; 8x8 digits) start with nothing
observed; ``--budget`` features are acquired per row and after each
acquisition the still-unmeasured features are imputed (the mean decoded value
over 50 posterior draws of the model's posterior-matching guide, as PM and
EDDI) and scored: RMSE in standardised units, per row, averaged over rows.

Ways of choosing the next feature (PM eq. 6), all batched over rows:

- way (a), ``sampling/<backend>``: the backend's current posterior, then
  ``--num-samples`` imagined values per candidate and one refit per (row,
  candidate, imagined value) in one compiled program. ``posterior_matching``
  re-encodes each imagined row with the shipped guide (PM's "sampling"
  approach, §5.5); ``gaussian`` refits with warm-started VI;
- way (b), ``lookahead``: PM's lookahead network (eq. 7,
  :func:`vaequery.guides.train_lookahead`), trained here against the frozen
  shipped guide on the table's training rows; one forward pass per row gives
  every candidate's expected entropy;
- ``random``: a uniformly random unmeasured feature (mean of
  ``--random-repeats`` orders).

Times per acquisition step (wall time, first step excluded: it compiles):
the whole batch of rows; one row alone (PM's measure: 68 ms sampling-based,
310 µs with the lookahead network, one 16x16 MNIST row on CPU), which includes
fitting the current posterior and the 50-draw imputation; and the lookahead
network's forward pass alone for one row.

Writes ``benchmarks/results/<out>.{json,md,png}``; asserts nothing about time.
Usage: ``python benchmarks/acquisition.py [--tables white_wine digits --rows 300 100
--budget 8 20]``.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import RESULTS, machine

import vaequery as vq


def _one_row_step(vae, x, kw, budget):
    """Fastest wall time of an acquisition step for one row (compilation excluded).

    The fastest of ``budget - 1`` steps: the least disturbed by other jobs on
    a shared machine.
    """
    res = vq.acquire(vae, x[None], budget=budget, key=1, **kw)
    return float(np.min(res.seconds[1:]))


def run_table(table_name, rows, budget, args):
    vae = vq.pretrained(table_name)
    train = vq.datasets.load(table_name)
    X = vq.datasets.load(table_name, split="test").X[:rows]
    out = {
        "table": table_name,
        "rows": int(X.shape[0]),
        "features": vae.num_features,
        "latent_dim": vae.latent_dim,
        "budget": budget,
        "num_samples": args.num_samples,
        "vi_lookahead": {
            "num_steps": args.lookahead_steps,
            "num_samples": args.lookahead_samples,
        },
        "random_repeats": args.random_repeats,
        "curves": {},
    }
    t0 = time.perf_counter()
    net = vq.guides.train_lookahead(
        vae,
        train,
        guide="posterior_matching",
        num_steps=args.train_steps,
        num_candidates=min(16, vae.num_features),
        progress=False,
        key=0,
    )
    out["lookahead_network"] = {
        "train_s": time.perf_counter() - t0,
        **{k: net.info[k] for k in ("steps_run", "best_step", "val_loss", "num_candidates")},
        "num_imagined": net.info["num_imagined"],
        "width": net.architecture["width"],
    }
    print(table_name, "lookahead network", out["lookahead_network"], flush=True)

    pm = dict(backend="posterior_matching")
    randoms = [
        vq.acquire(vae, X, budget=budget, strategy="random", key=k, **pm)
        for k in range(args.random_repeats)
    ]
    rand_rows = np.mean([r.rmse_rows for r in randoms], 0)
    out["curves"]["random"] = {
        "rmse": np.mean([r.rmse for r in randoms], 0).tolist(),
        "rmse_sd_over_repeats": np.std([r.rmse for r in randoms], 0).tolist(),
        "rmse_full": np.mean([r.rmse_full for r in randoms], 0).tolist(),
        "step_s_median": float(np.median(randoms[0].seconds[1:])),
    }
    ways = {}
    for backend in args.backends:
        kw = dict(strategy="greedy", backend=backend, num_samples=args.num_samples)
        if backend != "posterior_matching":
            kw["lookahead"] = {
                "num_steps": args.lookahead_steps,
                "num_samples": args.lookahead_samples,
            }
        ways[f"sampling/{backend}"] = kw
    ways["lookahead"] = dict(strategy="lookahead", **pm)
    one_row_budget = min(budget, 11)
    for way, kw in ways.items():
        t0 = time.perf_counter()
        res = vq.acquire(vae, X, budget=budget, key=0, **kw)
        total = time.perf_counter() - t0
        diff = res.rmse_rows - rand_rows  # paired by row
        n_ok = np.sum(np.isfinite(diff), 0)
        steps = res.seconds[1:] if budget > 1 else res.seconds
        out["curves"][way] = {
            "rmse": res.rmse.tolist(),
            "rmse_full": res.rmse_full.tolist(),
            "minus_random": np.nanmean(diff, 0).tolist(),
            "minus_random_se": (np.nanstd(diff, 0, ddof=1) / np.sqrt(n_ok)).tolist(),
            "first_step_s": float(res.seconds[0]),
            "step_s_median": float(np.median(steps)),
            "step_ms_per_row": float(1e3 * np.median(steps) / X.shape[0]),
            "one_row_step_ms": 1e3 * _one_row_step(vae, X[0], kw, one_row_budget),
            "total_s": total,
            "first_choices": res.features[0],
        }
        print(table_name, way, json.dumps(out["curves"][way]), flush=True)
    # the lookahead network's forward pass alone, one row (half the features observed)
    params, static = eqx.partition(net.network, eqx.is_array)
    f = jax.jit(lambda p, x, o: eqx.combine(p, static).entropies(x, o))
    x0 = jnp.asarray(vae.schema.standardise(X[:1])[0], jnp.float32)
    obs = jnp.arange(vae.num_features) % 2 == 0
    jax.block_until_ready(f(params, x0, obs))
    reps = timeit.repeat(lambda: jax.block_until_ready(f(params, x0, obs)), number=200, repeat=5)
    out["lookahead_forward_us"] = 1e6 * min(reps) / 200
    print(table_name, "forward pass us", out["lookahead_forward_us"], flush=True)
    return out


def run(args):
    res = {"tables": {}, "train_steps": args.train_steps, **machine()}
    for name, rows, budget in zip(args.tables, args.rows, args.budget):
        res["tables"][name] = run_table(name, rows, budget, args)
    return res


def _table_md(t):
    B = t["budget"]
    ways = [w for w in t["curves"] if w != "random"]
    cols = ways + ["random"]
    la = t["lookahead_network"]
    md = [
        f"## {t['table']}",
        "",
        f"{t['rows']} test rows (D = {t['features']}, d = {t['latent_dim']}), nothing observed "
        f"at first, {B} acquisitions per row. Sampling: {t['num_samples']} imagined values per "
        f"candidate. Lookahead network: width {la['width']}, trained {la['steps_run']} steps "
        f"(best at {la['best_step']}, {la['train_s']:.0f} s) on the training rows against the "
        f"frozen shipped guide, {la['num_candidates']} candidates x {la['num_imagined']} "
        f"imagined values per row and step. Random: mean of {t['random_repeats']} orders.",
        "",
        "RMSE of the imputed unmeasured features (PM's Figure 7 measure):",
        "",
        "| acquisitions | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for s in range(B + 1):
        md.append(f"| {s} | " + " | ".join(f"{t['curves'][c]['rmse'][s]:.3f}" for c in cols) + " |")
    md += [
        "",
        "RMSE of the whole row (measured features exact, denominator D at every step):",
        "",
        "| acquisitions | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for s in range(B + 1):
        md.append(
            f"| {s} | " + " | ".join(f"{t['curves'][c]['rmse_full'][s]:.3f}" for c in cols) + " |"
        )
    md += [
        "",
        "Minus random order, paired by row (mean ± standard error over rows; negative = better):",
        "",
        "| acquisitions | " + " | ".join(ways) + " |",
        "|---|" + "---|" * len(ways),
    ]
    for s in range(1, B + 1):
        cells = [
            f"{t['curves'][w]['minus_random'][s]:+.3f} ± {t['curves'][w]['minus_random_se'][s]:.3f}"
            for w in ways
        ]
        md.append(f"| {s} | " + " | ".join(cells) + " |")
    md += [
        "",
        f"Time per acquisition step (median over steps after the first; one row alone: the "
        f"fastest of up to 10 steps, including the current posterior and the 50-draw "
        f"imputation; the lookahead network's forward pass alone takes "
        f"{t['lookahead_forward_us']:.0f} µs per row, fastest of 5 x 200 calls):",
        "",
        f"| way | step, {t['rows']} rows | per row | one row alone | first step (compiles) |",
        "|---|---|---|---|---|",
    ]
    for w in ways:
        c = t["curves"][w]
        md.append(
            f"| {w} | {1e3 * c['step_s_median']:.1f} ms | {c['step_ms_per_row']:.2f} ms | "
            f"{c['one_row_step_ms']:.2f} ms | {c['first_step_s']:.1f} s |"
        )
    c = t["curves"]["random"]
    md.append(f"| random | {1e3 * c['step_s_median']:.1f} ms | | | |")
    return md


def markdown(res):
    md = [
        "# Greedy feature acquisition (PM Figure 7 style)",
        "",
        "Ways of choosing: `sampling/<backend>` is way (a), imagined values and refits "
        "(`posterior_matching`: the shipped guide re-encodes each imagined row, PM's sampling "
        "approach); `lookahead` is way (b), PM's lookahead network (eq. 7), one forward pass "
        "per row; `random` is a uniformly random order. Every way imputes with the shipped "
        "posterior-matching guide (mean of 50 decoded draws). Standardised units. "
        f"Device {res['device']}, {res['cpu_count']} CPUs, shared with other jobs while "
        "measured: times are indicative.",
        "",
        "PM (Strauss & Oliva 2022, §5.5, 16x16 MNIST, one row, CPU): 68 ms per step "
        "sampling-based, 310 µs with the lookahead network.",
        "",
    ]
    for t in res["tables"].values():
        md += _table_md(t) + [""]
    return "\n".join(md)


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = list(res["tables"].values())
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 3.8), squeeze=False)
    for ax, t in zip(axes[0], tables):
        steps = np.arange(t["budget"] + 1)
        for i, (w, c) in enumerate(t["curves"].items()):
            style = "--" if w == "random" else "-o"
            ax.plot(steps, c["rmse"], style, color=f"C{i}", label=w, ms=3)
        ax.set_xlabel("number of acquisitions")
        ax.set_ylabel("RMSE of unmeasured features")
        ax.set_title(f"{t['table']}: {t['rows']} test rows")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=["white_wine", "digits"])
    p.add_argument("--rows", nargs="+", type=int, default=[300, 100])
    p.add_argument("--budget", nargs="+", type=int, default=[8, 20])
    p.add_argument("--num-samples", type=int, default=5)
    p.add_argument("--train-steps", type=int, default=5000)
    p.add_argument("--lookahead-steps", type=int, default=200)
    p.add_argument("--lookahead-samples", type=int, default=20)
    p.add_argument("--random-repeats", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=["posterior_matching"])
    p.add_argument("--out", default="acquisition")
    args = p.parse_args()
    if not len(args.tables) == len(args.rows) == len(args.budget):
        p.error("--tables, --rows and --budget need one value per table")
    res = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(res))
    plot(res, RESULTS / f"{args.out}.png")


if __name__ == "__main__":
    main()
