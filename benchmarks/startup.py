"""Time to first answer: a fresh process that loads a shipped model and asks one query.

Each measurement is a new Python process (nothing compiled in memory) that runs::

    import vaequery as vq                                  # "import"
    vae = vq.pretrained("breast_cancer")                   # "load"
    post = vae.given(mean_radius=15.0).infer("gaussian", key=0)   # "query"
    post.summary()                                         # "summary" (imports pandas)

in three settings: ``no_cache`` (JAX compiles everything), ``warm_cache`` (JAX's
persistent compilation cache, :func:`vaequery.enable_compilation_cache`, filled
by one earlier process) and, for reference, ``cold_cache`` (the run that fills
it). Each is repeated and the median reported; ``first_answer`` is
import + load + query + summary inside the process, ``process`` the wall time of
the whole ``python`` command (interpreter start and exit included).

``--baseline-src DIR`` also measures another checkout of the package (a folder
holding ``vaequery/``, e.g. ``git archive HEAD vaequery | tar -x -C DIR``) and
stores it as the baseline; without it the stored baseline is kept. The posterior
means of every run are compared: ``identical_results`` says whether all runs of
all settings (baseline included) gave the same numbers.

Writes ``benchmarks/results/startup.{json,md}``; asserts nothing about time.
Usage: ``python benchmarks/startup.py [--repeats 5] [--baseline-src DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# One-off measurements by hand (issue 11, step 1 and after the change), single
# fresh processes on the same 2-core machine while it was quieter (1-min load
# average about 2): ranges of 2-4 runs, seconds. Kept as the recorded baseline.
HAND_MEASURED = {
    "before": {"import": "1.07-1.26", "load": "3.91-4.17", "query": "2.06-2.28",
               "summary": "0.27-0.61", "warm_cache_query": "n/a (no cache switch)"},
    "after": {"import": "0.93-1.29", "load": "0.11-0.15", "query": "2.15-2.40",
              "summary": "0.22-0.33", "warm_cache_query": "0.53-0.64"},
}  # fmt: skip
PHASES = ("import", "load", "query", "summary", "first_answer", "process")

# The child process; argv: mode ("no_cache" or "cache") and the cache folder.
CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
import vaequery as vq
t1 = time.perf_counter()
mode, folder = sys.argv[1], sys.argv[2]
if mode == "cache":
    if hasattr(vq, "enable_compilation_cache"):
        vq.enable_compilation_cache(folder)
    else:  # a checkout from before the function: the same settings by hand
        import jax
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
t2 = time.perf_counter()
vae = vq.pretrained("breast_cancer")
t3 = time.perf_counter()
post = vae.given(mean_radius=15.0).infer("gaussian", key=0)
t4 = time.perf_counter()
table = post.summary()
t5 = time.perf_counter()
print(json.dumps({
    "package": vq.__file__,
    "import": t1 - t0, "load": t3 - t2, "query": t4 - t3, "summary": t5 - t4,
    "first_answer": t5 - t0,
    "means": [float(v) for v in table["mean"]],
}))
"""


def _child(mode, folder, src=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.pop("VAEQUERY_CACHE_DIR", None)
    env["JAX_ENABLE_COMPILATION_CACHE"] = "true" if mode == "cache" else "false"
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(folder)],
        env=env,
        cwd=tempfile.gettempdir(),  # `python -c` puts the working folder first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["process"] = wall
    return record


def measure(repeats, src=None):
    """Median phase times of the three settings, and the posterior means seen."""
    runs = {"no_cache": [], "cold_cache": [], "warm_cache": []}
    for _ in range(repeats):
        runs["no_cache"].append(_child("no_cache", "-", src))
    for _ in range(max(1, repeats // 2)):
        with tempfile.TemporaryDirectory() as folder:
            runs["cold_cache"].append(_child("cache", folder, src))
    with tempfile.TemporaryDirectory() as folder:
        _child("cache", folder, src)  # fill the cache
        for _ in range(repeats):
            runs["warm_cache"].append(_child("cache", folder, src))
    table = {
        setting: {p: round(statistics.median(r[p] for r in rs), 3) for p in PHASES}
        for setting, rs in runs.items()
    }
    means = [r["means"] for rs in runs.values() for r in rs]
    packages = sorted({str(Path(r["package"]).parent) for rs in runs.values() for r in rs})
    return table, means, packages


def _load(result):
    load = result.get("load_average") or {}
    return " to ".join(f"{v:.1f}" for v in (load.get("start"), load.get("end")) if v is not None)


def _markdown(result):
    base, now = result.get("baseline"), result["current"]
    cols = [("now, no cache", now["no_cache"]), ("now, warm cache", now["warm_cache"])]
    if base:
        cols = [
            ("before, no cache", base["no_cache"]),
            ("before, warm cache", base["warm_cache"]),
            *cols,
        ]
    lines = [
        "# Time to first answer (fresh process, breast_cancer, one-row gaussian query)",
        "",
        f"Median of {result['repeats']} processes each; seconds; {result['machine']}, "
        f"jax {result['jax']}; 1-min load average {_load(result)} (other work on the "
        "machine slows every column alike). `first_answer` = import + load + query + "
        "summary inside the process; `process` = the whole `python` command. Warm cache: JAX's "
        "persistent compilation cache (`vq.enable_compilation_cache()`, on by default "
        "in the `vaequery` command) filled by an earlier process. Cold cache (the run "
        f"that fills it): first answer {now['cold_cache']['first_answer']:.2f} s.",
        "",
        "| phase | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for p in PHASES:
        lines.append(f"| {p} | " + " | ".join(f"{t[p]:.2f}" for _, t in cols) + " |")
    lines += [
        "",
        f"Identical posterior means in every run{' (baseline included)' if base else ''}: "
        f"{result['identical_results']}.",
    ]
    if base:
        lines += ["", f"Baseline: {result['baseline_note']}"]
    hand = result["hand_measured"]
    lines += [
        "",
        "Measured by hand before and after the change (single fresh processes, the same "
        "machine quieter, load average about 2; ranges, seconds):",
        "",
        "| phase | before | after |",
        "|---|---:|---:|",
    ]
    for p in hand["before"]:
        lines.append(f"| {p} | {hand['before'][p]} | {hand['after'][p]} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Run the measurements and write ``results/startup.{json,md}``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--baseline-src", help="folder holding an older vaequery/ to measure too")
    p.add_argument("--baseline-note", default="", help="what the baseline checkout is")
    args = p.parse_args(argv)

    import jax

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    current, means, packages = measure(args.repeats)
    out = RESULTS / "startup.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    result = {
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "repeats": args.repeats,
        "current": current,
        "current_package": packages,
        "hand_measured": HAND_MEASURED,
    }
    if args.baseline_src:
        baseline, base_means, base_packages = measure(
            args.repeats, Path(args.baseline_src).resolve()
        )
        result["baseline"] = baseline
        result["baseline_package"] = base_packages
        result["baseline_note"] = args.baseline_note or str(args.baseline_src)
        result["baseline_means"] = base_means[0]
        means = means + base_means
    elif "baseline" in old:
        for k in ("baseline", "baseline_note", "baseline_means", "baseline_package"):
            if k in old:
                result[k] = old[k]
        means = means + [old["baseline_means"]]
    # other work on a shared machine slows every phase: keep it with the figures
    result["load_average"] = {
        "start": load_before,
        "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    result["identical_results"] = all(m == means[0] for m in means)
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "startup.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
