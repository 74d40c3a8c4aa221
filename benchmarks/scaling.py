"""Scaling curve: compile time, answer time and peak memory per backend and batch size.

Every (backend, N) runs in a fresh Python process (so compile time is a cold
start and peak memory is that run's alone) on N breast-cancer-shaped queries
(``_common.random_queries``: D = 30, d = 16, about half the features observed).
The worker times ``Query.infer`` once; JAX's own monitoring events (tracing,
lowering to MLIR, XLA compilation) give the compile share, the rest is the
answer time. Peak memory is the process's ``ru_maxrss``; the table also gives
the resident memory before the query (imports, model, query arrays) so the
query's own share can be read off. Batches above ``--chunk`` rows run in
chunks of that many rows (``chunk_size=``).

A second table compares, for the largest N, the plain path (``Query.infer``,
every draw of every row kept) with the streaming path
(:func:`vaequery.stream.infer_stream`, ``keep="summary"``, blocks of
``--block`` rows, checkpointed to a temporary folder).

A backend stops early when its next size would take longer than
``--max-seconds`` (extrapolated linearly from the last one; MCMC reaches it
first): that size is skipped and the table says so. The persistent compilation cache is off. Writes
``benchmarks/results/scaling.{json,md,png}``; asserts nothing about time.

Usage: ``python benchmarks/scaling.py [--quick] [--sizes 1 10 ...] [--backends ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
SIZES = [1, 10, 100, 1_000, 10_000, 100_000]
BACKENDS = [
    "gaussian",
    "fullrank",
    "mixture",
    "iaf",
    "planar",
    "posterior_matching",
    "chees",
    "nuts",
]
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def hyperparameters(backend, steps, samples, warmup):
    """The settings a backend runs with here (only those it has; none with ``--defaults``)."""
    from vaequery.backends import _base

    if steps is None:
        return {}

    fields = {f.name for f in _base._REGISTRY[backend].__dataclass_fields__.values() if f.init}
    want = {"num_steps": steps, "num_samples": samples, "num_warmup": warmup}
    return {k: v for k, v in want.items() if k in fields}


def worker(args):
    """One (backend, N) in this process; prints one JSON line."""
    import resource

    import jax

    import vaequery as vq

    vq.disable_compilation_cache()
    spans = []

    def listen(event, start, end, **kwargs):
        if event in _COMPILE_EVENTS:
            spans.append((start, end))

    jax.monitoring.register_event_time_span_listener(listen)
    sys.path.insert(0, str(HERE))
    from _common import breast_cancer_model, random_queries

    vae, source = breast_cancer_model()
    q = vae.given(random_queries(vae, args.n))
    hp = hyperparameters(args.backend, args.steps, args.samples, args.warmup)
    from vaequery.backends import _base

    cfg = _base.get(args.backend)
    budget = {
        k: getattr(cfg, k) for k in ("num_steps", "num_samples", "num_warmup") if hasattr(cfg, k)
    }
    chunk = args.chunk if args.n > args.chunk else None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_before = os.getloadavg()[0]
    spans.clear()  # loading the model traced a little: not this query's compile time
    t0 = time.perf_counter()
    if args.mode == "plain":
        out = q.infer(args.backend, key=0, num_draws=args.draws, chunk_size=chunk, **hp)
        failed = int(out.failed.sum())
    else:
        with tempfile.TemporaryDirectory() as d:
            out = q.infer_stream(
                args.backend,
                key=0,
                num_draws=args.draws,
                chunk_size=args.chunk,
                block_size=args.block,
                checkpoint=Path(d) / "run.vqckpt",
                **hp,
            )
        failed = int(out.failed.sum())
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    compile_s = {"t": _union(spans)}
    print(
        json.dumps(
            {
                "backend": args.backend,
                "n": args.n,
                "mode": args.mode,
                "model": source,
                "hyperparameters": hp,
                "budget": budget,
                "num_draws": args.draws,
                "chunk_size": chunk if args.mode == "plain" else args.chunk,
                "block_size": args.block if args.mode == "stream" else None,
                "seconds": seconds,
                "compile_seconds": compile_s["t"],
                "answer_seconds": seconds - compile_s["t"],
                "queries_per_second": args.n / max(seconds - compile_s["t"], 1e-9),
                "rss_before_mb": rss_before,
                "peak_rss_mb": peak,
                "load_average": [load_before, os.getloadavg()[0]],
                "failed": failed,
            }
        )
    )


def _union(spans):
    """Total length of the union of ``(start, end)`` intervals (nested traces count once)."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def spawn(backend, n, args, mode="plain"):
    """Run one worker process; its JSON record (or the error it died with)."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--backend",
        backend,
        "--n",
        str(n),
        "--mode",
        mode,
        *(
            []
            if args.defaults
            else ["--steps", str(args.steps), "--samples", str(args.samples)]
            + ["--warmup", str(args.warmup)]
        ),
        "--draws",
        str(args.draws),
        "--chunk",
        str(args.chunk),
        "--block",
        str(args.block),
    ]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"backend": backend, "n": n, "mode": mode, "error": " | ".join(tail)}
    rec = json.loads(lines[-1])
    rec["process_seconds"] = wall
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N up to 1,000, cheap settings")
    ap.add_argument("--sizes", nargs="+", type=int)
    ap.add_argument("--backends", nargs="+", default=BACKENDS)
    ap.add_argument("--steps", type=int, help="VI steps T (default 50; --quick 20)")
    ap.add_argument("--samples", type=int, help="VI samples per step S (default 10; --quick 8)")
    ap.add_argument("--warmup", type=int, help="MCMC warm-up steps (default 100; --quick 30)")
    ap.add_argument("--draws", type=int, default=100, help="draws kept per query")
    ap.add_argument("--chunk", type=int, default=1000, help="chunk_size above this many rows")
    ap.add_argument("--block", type=int, default=10_000, help="streaming block_size")
    ap.add_argument(
        "--max-seconds", type=float, help="skip a larger N past this (default 180; --quick 30)"
    )
    ap.add_argument(
        "--defaults",
        action="store_true",
        help="every backend at its own default budget; writes scaling_defaults.*",
    )
    ap.add_argument(
        "--no-stream",
        action="store_true",
        help="skip the plain-vs-stream table (always skipped with --defaults)",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    args = ap.parse_args()
    q = args.quick
    if not args.defaults and not (args.worker and args.steps is None):
        args.steps = args.steps or (20 if q else 50)
        args.samples = args.samples or (8 if q else 10)
        args.warmup = args.warmup or (30 if q else 100)
    args.max_seconds = args.max_seconds or (30.0 if q else 180.0)
    if args.worker:
        return worker(args)
    sizes = args.sizes or ([1, 10, 100, 1_000] if q else SIZES)
    t_start = time.perf_counter()
    rows = []
    for backend in args.backends:
        last = None
        for n in sizes:
            if last is not None and "error" not in last:
                est = last["compile_seconds"] + last["answer_seconds"] * n / last["n"]
                if est > args.max_seconds:
                    rows.append(
                        {
                            "backend": backend,
                            "n": n,
                            "mode": "plain",
                            "skipped": f"would take about {est:,.0f} s (> {args.max_seconds:g})",
                        }
                    )
                    print(f"{backend:18s} N={n:>7,}  skipped ({rows[-1]['skipped']})", flush=True)
                    continue
            rec = spawn(backend, n, args)
            rows.append(rec)
            last = rec
            _print(rec)
    stream_rows = []
    if not (args.no_stream or args.defaults):
        n = max(sizes)
        for mode in ("plain", "stream"):
            rec = spawn("gaussian", n, args, mode)
            stream_rows.append(rec)
            _print(rec)
    from _common import breast_cancer_model, machine

    _, source = breast_cancer_model()
    out = {
        "benchmark": "scaling",
        "model": source,
        "quick": q,
        "defaults": args.defaults,
        "settings": {
            "vi_steps": args.steps,
            "vi_samples": args.samples,
            "mcmc_warmup": args.warmup,
            "num_draws": args.draws,
            "chunk_size": args.chunk,
            "block_size": args.block,
            "max_seconds": args.max_seconds,
        },
        "note": (
            "each (backend, N) in a fresh process; compile = JAX trace + lowering + XLA "
            "compile events; answer = the rest of the one timed Query.infer call; peak RSS = "
            "ru_maxrss. The 2-core CPU was shared with other jobs while this ran, so times are "
            "indicative (ratios within one run more than absolute values)."
        ),
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
        "stream": stream_rows,
        **machine(),
    }
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    stem = "scaling_defaults" if args.defaults else "scaling"
    (res / f"{stem}.json").write_text(json.dumps(out, indent=2))
    md = _markdown(out)
    (res / f"{stem}.md").write_text(md)
    _plot(out, res / f"{stem}.png")
    print(md)


def _print(rec):
    if "error" in rec:
        print(f"{rec['backend']:18s} N={rec['n']:>7,}  ERROR {rec['error']}", flush=True)
        return
    print(
        f"{rec['backend']:18s} N={rec['n']:>7,} {rec['mode']:6s} "
        f"compile {rec['compile_seconds']:6.2f} s"
        f"  answer {rec['answer_seconds']:8.2f} s  ({rec['queries_per_second']:9.1f} q/s)"
        f"  peak RSS {rec['peak_rss_mb']:7.0f} MB",
        flush=True,
    )


def _markdown(out):
    s = out["settings"]
    if out.get("defaults"):
        budget = "every backend at its own default budget (column `budget`)"
        title = "Scaling with the number of queries at default budgets"
    else:
        budget = (
            f"VI: T = {s['vi_steps']} steps, S = {s['vi_samples']} samples per step; MCMC: "
            f"{s['mcmc_warmup']} warm-up steps"
        )
        title = "Scaling with the number of queries"
    md = [
        f"# {title} ({out['device']}, {out['cpu_count']} CPUs)",
        "",
        f"Model: {out['model']}. {budget}; {s['num_draws']} draws kept per query; chunk_size = "
        f"{s['chunk_size']:,} above that many rows; sizes whose extrapolated time exceeds "
        f"{s['max_seconds']:g} s are skipped and say so. {out['note']} "
        f"Total {out['total_seconds'] / 60:.1f} min.",
        "",
        "| backend | budget | N | compile s | answer s | queries/s | RSS before MB | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    budgets = {r["backend"]: r.get("budget") for r in out["rows"] if r.get("budget")}
    for r in out["rows"]:
        b = budgets.get(r["backend"]) or {}
        b = ", ".join(f"{k.replace('num_', '')} {v}" for k, v in b.items())
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or "error: " + r["error"][:80]
            md.append(f"| {r['backend']} | {b} | {r['n']:,} | | | {why} | | |")
            continue
        md.append(
            f"| {r['backend']} | {b} | {r['n']:,} | {r['compile_seconds']:.2f} | "
            f"{r['answer_seconds']:.2f} | {r['queries_per_second']:,.1f} | "
            f"{r['rss_before_mb']:,.0f} | {r['peak_rss_mb']:,.0f} |"
        )
    if out["stream"]:
        n = out["stream"][0]["n"]
        md += [
            "",
            f"## {n:,} queries, gaussian: plain path vs streaming with checkpoints",
            "",
            "plain: `q.infer(..., chunk_size=C)`, every draw kept (a Posterior); stream: "
            f"`q.infer_stream(..., chunk_size=C, block_size={s['block_size']:,}, "
            'checkpoint=..., keep="summary")`, per-query summaries only.',
            "",
            "| path | seconds | compile s | peak RSS MB | RSS before MB |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in out["stream"]:
            if "error" in r:
                md.append(f"| {r['mode']} | error: {r['error'][:80]} | | | |")
                continue
            md.append(
                f"| {r['mode']} | {r['seconds']:.1f} | {r['compile_seconds']:.2f} | "
                f"{r['peak_rss_mb']:,.0f} | {r['rss_before_mb']:,.0f} |"
            )
    return "\n".join(md) + "\n"


def _plot(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    by = {}
    for r in out["rows"]:
        if "compile_seconds" in r:
            by.setdefault(r["backend"], []).append(r)
    for name, rs in by.items():
        n = [r["n"] for r in rs]
        axes[0].plot(n, [r["compile_seconds"] for r in rs], "o-", label=name)
        axes[1].plot(n, [max(r["answer_seconds"], 1e-3) for r in rs], "o-", label=name)
        axes[2].plot(n, [r["peak_rss_mb"] for r in rs], "o-", label=name)
    titles = ("compile time (s)", "answer time (s)", "peak RSS (MB)")
    for ax, t in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("queries N")
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"vaequery scaling: {out['model']}, {out['device']} x {out['cpu_count']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
