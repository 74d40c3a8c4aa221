"""Queries/s of the "nuts" backend: one batched program against one query at a time.

The same ``N`` breast-cancer-shaped queries (D = 30 features, d = 16 latents,
a 16-128-128-60 MLP decoder, about half the features observed) are answered by

* ``nuts batched (vmap)`` -- ``vae.given(X).infer("nuts")``: every query and
  chain in one compiled program (vmap over queries, vmap over chains,
  ``lax.scan`` over draws);
* ``nuts lax.map over queries, one program`` -- the backend's ``run_one``
  mapped sequentially over queries with ``lax.map`` inside one jit (chains still
  vmapped): one program, but no lock-step across queries;
* ``nuts one at a time`` -- a Python loop calling ``vae.given(X[i]).infer("nuts")``
  on 1-row queries (compiled once, then reused: this measures the loop, not
  compilation);
* ``nuts batched (vmap), dense_mass=True`` -- optional (``--dense``): a dense
  adapted mass matrix, which shortens and equalises trajectories;
* ``hmc ...`` -- optional (``--hmc``): the same for static-path HMC, whose cost
  per transition hardly varies across queries;
* ``numpyro MCMC(NUTS) loop`` -- optional (``--numpyro``): what a hand-written
  script does, ``numpyro.infer.MCMC(NUTS(model), chain_method="vectorized")``
  per query, on 2 queries.

All runners use the same settings (default: the backends' defaults, 4 chains
from prior draws, 500 window-adaptation steps, 250 draws per chain). In the
vmapped program all ``N x chains`` NUTS trajectories advance in lock-step, so
each transition costs as much as the longest trajectory in the batch; the
table reports the mean and maximum number of leapfrog steps to show this.

Writes ``benchmarks/results/mcmc_throughput.{json,md}``; asserts nothing about
time. Usage: ``python benchmarks/mcmc_throughput.py [--n 32] [--loop-queries 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import equinox as eqx
import jax
from _common import RESULTS, breast_cancer_model, random_queries

import vaequery as vq


def batched(vae, X, backend, hp):
    q = vae.given(X)
    q.infer(backend, key=0, **hp)  # compile
    t = time.perf_counter()
    post = q.infer(backend, key=1, **hp)
    return time.perf_counter() - t, post


def sequential_in_one_program(vae, X, backend, hp):
    """``lax.map`` over queries (no vmap) inside one jit: no lock-step across queries."""
    hp = dict(hp)
    num_draws = hp.pop("num_draws")
    b = vq.backends.get(backend, **hp)
    target = vae.given(X).target()

    @eqx.filter_jit
    def run(b, target, keys):
        def one(a):
            return b.run_one(a[0], target, a[1], num_draws).z

        return jax.lax.map(one, (keys, target.data))

    keys = jax.random.split(jax.random.key(0), X.shape[0])
    jax.block_until_ready(run(b, target, keys))  # compile
    t = time.perf_counter()
    jax.block_until_ready(run(b, target, jax.random.split(jax.random.key(1), X.shape[0])))
    return time.perf_counter() - t


def one_at_a_time(vae, X, k, backend, hp):
    vae.given(X[0]).infer(backend, key=0, **hp)  # compile the 1-row program once
    t = time.perf_counter()
    for i in range(k):
        vae.given(X[i]).infer(backend, key=i, **hp)
    return (time.perf_counter() - t) / k


def numpyro_loop(vae, X, k, num_warmup, num_draws, num_chains):
    from numpyro.infer import MCMC, NUTS

    def run(i):
        model, kw = vae.given(X[i]).numpyrobreast_cancer_model()
        mcmc = MCMC(
            NUTS(model),
            num_warmup=num_warmup,
            num_samples=num_draws,
            num_chains=num_chains,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.key(i), **kw)
        jax.block_until_ready(mcmc.get_samples())

    run(0)  # compile
    t = time.perf_counter()
    for i in range(k):
        run(i)
    return (time.perf_counter() - t) / k


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="queries in the batch")
    ap.add_argument("--loop-queries", type=int, default=8, help="queries timed one at a time")
    ap.add_argument("--num-warmup", type=int, default=500)
    ap.add_argument("--num-draws", type=int, default=250)
    ap.add_argument("--num-chains", type=int, default=4)
    ap.add_argument("--numpyro", action="store_true", help="also time a NumPyro MCMC loop")
    ap.add_argument("--hmc", action="store_true", help="also time the 'hmc' backend")
    ap.add_argument("--dense", action="store_true", help="also time NUTS with dense_mass=True")
    ap.add_argument("--tag", default="", help="suffix for the result files")
    args = ap.parse_args()
    vae, source = breast_cancer_model()
    X = random_queries(vae, args.n)
    hp = dict(num_warmup=args.num_warmup, num_draws=args.num_draws, num_chains=args.num_chains)

    k = min(args.loop_queries, args.n)
    # "auto" batching runs queries one after another on CPU; this runner is the vmap
    hp_vmap = {**hp, "batching": "vmap"}
    t_batch, post = batched(vae, X, "nuts", hp_vmap)
    diag = post.diagnose(warn=False)
    rows = {"nuts batched (vmap)": args.n / t_batch}
    if args.dense:
        t_dense, post_dense = batched(vae, X, "nuts", {**hp_vmap, "dense_mass": True})
        rows["nuts batched (vmap), dense_mass=True"] = args.n / t_dense
    t_seq = sequential_in_one_program(vae, X, "nuts", hp)
    rows["nuts lax.map over queries, one program"] = args.n / t_seq
    rows["nuts one at a time"] = 1.0 / one_at_a_time(vae, X, k, "nuts", hp)
    if args.hmc:
        t_hmc, post_hmc = batched(vae, X, "hmc", {**hp, "batching": "vmap"})
        rows["hmc batched (vmap)"] = args.n / t_hmc
        rows["hmc one at a time"] = 1.0 / one_at_a_time(vae, X, k, "hmc", hp)
    if args.numpyro:
        t_np = numpyro_loop(
            vae, X, min(2, args.n), args.num_warmup, args.num_draws, args.num_chains
        )
        rows["numpyro MCMC(NUTS) loop"] = 1.0 / t_np
    base = rows["nuts one at a time"]
    steps = post.info["num_integration_steps"]  # [N, chains, draws]
    out = {
        "benchmark": "mcmc_throughput",
        "backend": "nuts",
        "model": source,
        "num_queries": args.n,
        "loop_queries": k,
        **hp,
        "queries_per_second": rows,
        "speedup_batched_vs_one_at_a_time": rows["nuts batched (vmap)"] / base,
        "mean_leapfrog_steps": float(steps.mean()),
        "max_leapfrog_steps": int(steps.max()),
        # what a vmapped transition costs: the longest trajectory over all
        # queries and chains (batched) or over one query's chains (loop)
        "lockstep_leapfrog_steps_batched": float(steps.max((0, 1)).mean()),
        "lockstep_leapfrog_steps_per_query": float(steps.max(1).mean()),
        "divergences": int(post.info["diverging"].sum()),
        "max_r_hat": float(diag["r_hat"].max()),
        "median_r_hat": float(diag["r_hat"].median()),
        "min_ess_bulk": float(diag["ess_bulk"].min()),
        "ess_bulk_per_second_batched": float(diag["ess_bulk"].sum() / t_batch),
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
    }
    if args.dense:
        dd = post_dense.diagnose(warn=False)
        st = post_dense.info["num_integration_steps"]
        out["dense_mass"] = {
            "mean_leapfrog_steps": float(st.mean()),
            "lockstep_leapfrog_steps_batched": float(st.max((0, 1)).mean()),
            "max_r_hat": float(dd["r_hat"].max()),
            "min_ess_bulk": float(dd["ess_bulk"].min()),
            "ess_bulk_per_second_batched": float(dd["ess_bulk"].sum() / t_dense),
        }
    RESULTS.mkdir(exist_ok=True)
    name = "mcmc_throughput" + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    md = [
        f"# NUTS throughput ({args.n} queries, {args.num_chains} chains, "
        f"{args.num_warmup} warmup + {args.num_draws} draws per chain, {out['device']})",
        "",
        f"Model: {source}, about half the 30 features observed.",
        "",
        "| runner | queries/s | relative to NUTS one at a time |",
        "|---|---:|---:|",
    ]
    for name_, v in rows.items():
        md.append(f"| {name_} | {v:,.3f} | {v / base:.2f} |")
    md += [
        "",
        f"NUTS leapfrog steps per transition (draws): mean {out['mean_leapfrog_steps']:.1f}, "
        f"max {out['max_leapfrog_steps']}. Under vmap every transition waits for the "
        "longest trajectory: the vmapped batch pays "
        f"{out['lockstep_leapfrog_steps_batched']:.1f} steps per transition (max over "
        "all queries and chains), a 1-row query "
        f"{out['lockstep_leapfrog_steps_per_query']:.1f} (max over its chains). "
        f"Divergences: {out['divergences']}. R-hat: median {out['median_r_hat']:.3f}, "
        f"max {out['max_r_hat']:.3f}; min bulk ESS {out['min_ess_bulk']:.0f}.",
    ]
    md.append(
        f"\nBulk ESS per second (batched, all queries): diagonal mass "
        f"{out['ess_bulk_per_second_batched']:.0f}"
        + (
            f"; dense mass {out['dense_mass']['ess_bulk_per_second_batched']:.0f} "
            f"(lock-step {out['dense_mass']['lockstep_leapfrog_steps_batched']:.1f} steps, "
            f"max R-hat {out['dense_mass']['max_r_hat']:.3f}, "
            f"min bulk ESS {out['dense_mass']['min_ess_bulk']:.0f})."
            if args.dense
            else "."
        )
    )
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
