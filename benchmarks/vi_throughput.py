"""Queries/s of every variational backend on breast-cancer-shaped queries.

Each backend answers the same N queries (D = 30 features, latent d = 16,
16-128-128-30 MLP decoder, about half the features observed at random) with
each backend's default budget (``S`` draws per step, ``T`` steps; QAVI's
``S = 100``, ``T = 300`` for the Gaussian families, ``S = 32``, ``T = 600`` for
the flows) unless ``--steps``/``--samples`` are given, as one compiled program.
The first call compiles and is not timed; the second is, in wall time and in the
process's CPU time (all threads), each also as a ratio to ``"gaussian"``: on a
machine shared with other work the CPU-time ratio is the steadier one. Writes
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
    ap.add_argument("--steps", type=int, default=None, help="T (default: each backend's)")
    ap.add_argument("--samples", type=int, default=None, help="S (default: each backend's)")
    args = ap.parse_args()
    vae, source = breast_cancer_model()
    q = vae.given(random_queries(vae, args.n))
    hp = {k: v for k, v in dict(num_steps=args.steps, num_samples=args.samples).items() if v}
    rows = {}
    for name in args.backends:
        t0 = time.perf_counter()
        q.infer(name, key=0, **hp)  # compile + warm-up
        t_first = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        post = q.infer(name, key=1, **hp)
        t, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows[name] = {
            "S": getattr(post.backend, "num_samples", None),
            "T": getattr(post.backend, "num_steps", None),
            "queries_per_second": args.n / t,
            "seconds": t,
            "cpu_seconds": cpu,
            "first_call_seconds": t_first,
            "final_loss_mean": float(np.mean(post.loss[:, -1])),
        }
        print(f"{name:10s} {args.n / t:8.2f} queries/s ({t:.1f} s; first call {t_first:.1f} s)")
    out = {
        "benchmark": "vi_throughput",
        "model": source,
        "num_queries": args.n,
        "backends": rows,
        **machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    md = [
        f"# VI backends throughput ({args.n} queries, {out['device']}, {out['cpu_count']} CPUs)",
        "",
        f"Model: {source}. Default hyper-parameters unless S/T were forced; timed "
        "second call. Ratios are to gaussian in the same process (wall, CPU time).",
        "",
        "| backend | S | T | queries/s | seconds | ratio (wall) | CPU s | ratio (CPU) "
        "| first call (compile) s | mean final loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = rows.get("gaussian")
    for k, v in rows.items():
        r_wall = base["seconds"] / v["seconds"] if base else float("nan")
        r_cpu = base["cpu_seconds"] / v["cpu_seconds"] if base else float("nan")
        v["ratio_wall"], v["ratio_cpu"] = r_wall, r_cpu
        md.append(
            f"| {k} | {v['S']} | {v['T']} | {v['queries_per_second']:,.2f} | "
            f"{v['seconds']:.1f} | {r_wall:.2f} | {v['cpu_seconds']:.1f} | {r_cpu:.2f} | "
            f"{v['first_call_seconds']:.1f} | {v['final_loss_mean']:.2f} |"
        )
    (RESULTS / "vi_throughput.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "vi_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
