"""Queries/s of ``infer(..., devices="all")`` with 1, 2 and 4 host devices.

Each device count runs in a subprocess of its own, started with
``XLA_FLAGS=--xla_force_host_platform_device_count=K`` (the flag must be set
before JAX starts). The work: mean-field Gaussian VI on ``--n`` rows of the
breast-cancer model (``vq.pretrained("breast_cancer")``, about half the
features observed per row), ``--steps`` Adam steps (default 100: reduced from
the backend's 300 to keep the run short; queries/s scales as 1/steps) and
S = 100 samples, the rows sharded over the K devices. Compile time is left out
(one warm-up call); the figure is the best of ``--repeats`` timed calls.

On a CPU, "host devices" are slices of the same cores: XLA already spreads one
device's work over the cores with its own thread pool, so extra host devices
can only help by cutting the work into more independent pieces, and cannot
beat the core count. Real speed-ups need real devices (several GPUs, or hosts
joined with ``jax.distributed.initialize``; see ``docs/scale_out.md``).

Writes ``benchmarks/results/sharding.{json,md}``; asserts nothing about time.
Usage: ``python benchmarks/sharding.py [--n 512] [--steps 100] [--devices 1 2 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def child(n, steps, repeats):
    """Run in the subprocess: time the sharded fit, print one JSON line."""
    import jax
    from _common import breast_cancer_model, random_queries

    vae, source = breast_cancer_model()
    q = vae.given(random_queries(vae, n))
    kw = dict(key=0, devices="all", num_steps=steps, num_samples=100)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    post = q.infer("gaussian", **kw)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        post = q.infer("gaussian", **kw)
        times.append(time.perf_counter() - t0)
    out = {
        "devices": len(jax.devices()),
        "model": source,
        "first_call_s": first,
        "times_s": times,
        "queries_per_second": n / min(times),
        "failed_rows": int(post.failed.sum()),
        # other work on the machine: queries/s is only comparable at similar load
        "load_average_1min": [load, os.getloadavg()[0]],
    }
    print("RESULT" + json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="number of queries")
    ap.add_argument("--steps", type=int, default=100, help="Adam steps (backend default 300)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.n, args.steps, args.repeats)

    from _common import RESULTS, machine

    rows = []
    for k in args.devices:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={k}"}
        cmd = [sys.executable, __file__, "--child", "--n", str(args.n)]
        cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode:
            raise RuntimeError(f"{k} devices: the child failed\n{res.stderr[-3000:]}")
        line = next(s for s in res.stdout.splitlines() if s.startswith("RESULT"))
        rows.append(json.loads(line[len("RESULT") :]))
        print(f"{k} device(s): {rows[-1]['queries_per_second']:.1f} queries/s", flush=True)
    base = rows[0]["queries_per_second"]
    out = {
        "benchmark": "sharding",
        "backend": "gaussian",
        "num_queries": args.n,
        "num_steps": args.steps,
        "num_samples": 100,
        "runs": rows,
        "speedup_vs_first": {r["devices"]: r["queries_per_second"] / base for r in rows},
        **machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sharding.json").write_text(json.dumps(out, indent=2))
    md = [
        f"# Sharded queries ({args.n} queries, Gaussian VI, S=100, T={args.steps}, "
        f"{out['cpu_count']} CPU cores)",
        "",
        f"Model: {rows[0]['model']}. T={args.steps} Adam steps, reduced from the default 300 "
        "to keep the run short. Host devices from "
        "`XLA_FLAGS=--xla_force_host_platform_device_count=K`, one subprocess per K; "
        f"best of {args.repeats} timed calls after a warm-up call.",
        "",
        "| host devices | queries/s | speed-up | first call (s, with compile) "
        "| load average (start, end) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['devices']} | {r['queries_per_second']:.1f} | "
            f"{r['queries_per_second'] / base:.2f} | {r['first_call_s']:.1f} | "
            f"{r['load_average_1min'][0]:.1f}, {r['load_average_1min'][1]:.1f} |"
        )
    md += [
        "",
        "Host devices share the machine's cores (XLA already spreads one device's work over "
        "them), so on this CPU more host devices cannot beat the core count; the figures "
        "measure the sharding machinery, not a multi-device speed-up. The load average is "
        "the machine's (other processes included): with a load above the core count the "
        "runs compete for the cores and the figures are lower and noisier than on a quiet "
        "machine.",
    ]
    (RESULTS / "sharding.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
