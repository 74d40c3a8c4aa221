"""Bulk ESS per second of batched MCMC: ChEES-HMC in lock-step against NUTS.

The same ``N`` breast-cancer queries (D = 30 features, d = 16 latents, about
half the features observed; :mod:`_common`) are answered, in one process, by

* ``chees lax.map over queries`` -- ``vae.given(X).infer("chees",
  batching="map")`` (the CPU default): one program, queries one after
  another, the chains of each in lock-step;
* ``chees batched (vmap)`` -- ``batching="vmap"`` (the default elsewhere): every
  chain of every query in lock-step;
* ``nuts one at a time`` -- a Python loop of 1-row ``infer("nuts")`` calls
  (compiled once, then reused) over the first ``--loop-queries`` queries;
* ``nuts lax.map over queries`` -- ``infer("nuts", batching="map")`` (the
  CPU default): one program, queries one after another, chains vmapped;
* ``nuts batched (vmap)`` -- ``infer("nuts", batching="vmap")`` (the default
  elsewhere, and before ``batching`` existed).

Each backend runs with its own defaults (NUTS: 4 chains, 500 warmup, 250 draws
per chain; ChEES: 8 chains, 300 warmup, 500 kept draws per chain, one every 4
transitions).

Bulk ESS of a query is the minimum over the latent dimensions of ArviZ's bulk
ESS of ``z`` (all chains); a runner's *bulk ESS/s* is that summed over the
queries it answered, divided by its wall time. "Without compile" times a
second call of the already compiled program; "with compile" times the first
call (tracing, compilation and one run). R-hat is the maximum over queries
and latent dimensions of the rank-normalised split R-hat.

Accuracy: for every query and latent, the difference between the ChEES and the
NUTS (``lax.map``) posterior means in units of their combined Monte-Carlo
standard error; a correct pair gives |z| mostly below 3.

Writes ``benchmarks/results/batched_mcmc.{json,md}``; asserts nothing about
time. Usage: ``python benchmarks/batched_mcmc.py [--n 32] [--loop-queries 8]``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from _common import RESULTS, breast_cancer_model, machine, random_queries

warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _summary(posts, t_run, t_first, lockstep_axes):
    """Figures of one runner from its posteriors (one or several) and times.

    ``lockstep_axes`` are the axes of ``num_integration_steps [N, C, S]`` whose
    trajectories run together: ``(0, 1)`` vmapped, ``(1,)`` one query at a time.
    """
    diags = [p.diagnose(warn=False, num_samples=64) for p in posts]
    ess = np.concatenate([d["ess_bulk"].to_numpy() for d in diags])
    rhat = np.concatenate([d["r_hat"].to_numpy() for d in diags])
    steps = np.concatenate([p.info["num_integration_steps"] for p in posts])  # [N, C, S]
    return {
        "queries": int(ess.size),
        "seconds": t_run,
        "seconds_with_compile": t_first,
        "bulk_ess_sum": float(ess.sum()),
        "min_bulk_ess": float(ess.min()),
        "bulk_ess_per_second": float(ess.sum() / t_run),
        "bulk_ess_per_second_with_compile": float(ess.sum() / t_first),
        "max_r_hat": float(rhat.max()),
        "median_r_hat": float(np.median(rhat)),
        "divergences": int(sum(p.info["diverging"].sum() for p in posts)),
        "gradients_per_chain": float(steps.sum(-1).mean()),
        # a vmapped transition costs the longest trajectory of those that run
        # together; efficiency = useful / paid leapfrog steps
        "lockstep_efficiency": float(steps.mean() / steps.max(lockstep_axes).mean()),
    }


def batched(vae, X, backend, **hp):
    q = vae.given(X)
    t_first, _ = _timed(lambda: q.infer(backend, key=0, **hp))
    t_run, post = _timed(lambda: q.infer(backend, key=1, **hp))
    axes = (0, 1) if hp["batching"] == "vmap" else (1,)
    return _summary([post], t_run, t_first, axes), post


def one_at_a_time(vae, X, k, backend, **hp):
    t_first, _ = _timed(lambda: vae.given(X[0]).infer(backend, key=0, **hp))
    posts = []
    t = time.perf_counter()
    for i in range(k):
        posts.append(vae.given(X[i]).infer(backend, key=1 + i, **hp))
    t_run = time.perf_counter() - t
    # with compile: the first 1-row call's compilation added to the loop
    per_call = t_run / k
    return _summary(posts, t_run, t_run + (t_first - per_call), (1,)), posts


def mean_zscores(a, b):
    """|difference of posterior means| in combined MCSE units, ``[N, d]``."""
    import arviz as az

    def mean_se(post):
        z = post.z  # [N, C, S, d]
        m = z.mean((1, 2))
        se = np.empty_like(m)
        for i in range(z.shape[0]):
            se[i] = az.mcse(az.convert_to_dataset(z[i]), method="mean")["x"].values
        return m, se

    ma, sa = mean_se(a)
    mb, sb = mean_se(b)
    return np.abs(ma - mb) / np.hypot(sa, sb)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="queries in the batch")
    ap.add_argument("--loop-queries", type=int, default=8, help="queries run one at a time")
    ap.add_argument("--no-vmap", action="store_true", help="skip the vmapped runners")
    args = ap.parse_args()
    vae, source = breast_cancer_model()
    X = random_queries(vae, args.n)
    k = min(args.loop_queries, args.n)

    runners = {}
    runners["chees lax.map over queries"], chees = batched(vae, X, "chees", batching="map")
    if not args.no_vmap:
        runners["chees batched (vmap)"], _ = batched(vae, X, "chees", batching="vmap")
    runners["nuts one at a time"], _ = one_at_a_time(vae, X, k, "nuts")
    runners["nuts lax.map over queries"], nuts = batched(vae, X, "nuts", batching="map")
    if not args.no_vmap:
        runners["nuts batched (vmap)"], _ = batched(vae, X, "nuts", batching="vmap")

    base = runners["nuts one at a time"]
    for r in runners.values():
        r["relative_to_nuts_one_at_a_time"] = r["bulk_ess_per_second"] / base["bulk_ess_per_second"]
        r["relative_to_nuts_one_at_a_time_with_compile"] = (
            r["bulk_ess_per_second_with_compile"] / base["bulk_ess_per_second_with_compile"]
        )
    zs = mean_zscores(chees, nuts)
    out = {
        "benchmark": "batched_mcmc",
        "model": source,
        "num_queries": args.n,
        "loop_queries": k,
        "settings": {
            "chees": "defaults: 8 chains, 300 warmup, 500 draws/chain thinned by 4 "
            "(2000 transitions), diagonal mass",
            "nuts": "defaults: 4 chains, 500 warmup, 250 draws/chain, diagonal mass",
        },
        "runners": runners,
        "chees_vs_nuts_mean_zscore": {
            "max": float(zs.max()),
            "rms": float(np.sqrt(np.mean(zs**2))),
            "fraction_above_3": float(np.mean(zs > 3)),
        },
        **machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batched_mcmc.json").write_text(json.dumps(out, indent=2))
    md = [
        f"# Batched MCMC: bulk ESS per second ({args.n} queries, {out['device']}, "
        f"{out['cpu_count']} cores)",
        "",
        f"Model: {source}, about half the 30 features observed. Each backend at its defaults: "
        f"ChEES {out['settings']['chees'][10:]}; NUTS {out['settings']['nuts'][10:]}. "
        f"NUTS one at a time answers the first {k} queries, the others all {args.n}.",
        "",
        "| runner | bulk ESS/s | x NUTS one at a time | with compile: ESS/s | x | "
        "max R-hat | min bulk ESS | gradients per chain | lock-step efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runners.items():
        md.append(
            f"| {name} | {r['bulk_ess_per_second']:,.0f} | "
            f"{r['relative_to_nuts_one_at_a_time']:.2f} | "
            f"{r['bulk_ess_per_second_with_compile']:,.0f} | "
            f"{r['relative_to_nuts_one_at_a_time_with_compile']:.2f} | "
            f"{r['max_r_hat']:.4f} | {r['min_bulk_ess']:.0f} | "
            f"{r['gradients_per_chain']:,.0f} | {r['lockstep_efficiency']:.2f} |"
        )
    z = out["chees_vs_nuts_mean_zscore"]
    md += [
        "",
        "Bulk ESS of a query: the minimum over its 16 latents (all chains); ESS/s sums it "
        "over the queries a runner answered and divides by wall time (without compile: a "
        "second call of the compiled program; with compile: the first call). Gradients "
        "per chain: leapfrog steps after warmup. Lock-step efficiency: mean leapfrog steps "
        "per transition over the mean of the longest trajectory among those that run "
        "together (all queries and chains when vmapped, one query's chains otherwise).",
        "",
        f"Agreement of ChEES and NUTS posterior means (all queries and latents, in combined "
        f"MCSE units): max {z['max']:.2f}, RMS {z['rms']:.2f}, "
        f"{100 * z['fraction_above_3']:.1f} % above 3.",
    ]
    (RESULTS / "batched_mcmc.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
