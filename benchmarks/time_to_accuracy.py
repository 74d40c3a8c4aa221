"""Time to accuracy: wall time until 1000 breast-cancer queries are answered well.

"Well" means within 0.05 nats (mean IWAE of ``log p(x_U | x_O)``) of a NUTS
reference. Two parts, both on the shipped models and guides:

1. **Time to accuracy** (breast cancer). ``--n`` queries are the test rows
   (115) repeated, each losing exactly ``floor(D/2) = 15`` features with its own
   mask (QAVI protocol, as ``benchmarks/amortized.py``). NUTS (4 chains, 500
   warm-up, 250 draws each) answers only the first ``--ref`` queries (NUTS on
   all 1000 would take most of the time budget): the accuracy of every
   configuration is its mean IWAE on those same ``--ref`` queries, paired with
   NUTS's (same rows, same masks, same IWAE samples count ``--iwae``); the mean
   over all ``--n`` queries is reported beside it. Each configuration answers
   all ``--n`` queries twice: the first call compiles (``compile s`` = first
   minus second call), the second is timed (``answer s``) and scored.
2. **Steps saved by tol** on the shipped tables: the first ``--rows`` test rows
   of each table (QAVI masks), Gaussian VI at its defaults with and without
   ``tol``; mean steps used per query, the batch's steps (the longest query:
   what a vmapped batch runs), and the IWAE difference (paired).

Writes ``benchmarks/results/time_to_accuracy.{json,md}`` with the load average
(the machine may be shared); asserts nothing about time.

Usage: ``python benchmarks/time_to_accuracy.py [--n 1000] [--ref 100] [--tables ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from _common import RESULTS, machine

import vaequery as vq

PM = "posterior_matching"
TARGET_GAP = 0.05
TODAY = "today: gaussian, T=300, S=100"

#: label -> VI hyper-parameters (``backend`` picks the family, default Gaussian
#: VI; ``None``: the amortized guide alone). "warm": started from the shipped
#: posterior-matching guide. Full-rank runs use a peak learning rate of 0.02:
#: at the default 0.3 Adam's jitter of the 120 off-diagonal entries leaves the
#: full-rank answer *worse* than the mean-field one (gap +0.68 nats measured).
FR = dict(backend="fullrank", init=PM, learning_rate=0.02)
CONFIGS = {
    TODAY: dict(),
    "posterior_matching guide alone": None,
    "gaussian warm, T=60, S=20": dict(init=PM, num_steps=60, num_samples=20),
    "gaussian warm + tol, S=20": dict(init=PM, num_samples=20, tol=0.05),
    "fullrank warm, T=60, S=20": dict(FR, num_steps=60, num_samples=20),
    "fullrank warm, T=100, S=10": dict(FR, num_steps=100, num_samples=10),
    "fullrank warm, T=30, S=10": dict(FR, num_steps=30, num_samples=10),
    "fullrank warm + tol, S=10": dict(FR, num_samples=10, tol=0.05),
    "fullrank warm + tol, S=10, chunks of 100": dict(FR, num_samples=10, tol=0.05, chunk_size=100),
    "fullrank warm + tol, T=100, S=10, chunks of 100": dict(
        FR, num_steps=100, num_samples=10, tol=0.05, chunk_size=100
    ),
}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _steps(post):
    used = post.info.get("num_steps_used")
    T = post.backend.num_steps if hasattr(post.backend, "num_steps") else 0
    if used is None:
        return {"mean": float(T), "max": int(T)}
    return {"mean": float(np.mean(used)), "max": int(np.max(used))}


def time_to_accuracy(n, ref, iwae, configs, nuts_cache=None):
    vae = vq.pretrained("breast_cancer")
    Xt = vq.datasets.load("breast_cancer", "test").X
    X = Xt[np.arange(n) % len(Xt)]
    Xq = vq.datasets.missing.half_features(X, key=1).X
    q = vae.given(Xq)

    def score(post, rows):
        return post.log_likelihood(X[:rows], num_samples=iwae, key=1, chunk_size=250)

    nuts, t_nuts = _timed(lambda: vae.given(Xq[:ref]).infer("nuts", key=0))
    ll_ref = score(nuts, ref)
    if nuts_cache:
        np.save(nuts_cache, ll_ref)
    out = {
        "nuts": {
            "queries": ref,
            "seconds_with_compile": t_nuts,
            "iwae": float(np.mean(ll_ref)),
            "failed": int(np.sum(nuts.failed)),
        }
    }
    print(f"NUTS on {ref} queries: {t_nuts:.1f} s, mean IWAE {np.mean(ll_ref):.3f}", flush=True)
    rows = {}
    for label, hp in configs.items():
        if hp is None:
            name, hp = PM, {}
        else:
            hp = dict(hp)
            name = hp.pop("backend", "gaussian")
        _, t_first = _timed(lambda name=name, hp=hp: q.infer(name, key=0, **hp))
        post, t = _timed(lambda name=name, hp=hp: q.infer(name, key=1, **hp))
        ll = score(post, n)
        diff = ll_ref - ll[:ref]
        rows[label] = {
            "backend": name,
            "hyperparameters": hp,
            "answer_seconds": t,
            "compile_seconds": max(t_first - t, 0.0),
            "first_call_seconds": t_first,
            "iwae_all": float(np.mean(ll)),
            "iwae_ref_rows": float(np.mean(ll[:ref])),
            "gap_to_nuts": float(np.mean(diff)),
            "gap_se": float(np.std(diff) / np.sqrt(ref)),
            "steps": _steps(post) if name != PM else {"mean": 0.0, "max": 0},
            "failed": int(np.sum(post.failed)),
        }
        r = rows[label]
        print(
            f"{label:42s} answer {t:6.2f} s  compile {r['compile_seconds']:5.1f} s  "
            f"gap {r['gap_to_nuts']:+.3f} ± {r['gap_se']:.3f}  steps {r['steps']}",
            flush=True,
        )
    ok = {k: v for k, v in rows.items() if v["gap_to_nuts"] <= TARGET_GAP}
    best = min(ok, key=lambda k: ok[k]["answer_seconds"]) if ok else None
    out.update(queries=n, configs=rows, fastest_within_target=best)
    return out


def steps_saved(tables, num_rows, iwae, tol):
    res = {}
    for name in tables:
        vae = vq.pretrained(name)
        X = vq.datasets.load(name, "test").X[:num_rows]
        q = vae.given(vq.datasets.missing.half_features(X, key=1).X)
        per = {}
        for label, hp in [("T=300", {}), (f"T=300, tol={tol}", {"tol": tol})]:
            post, t = _timed(lambda hp=hp: q.infer("gaussian", key=0, **hp))
            ll = post.log_likelihood(X, num_samples=iwae, key=1, chunk_size=250)
            per[label] = {"seconds_with_compile": t, "steps": _steps(post), "ll": ll}
        (a, b) = per.values()
        d = b["ll"] - a["ll"]
        res[name] = {
            "rows": int(len(X)),
            "tol": tol,
            "iwae": float(np.mean(a["ll"])),
            "iwae_tol": float(np.mean(b["ll"])),
            "iwae_diff": float(np.mean(d)),
            "iwae_diff_se": float(np.std(d) / np.sqrt(len(d))),
            "mean_steps_tol": b["steps"]["mean"],
            "batch_steps_tol": b["steps"]["max"],
            "steps_saved": 1.0 - b["steps"]["mean"] / 300,
            "seconds": a["seconds_with_compile"],
            "seconds_tol": b["seconds_with_compile"],
        }
        r = res[name]
        print(
            f"{name:14s} mean steps {r['mean_steps_tol']:.0f}/300 (batch {r['batch_steps_tol']}) "
            f"IWAE {r['iwae']:.3f} -> {r['iwae_tol']:.3f} ({r['iwae_diff']:+.3f} ± "
            f"{r['iwae_diff_se']:.3f})",
            flush=True,
        )
    return res


def markdown(res):
    t = res["time_to_accuracy"]
    nuts = t["nuts"]
    md = [
        f"# Time to accuracy ({t['queries']} breast-cancer queries, {res['device']}, "
        f"{res['cpu_count']} CPUs)",
        "",
        f"Load average before / after: {res['load_before']} / {res['load_after']} (the machine "
        "is shared: compare rows of this table, not runs).",
        "",
        f"Queries: the {t['queries']} queries are the 115 test rows repeated, each with "
        "floor(D/2) = 15 features hidden by its own mask. Reference: NUTS (4 chains, 500 "
        f"warm-up, 250 draws) on the first {nuts['queries']} queries, mean IWAE "
        f"{nuts['iwae']:.3f} ({res['iwae_samples']} samples, standardised units; "
        f"{nuts['seconds_with_compile']:.0f} s with compile). Gap = NUTS's mean IWAE minus the "
        f"configuration's on those same {nuts['queries']} queries (paired, ± its standard "
        f"error); target gap ≤ {TARGET_GAP}. Answer s: second call of the compiled program "
        "(all queries); compile s: first call minus second. Steps: mean per query / the "
        "batch's (longest query's).",
        "",
        "| configuration | answer s | compile s | gap to NUTS (nats) | IWAE, all queries "
        "| steps mean / batch | within 0.05 |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for k, v in t["configs"].items():
        ok = "yes" if v["gap_to_nuts"] <= TARGET_GAP else "no"
        md.append(
            f"| {k} | {v['answer_seconds']:.2f} | {v['compile_seconds']:.1f} | "
            f"{v['gap_to_nuts']:+.3f} ± {v['gap_se']:.3f} | {v['iwae_all']:.3f} | "
            f"{v['steps']['mean']:.0f} / {v['steps']['max']} | {ok} |"
        )
    best = t["fastest_within_target"]
    md.append("")
    if best:
        base = t["configs"][TODAY]["answer_seconds"]
        bt = t["configs"][best]["answer_seconds"]
        md.append(
            f"Fastest within {TARGET_GAP} nats of NUTS: **{best}**, {bt:.2f} s "
            f"({base / bt:.1f}x faster than today's {base:.1f} s, same process)."
        )
    else:
        md.append(f"No configuration came within {TARGET_GAP} nats of NUTS.")
    md += [
        "",
        "Reading the table. The gap's ± is the standard error of the per-query differences "
        f"over the {nuts['queries']} reference queries (queries differ; the IWAE estimates "
        "themselves are much less noisy). No mean-field Gaussian configuration comes within "
        "the target: a diagonal proposal in 16 latent dimensions stays behind NUTS's "
        "full-covariance one whatever its budget. The full-rank family started from the "
        "posterior-matching guide's full covariance, at a small learning rate, needs few "
        "steps and few samples. A vmapped batch runs until its slowest query stops, so tol "
        "saves steps per query but little batch time here: even in chunks of 100 rows "
        "(chunk_size) one slow query holds its chunk. Compile s is unreliable under load "
        "(the two calls may see different load).",
    ]
    md += [
        "",
        "## Steps saved by tol at equal IWAE (Gaussian VI defaults, cold start)",
        "",
        "Mean steps per query with tol; the batch runs until its longest query stops. "
        "IWAE difference: with tol minus without (paired, same rows and keys).",
        "",
        "| table | rows | tol | steps mean / batch (of 300) | steps saved | IWAE | IWAE, tol "
        "| difference | s | s, tol |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["steps_saved"].items():
        md.append(
            f"| {name} | {r['rows']} | {r['tol']} | {r['mean_steps_tol']:.0f} / "
            f"{r['batch_steps_tol']} | {100 * r['steps_saved']:.0f} % | {r['iwae']:.3f} | "
            f"{r['iwae_tol']:.3f} | {r['iwae_diff']:+.3f} ± {r['iwae_diff_se']:.3f} | "
            f"{r['seconds']:.1f} | {r['seconds_tol']:.1f} |"
        )
    md.append("")
    md.append("Seconds in this table include compilation (one call each).")
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ref", type=int, default=100)
    ap.add_argument("--iwae", type=int, default=1000)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--tables", nargs="*", default=["breast_cancer", "white_wine", "red_wine"])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--tol", type=float, default=0.05)
    ap.add_argument("--out", default="time_to_accuracy")
    ap.add_argument("--nuts-cache", help="also save NUTS's per-query IWAE here (.npy)")
    args = ap.parse_args()
    res = {
        "benchmark": "time_to_accuracy",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        **machine(),
        "iwae_samples": args.iwae,
        "target_gap": TARGET_GAP,
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    configs = {k: CONFIGS[k] for k in args.configs}
    res["time_to_accuracy"] = time_to_accuracy(
        args.n, args.ref, args.iwae, configs, args.nuts_cache
    )
    res["steps_saved"] = steps_saved(args.tables, args.rows, args.iwae, args.tol)
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
