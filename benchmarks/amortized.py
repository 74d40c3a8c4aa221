"""Amortized guides against non-amortized VI: QAVI's Table 1 ordering, speed, refinement.

Three parts, all on the shipped models and their shipped guides (posterior
matching and the re-tuned encoder, ``vaequery.train.GUIDE_RECIPES``); the
decoder-only guide is trained here (its time is reported).

1. **Table** (QAVI protocol): test rows of each table (at most ``--rows``) each
   lose exactly ``floor(D/2)`` features; every backend answers the same queries.
   IWAE ``log p(x_U | x_O)`` (nats per row, standardised units, ``--iwae``
   samples) and NRMSE (minimum over 100 draws, QAVI's definition), mean over
   rows, with QAVI's Table 1 numbers beside (their models have d = 1 and other
   weights: compare orderings, not values).
2. **Speed**: posterior matching answers ``--pm-rows`` breast-cancer queries in
   one forward pass; queries/s next to Gaussian VI's (S = 100, T = 300) on
   1,000 queries, both timed after a compiling call.
3. **Refinement**: mean IWAE against VI steps for Gaussian VI started cold (the
   encoder on the zero-filled row, QAVI's start) and warm (the posterior-matching
   guide); the steps the warm start needs to come within 0.05 nats of the cold
   start's 300-step answer.

Writes ``benchmarks/results/amortized.{json,md}``; asserts nothing about time.
Usage: ``python benchmarks/amortized.py [--tables breast_cancer white_wine red_wine]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import RESULTS, machine
from qavi_table1 import PAPER  # QAVI Table 1 (LL, NRMSE): one copy, in qavi_table1.py

import vaequery as vq

BACKENDS = [
    "mixture",
    "iaf",
    "fullrank",
    "gaussian",
    "feature_vi",
    "posterior_matching",
    "decoder_only",
    "retuned_encoder",
    "fill_zeros",
]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def elbo_of_observed(post, num_samples=500):
    """Mean ELBO of log p(x_O): E_q[log p(x_O, z) - log q(z)] with q the backend's proposal.

    What the non-amortized VI backends maximise (reverse KL); IWAE instead rewards a
    proposal that covers the posterior (forward-KL-like), which is what posterior matching
    trains.
    """
    target = post.query.target()
    backend = post.backend
    keys = jax.random.split(jax.random.key(11), post.num_queries)

    @jax.jit
    def run(state, keys, data):
        def one(s, k, row):
            z, log_q = backend.sample_and_log_prob(s, k, num_samples)
            return jnp.mean(jax.vmap(target.logdensity_fn, (0, None))(z, row) - log_q)

        return jax.vmap(one)(state, keys, data)

    return float(np.mean(run(post.state, keys, target.data)))


def table(names, rows, iwae, backends):
    results = {}
    for name in names:
        vae = vq.pretrained(name)
        test = vq.datasets.load(name, "test")
        X_true = test.X[:rows]
        Xq = vq.datasets.missing.half_features(X_true, key=1)
        if "decoder_only" in backends:
            g = vq.guides.train_decoder_only(vae, progress=False, key=0)
            print(f"{name}: decoder-only guide {g.info['train_seconds']} s")
        per = {}
        for b in backends:
            post, sec = _timed(lambda b=b: vae.given(Xq).infer(b, key=0))
            ll = post.log_likelihood(X_true, num_samples=iwae, key=1, chunk_size=64)
            per[b] = {
                "iwae": float(np.mean(ll)),
                "iwae_se": float(np.std(ll) / np.sqrt(len(ll))),
                "nrmse_min": float(np.mean(post.nrmse(X_true, "min"))),
                "nrmse_mean": float(np.mean(post.nrmse(X_true, "mean"))),
                "elbo_observed": elbo_of_observed(post),
                "seconds": round(sec, 2),
            }
            print(
                f"{name:14s} {b:20s} IWAE {per[b]['iwae']:8.3f}  NRMSE {per[b]['nrmse_min']:.3f}"
                f"  ELBO(x_O) {per[b]['elbo_observed']:8.3f}"
                f"  ({sec:.1f} s)"
            )
        guides = {k: g.info.get("train_seconds") for k, g in vae.guides.items()}
        results[name] = {
            "rows": int(len(X_true)),
            "features": vae.num_features,
            "latent_dim": vae.latent_dim,
            "backends": per,
            "guide_train_seconds": guides,
        }
    return results


def speed(pm_rows, vi_rows):
    vae = vq.pretrained("breast_cancer")
    rng = np.random.default_rng(0)
    X = vq.datasets.load("breast_cancer", "all").X
    X = X[rng.integers(0, len(X), pm_rows)]
    Xq = vq.datasets.missing.half_features(X, key=2).X
    q = vae.given(Xq)
    q.infer("posterior_matching", key=0)
    _, t_pm = _timed(lambda: q.infer("posterior_matching", key=1))
    qv = vae.given(Xq[:vi_rows])
    qv.infer("gaussian", key=0)
    _, t_vi = _timed(lambda: qv.infer("gaussian", key=1))
    out = {
        "posterior_matching": {
            "queries": pm_rows,
            "seconds": t_pm,
            "queries_per_second": pm_rows / t_pm,
        },
        "gaussian": {"queries": vi_rows, "seconds": t_vi, "queries_per_second": vi_rows / t_vi},
    }
    out["ratio_pm_over_gaussian"] = (
        out["posterior_matching"]["queries_per_second"] / out["gaussian"]["queries_per_second"]
    )
    print(json.dumps(out))
    return out


def refinement(name, rows, iwae, steps):
    vae = vq.pretrained(name)
    X_true = vq.datasets.load(name, "test").X[:rows]
    Xq = vq.datasets.missing.half_features(X_true, key=1)
    q = vae.given(Xq)
    pm = float(
        np.mean(
            q.infer("posterior_matching", key=0).log_likelihood(X_true, num_samples=iwae, key=1)
        )
    )
    curve = {"cold": {}, "warm": {}}
    for T in steps:
        for label, init in [("cold", "auto"), ("warm", "posterior_matching")]:
            post = q.infer("gaussian", init=init, num_steps=T, key=0)
            curve[label][T] = float(np.mean(post.log_likelihood(X_true, num_samples=iwae, key=1)))
        print(f"{name} T={T:4d} cold {curve['cold'][T]:.3f} warm {curve['warm'][T]:.3f}")
    ref = curve["cold"][max(steps)]
    reached = [T for T in steps if curve["warm"][T] >= ref - 0.05]
    return {
        "posterior_matching_alone": pm,
        "curve": curve,
        "cold_reference": ref,
        "warm_steps_to_within_0.05": min(reached) if reached else None,
        "cold_steps": max(steps),
    }


def markdown(res):
    md = ["# Amortized guides (QAVI protocol: floor(D/2) features hidden per test row)", ""]
    md.append(
        "ELBO of x_O: E_q[log p(x_O, z) - log q(z)] with 500 draws of each backend's q "
        "(for feature_vi its Gaussian proposal), what the non-amortized backends maximise; "
        "IWAE rewards instead a q that covers the posterior, which posterior matching's "
        "forward-KL objective trains."
    )
    md.append("")
    md.append(
        f"Machine: {res['machine']}, {res['cpu_count']} CPUs, device {res['device']}. "
        f"IWAE with S = {res['iwae_samples']} (nats per row, standardised units); NRMSE = "
        "minimum over 100 draws (QAVI). Paper = QAVI Table 1 (d = 1 models, S = 10,000)."
    )
    md.append("")
    for name, r in res["table"].items():
        md.append(f"## {name} ({r['rows']} rows, D = {r['features']}, d = {r['latent_dim']})")
        md.append("")
        md.append(
            "| backend | IWAE (± se) | ELBO of x_O | NRMSE min | NRMSE of mean | seconds "
            "| paper LL | paper NRMSE |"
        )
        md.append("|---|---|---|---|---|---|---|---|")
        for b, v in sorted(r["backends"].items(), key=lambda kv: -kv[1]["iwae"]):
            p = PAPER.get(name, {}).get(b, ("—", "—"))
            md.append(
                f"| {b} | {v['iwae']:.3f} ± {v['iwae_se']:.3f} | {v['elbo_observed']:.3f} | "
                f"{v['nrmse_min']:.3f} | "
                f"{v['nrmse_mean']:.3f} | {v['seconds']} | {p[0]} | {p[1]} |"
            )
        md.append("")
        md.append(
            "Guide training (s): "
            + ", ".join(f"{k} {v}" for k, v in r["guide_train_seconds"].items())
        )
        md.append("")
    s = res["speed"]
    md += [
        "## Speed (breast cancer)",
        "",
        "| backend | queries | seconds | queries/s |",
        "|---|---|---|---|",
    ]
    for b in ["posterior_matching", "gaussian"]:
        md.append(
            f"| {b} | {s[b]['queries']} | {s[b]['seconds']:.3f} | "
            f"{s[b]['queries_per_second']:.1f} |"
        )
    md += ["", f"Posterior matching / Gaussian VI: {s['ratio_pm_over_gaussian']:.0f}x.", ""]
    for name, rf in res["refinement"].items():
        md += [
            f"## Refinement ({name}): mean IWAE against Gaussian VI steps",
            "",
            f"Posterior matching alone: {rf['posterior_matching_alone']:.3f}. Cold start "
            f"(encoder, QAVI) at {rf['cold_steps']} steps: {rf['cold_reference']:.3f}. "
            f"Warm start (posterior matching) within 0.05 nats of it after "
            f"{rf['warm_steps_to_within_0.05']} steps.",
            "",
            "| steps | cold (encoder) | warm (posterior matching) |",
            "|---|---|---|",
        ]
        for T in rf["curve"]["cold"]:
            md.append(f"| {T} | {rf['curve']['cold'][T]:.3f} | {rf['curve']['warm'][T]:.3f} |")
        md.append("")
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=["breast_cancer", "white_wine", "red_wine"])
    ap.add_argument("--backends", nargs="+", default=BACKENDS)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--iwae", type=int, default=2000)
    ap.add_argument("--pm-rows", type=int, default=10_000)
    ap.add_argument("--vi-rows", type=int, default=1000)
    ap.add_argument("--steps", nargs="+", type=int, default=[10, 20, 30, 40, 60, 100, 150, 300])
    ap.add_argument("--out", default="amortized")
    args = ap.parse_args()
    res = {
        "benchmark": "amortized",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        **machine(),
        "iwae_samples": args.iwae,
        "vaequery_version": vq.__version__,
    }
    res["table"] = table(args.tables, args.rows, args.iwae, args.backends)
    res["speed"] = speed(args.pm_rows, args.vi_rows)
    res["refinement"] = {
        n: refinement(n, args.rows, args.iwae, args.steps) for n in args.tables[:2]
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
