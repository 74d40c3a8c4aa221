"""Queries/s of every variational backend on breast-cancer-shaped queries.

Each backend answers the same N queries (D = 30 features, latent d = 16,
16-128-128-30 MLP decoder, about half the features observed at random) with
S = 100 samples and T = 300 steps, as one compiled program. The first call
compiles and is not timed; the second is. Writes
``benchmarks/results/vi_throughput.{json,md}``; asserts nothing about time.

Usage: ``python benchmarks/vi_throughput.py [--n 1000] [--backends gaussian iaf ...]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import RESULTS, breast_cancer_model, machine, random_queries

BACKENDS = ["gaussian", "fullrank", "iaf", "mixture", "planar", "numpyro"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of queries")
    ap.add_argument("--backends", nargs="+", default=BACKENDS)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    vae, source = breast_cancer_model()
    q = vae.given(random_queries(vae, args.n))
    hp = dict(num_steps=args.steps, num_samples=args.samples)
    rows = {}
    for name in args.backends:
        t0 = time.perf_counter()
        q.infer(name, key=0, **hp)  # compile + warm-up
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        post = q.infer(name, key=1, **hp)
        t = time.perf_counter() - t0
        rows[name] = {
            "queries_per_second": args.n / t,
            "seconds": t,
            "first_call_seconds": t_first,
            "final_loss_mean": float(np.mean(post.loss[:, -1])),
        }
        print(f"{name:10s} {args.n / t:8.2f} queries/s ({t:.1f} s; first call {t_first:.1f} s)")
    out = {
        "benchmark": "vi_throughput",
        "model": source,
        "num_queries": args.n,
        "S": args.samples,
        "T": args.steps,
        "backends": rows,
        **machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vi_throughput.json").write_text(json.dumps(out, indent=2))
    md = [
        f"# VI backends throughput ({args.n} queries, S={args.samples}, T={args.steps}, "
        f"{out['device']}, {out['cpu_count']} CPUs)",
        "",
        f"Model: {source}. Default hyper-parameters otherwise; timed second call.",
        "",
        "| backend | queries/s | seconds | first call (compile) s | mean final loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in rows.items():
        md.append(
            f"| {k} | {v['queries_per_second']:,.2f} | {v['seconds']:.1f} | "
            f"{v['first_call_seconds']:.1f} | {v['final_loss_mean']:.2f} |"
        )
    (RESULTS / "vi_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
