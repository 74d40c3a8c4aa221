"""Queries/s of the "gaussian" backend against a plain-JAX floor and a per-query loop.

Three ways to answer the same N breast-cancer-shaped queries with mean-field VI
(S = 100 samples, T = 300 Adam steps):

* ``vaequery``  -- ``vae.given(X).infer("gaussian")``: one compiled program.
* ``plain_jax`` -- the same maths written by hand in JAX (vmap + scan + optax),
  no vaequery, no NumPyro: the floor DESIGN.md §6 compares against.
* ``per_query_numpyro`` -- what a hand-written script does: NumPyro ``SVI.run``
  with ``AutoNormal`` once per query (a Python loop), on a few queries.

Writes ``benchmarks/results/gaussian_throughput.{json,md}``; asserts nothing
about time. Usage: ``python benchmarks/gaussian_throughput.py [--n 1000]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import optax
from _common import RESULTS, breast_cancer_model, random_queries


def _timed(fn, repeats=1):
    fn()  # compile / warm up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def plain_jax_runner(vae, X, S=100, T=300, lr=0.3):
    """Mean-field VI written directly in JAX (the floor)."""
    dec = vae.decode_fn
    lik = vae.likelihood
    q = vae.given(X)
    x = jnp.asarray(q.x)
    m = jnp.asarray(q.observed_mask)
    d = vae.latent_dim
    opt = optax.adam(optax.cosine_decay_schedule(lr, T, alpha=0.01))

    def loss(p, key, xi, mi):
        eps = jax.random.normal(key, (S, d))
        z = p["loc"] + jnp.exp(p["log_scale"]) * eps
        ll = lik.log_prob(xi, dec(z), mi)
        lp = -0.5 * jnp.sum(z**2, -1)
        return -(jnp.mean(ll + lp) + jnp.sum(p["log_scale"]))

    def one(key, xi, mi):
        p = {"loc": jnp.zeros(d), "log_scale": jnp.zeros(d)}

        def step(c, k):
            p, s = c
            v, g = jax.value_and_grad(loss)(p, k, xi, mi)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), v

        (p, _), losses = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(key, T))
        return p, losses

    f = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.key(0), X.shape[0])
    return lambda: jax.block_until_ready(f(keys, x, m))


def per_query_numpyro(vae, X, k, S=100, T=300):
    """NumPyro SVI with AutoNormal, one query at a time (a Python loop)."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    def run():
        for i in range(k):
            model, kw = vae.given(X[i]).numpyrobreast_cancer_model()
            svi = SVI(model, AutoNormal(model), optax.adam(0.1), Trace_ELBO(num_particles=S))
            svi.run(jax.random.key(i), T, progress_bar=False, **kw)

    t = time.perf_counter()
    run()
    return (time.perf_counter() - t) / k


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of queries")
    ap.add_argument("--loop-queries", type=int, default=3)
    args = ap.parse_args()
    vae, source = breast_cancer_model()
    X = random_queries(vae, args.n)
    q = vae.given(X)

    t_vq = _timed(lambda: q.infer("gaussian", key=0))
    t_floor = _timed(plain_jax_runner(vae, X))
    t_loop = per_query_numpyro(vae, X, args.loop_queries)
    rows = {
        "vaequery": args.n / t_vq,
        "plain_jax": args.n / t_floor,
        "per_query_numpyro": 1.0 / t_loop,
    }
    out = {
        "benchmark": "gaussian_throughput",
        "model": source,
        "num_queries": args.n,
        "S": 100,
        "T": 300,
        "queries_per_second": rows,
        "ratio_vaequery_to_plain_jax": rows["vaequery"] / rows["plain_jax"],
        "speedup_vs_per_query_numpyro": rows["vaequery"] / rows["per_query_numpyro"],
        "device": jax.devices()[0].device_kind,
        "cpu_count": __import__("os").cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gaussian_throughput.json").write_text(json.dumps(out, indent=2))
    md = [
        f"# Gaussian VI throughput ({args.n} queries, S=100, T=300, {out['device']})",
        "",
        f"Model: {source}.",
        "",
        "| runner | queries/s | ratio to plain JAX |",
        "|---|---:|---:|",
    ]
    for k, v in rows.items():
        md.append(f"| {k} | {v:,.2f} | {v / rows['plain_jax']:.3f} |")
    (RESULTS / "gaussian_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
