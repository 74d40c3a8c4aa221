"""Pathfinder beside Gaussian VI on the breast-cancer model: queries/s at equal IWAE.

``--n`` queries (default 200) are the breast-cancer test rows (115) repeated,
each losing exactly 15 of its 30 features with its own mask (QAVI protocol, as
``benchmarks/time_to_accuracy.py``). Each configuration answers all of them
twice as one compiled program: the first call compiles (``compile s`` = first
minus second call), the second is timed and scored. The score is the mean IWAE
estimate of ``log p(x_U | x_O)`` of the held-out features
(``Posterior.log_likelihood`` with the true rows, ``--iwae`` samples), with the
mean PSIS k-hat of the proposal ``q`` for ``p(z | x_O)`` beside it
(``Posterior.diagnose``).
Configurations: Pathfinder at its defaults (with 4 paths on request), and Gaussian
(mean-field) VI with S = 100 at T = 300 (its default), 100 and 50 steps.

Writes ``benchmarks/results/pathfinder.{json,md}`` with ``os.getloadavg()``
before and after (the machine may be shared); asserts nothing about time.

Usage: ``python benchmarks/pathfinder.py [--n 200] [--iwae 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from _common import RESULTS, machine

import vaequery as vq

CONFIGS = {
    "pathfinder": ("pathfinder", {}),
    "pathfinder, 4 paths": ("pathfinder", {"num_paths": 4}),
    "gaussian T=300": ("gaussian", {"num_steps": 300}),
    "gaussian T=100": ("gaussian", {"num_steps": 100}),
    "gaussian T=50": ("gaussian", {"num_steps": 50}),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of queries")
    ap.add_argument("--iwae", type=int, default=1000, help="IWAE samples per query")
    # 4 paths cost about 4x one path: opt-in (--configs ... "pathfinder, 4 paths")
    default = [c for c in CONFIGS if c != "pathfinder, 4 paths"]
    ap.add_argument("--configs", nargs="+", default=default, choices=list(CONFIGS))
    args = ap.parse_args()
    load_before = os.getloadavg()
    vae = vq.pretrained("breast_cancer")
    Xt = vq.datasets.load("breast_cancer", "test").X
    X = Xt[np.arange(args.n) % len(Xt)]
    q = vae.given(vq.datasets.missing.half_features(X, key=1).X)
    rows = {}
    for label in args.configs:
        name, hp = CONFIGS[label]
        t0 = time.perf_counter()
        q.infer(name, key=0, **hp)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        post = q.infer(name, key=1, **hp)
        t = time.perf_counter() - t0
        ll = post.log_likelihood(X, num_samples=args.iwae, key=2)
        khat = np.asarray(post.diagnose(num_samples=args.iwae, key=2, warn=False)["khat"])
        rows[label] = {
            "backend": name,
            "hyperparameters": hp,
            "queries_per_second": args.n / t,
            "answer_seconds": t,
            "compile_seconds": max(t_first - t, 0.0),
            "iwae_mean": float(np.mean(ll)),
            "iwae_sem": float(np.std(ll) / np.sqrt(args.n)),
            "khat_mean": float(np.nanmean(khat)),
            "khat_above_0.7": float(np.mean(khat > 0.7)),
            "failed": int(np.sum(post.failed)),
        }
        r = rows[label]
        print(
            f"{label:22s} {r['queries_per_second']:8.1f} q/s  compile {r['compile_seconds']:5.1f} s"
            f"  IWAE {r['iwae_mean']:.3f}  khat {r['khat_mean']:.2f}",
            flush=True,
        )
    out = {
        "benchmark": "pathfinder",
        "model": "vq.pretrained('breast_cancer')",
        "num_queries": args.n,
        "iwae_samples": args.iwae,
        "configs": rows,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        **machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pathfinder.json").write_text(json.dumps(out, indent=2))
    md = [
        f"# Pathfinder vs Gaussian VI ({args.n} breast-cancer queries, 15 of 30 features "
        f"held out, {out['device']}, {out['cpu_count']} CPUs)",
        "",
        f"Timed second call; IWAE of the held-out features with {args.iwae} samples "
        "(higher is better; +- is the standard error over queries, which share most of "
        "their variation between rows); k-hat: PSIS k-hat of q as proposal for p(z | x_O) "
        "(Posterior.diagnose). "
        f"Load average before/after: {load_before[0]:.2f} / {out['loadavg_after'][0]:.2f} "
        "(shared machine).",
        "",
        "| configuration | queries/s | answer s | compile s | mean IWAE | k-hat mean | "
        "k-hat > 0.7 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, v in rows.items():
        md.append(
            f"| {k} | {v['queries_per_second']:,.1f} | {v['answer_seconds']:.2f} | "
            f"{v['compile_seconds']:.1f} | {v['iwae_mean']:.3f} +- {v['iwae_sem']:.3f} | "
            f"{v['khat_mean']:.2f} | {100 * v['khat_above_0.7']:.0f} % |"
        )
    (RESULTS / "pathfinder.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
