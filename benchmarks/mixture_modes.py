"""Accuracy of the expressive VI families on exact oracles (issue: every mode found,
no over-dispersion, flows as good as the Gaussians they contain).

Two oracle families, exact answers by quadrature or in closed form:

* multimodal 2-D posteriors (:meth:`vaequery.testing.GridOracle2D.multimodal`,
  sigma 0.1): two mirror modes (x0 = z1^2), kinked modes (2|z1|), a hyperbola
  (z1 z2), a ring (0.3 (z1^2 + z2^2)), four modes (z1^2, z2^2), unequal modes
  (z1^2 plus 0.15 z1), and a thin ring (z1^2 + z2^2) on its own decoder;
  ``--reps`` x 12 queries each from random latents (each replica is fitted
  with its own random start). Two held-out shapes, not used to choose the
  defaults: three modes on a line with unequal masses (x0 = z1 (z1 - 1.5)
  (z1 + 1.2)) and a rotated four-mode pattern (u^2, v^2 with u, v = (z1 +- z2)
  / sqrt 2; mode masses are those of the four rotated quadrants). Reported per
  shape: the largest error of a mode's mass share (half-plane, quadrant, or the
  three intervals z1 < -0.6, -0.6 < z1 < 0.75, z1 > 0.75), mean and max over
  queries and the number of queries above 0.1; KL(q || p) from 4,000 draws; the
  IWAE gap of log p(x_O) (4,000 draws), mean and max; the error of
  post.log_likelihood (log p(x_U | x_O), 2,000 draws) against the grid.
* linear-Gaussian posteriors (half of the features observed): d = 3, D = 8,
  sigma 0.3 (4 random models x 16 queries), d = 4, D = 10, sigma 0.2 and a
  narrow d = 3, D = 8, sigma 0.05 (2 models x 24 queries each): the largest
  ratio of a latent coordinate's fitted variance to the exact one, the largest
  correlation error (both from 2,000 draws) and the largest whitened mean error.

"before" is the mixture as QAVI runs it (implicit-reparameterisation + score
estimator, weights frozen 200 steps, learning rates halved every 60 steps, no
weight refit, Adam b2 0.999) and the IAF with its base fixed at the start and a
randomly initialised flow. "uniform start" is the stratified mixture with its
previous start (``init_design="uniform"``); "re-init at the start" the mixture
before births (``reinit_design="start"``: collapsed components restart from the
start's design instead of where the target outweighs the mixture). "fullrank
(before)" is ``fullrank`` with optax's Adam b2 = 0.999 and the cosine decay to 1 %.
``--runs`` runs a subset of the labelled runs and merges them into an existing
results/mixture_modes.json (the others' rows are kept, with the date they were
measured). Writes results/mixture_modes.{json,md}.

    python benchmarks/mixture_modes.py [--reps 3] [--runs mixture fullrank]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import RESULTS

from vaequery.backends._base import register
from vaequery.backends.iaf import IAF
from vaequery.testing import GridOracle2D, LinearGaussian, quadrant

N = 12
M = 4000
REPS = 1

MIXTURE_BEFORE = dict(
    estimator="implicit",
    freeze_weights=200,
    halve_every=60,
    refit_samples=0,
    adam_b2=0.999,
)


@register("iaf_fixed_base")
class _IAFFixedBase(IAF):
    """The IAF as QAVI runs it: base fixed at the start, random flow initialisation."""

    base = "fixed"


IAF_BEFORE = dict(identity_init=False, base_learning_rate=None)


def _thin_ring():
    def decode(z):
        z = jnp.asarray(z)
        return jnp.stack([z[..., 0] ** 2 + z[..., 1] ** 2, z[..., 0], z[..., 1]], -1)

    return GridOracle2D(decode, 3, 0.1)


def _three_on_a_line():
    # held out: x0 = z1 (z1 - 1.5)(z1 + 1.2) has up to three roots in z1, of unequal mass
    def decode(z):
        z = jnp.asarray(z)
        z1, z2 = z[..., 0], z[..., 1]
        return jnp.stack([z1 * (z1 - 1.5) * (z1 + 1.2), z2 + 0.3 * z1, z1, z2], -1)

    return GridOracle2D(decode, 4, 0.1, lim=4.0, num_points=801)


def _rotated_four():
    # held out: four modes, one per rotated quadrant (sign of z1 + z2, sign of z1 - z2)
    def decode(z):
        z = jnp.asarray(z)
        u, v = (z[..., 0] + z[..., 1]) / np.sqrt(2), (z[..., 0] - z[..., 1]) / np.sqrt(2)
        return jnp.stack([u**2, v**2, z[..., 0], z[..., 1]], -1)

    return GridOracle2D(decode, 4, 0.1, lim=5.0, num_points=801)


THREE_EDGES = (-np.inf, -0.6, 0.75, np.inf)


def _mode_labels(name, z):
    """Mode index of points ``z [..., 2]`` for a shape, or None for half-planes."""
    z = np.asarray(z)
    if name == "four":
        return quadrant(z), 4
    if name == "rotated four":
        return 2 * (z[..., 0] + z[..., 1] > 0) + (z[..., 0] - z[..., 1] > 0), 4
    if name == "three on a line":
        return np.digitize(z[..., 0], THREE_EDGES[1:-1]), 3
    return (z[..., 0] > 0).astype(int), 2


def mass_error(name, oracle, z, xt, obs):
    """Largest error of a mode's mass share per query (exact shares by quadrature)."""
    w = oracle.posterior_weights(xt, obs)
    grid_lab, k = _mode_labels(name, oracle.grid)
    lab, _ = _mode_labels(name, z)
    exact = np.stack([w[:, grid_lab == j].sum(-1) for j in range(k)], -1)
    fitted = np.stack([(lab == j).mean(-1) for j in range(k)], -1)
    return np.abs(fitted - exact).max(-1)


def _queries(oracle, observed_idx, seed):
    rng = np.random.default_rng(seed)
    zt = rng.standard_normal((N, 2)) * 0.8 + np.sign(rng.standard_normal((N, 2))) * 0.5
    xt = oracle._decode(zt) + oracle.sigma * rng.standard_normal((N, oracle.num_features))
    obs = np.zeros_like(xt, bool)
    obs[:, list(observed_idx)] = True
    return xt, obs


def multimodal(backend, opts):
    out = {}
    fam = GridOracle2D.multimodal()
    cases = [(name, fam, idx) for name, idx in fam.MULTIMODAL_QUERIES.items()]
    cases.append(("thin ring", _thin_ring(), (0,)))
    cases.append(("three on a line", _three_on_a_line(), (0,)))
    cases.append(("rotated four", _rotated_four(), (0, 1)))
    for i, (name, o, idx) in enumerate(cases):
        xt, obs = _queries(o, idx, seed=i)
        xt, obs = np.concatenate([xt] * REPS), np.concatenate([obs] * REPS)
        n = len(xt)
        post = o.vae().given(np.where(obs, xt, np.nan)).infer(backend, key=1, **opts)
        draw = jax.jit(jax.vmap(lambda s, k, b=post.backend: b.sample_and_log_prob(s, k, M)))
        z, log_q = map(np.asarray, draw(post.state, jax.random.split(jax.random.key(5), n)))
        err = mass_error(name, o, z, xt, obs)
        kl, _ = o.reverse_kl(z, log_q, xt, obs)
        log_px = o.log_marginal(xt, obs)
        lw = o.log_posterior(z, xt, obs) + log_px[:, None] - log_q
        iwae = np.asarray(jax.scipy.special.logsumexp(lw, -1)) - np.log(M)
        ll = post.log_likelihood(xt, num_samples=2000, key=3)
        out[name] = dict(
            queries=n,
            mass_error_mean=float(err.mean()),
            mass_error_max=float(err.max()),
            misses=int((err > 0.1).sum()),
            kl=float(kl.mean()),
            iwae_gap_x_O=float(np.mean(log_px - iwae)),
            iwae_gap_x_O_max=float(np.max(log_px - iwae)),
            loglik_error_x_U=float(np.mean(o.log_likelihood(xt, obs, ~obs) - ll)),
        )
    return out


LINEAR = {
    "d3 D8 sigma 0.3": (3, 8, 0.3, 4, 16),
    "d4 D10 sigma 0.2": (4, 10, 0.2, 2, 24),
    "d3 D8 sigma 0.05": (3, 8, 0.05, 2, 24),
}


def linear(backend, opts):
    out = {}
    for label, (d, D, sigma, num_models, num_queries) in LINEAR.items():
        ratio, corr, mean_err = [], [], []
        for seed in range(num_models):
            lin = LinearGaussian.random(seed, num_features=D, latent_dim=d, sigma=sigma)
            _, x = lin.sample(seed + 100, num_queries)
            rng = np.random.default_rng(seed + 7)
            obs = np.zeros(x.shape, bool)
            for r in range(len(x)):
                obs[r, rng.permutation(D)[: D // 2]] = True
            post = lin.vae().given(np.where(obs, x, np.nan)).infer(backend, key=seed, **opts)
            draw = jax.jit(jax.vmap(lambda s, k, b=post.backend: b.sample_and_log_prob(s, k, 2000)))
            keys = jax.random.split(jax.random.key(11), len(x))
            z = np.asarray(draw(post.state, keys)[0], float)
            mu, P = lin.posterior(x, obs)
            mq = z.mean(1)
            Q = np.einsum("nsa,nsb->nab", z - mq[:, None], z - mq[:, None]) / (z.shape[1] - 1)
            ratio.append((np.diagonal(Q, 0, 1, 2) / np.diagonal(P, 0, 1, 2)).max(-1))
            sp, sq = np.sqrt(np.diagonal(P, 0, 1, 2)), np.sqrt(np.diagonal(Q, 0, 1, 2))
            cp = P / sp[:, :, None] / sp[:, None, :]
            cq = Q / sq[:, :, None] / sq[:, None, :]
            corr.append(np.abs(cp - cq).max((1, 2)))
            dm = mq - mu
            mean_err.append(np.sqrt(np.einsum("na,nab,nb->n", dm, np.linalg.inv(P), dm)))
        ratio, corr, mean_err = map(np.concatenate, (ratio, corr, mean_err))
        out[label] = dict(
            variance_ratio_max=float(ratio.max()),
            variance_ratio_p90=float(np.quantile(ratio, 0.9)),
            correlation_error_max=float(corr.max()),
            correlation_error_mean=float(corr.mean()),
            whitened_mean_error_max=float(mean_err.max()),
        )
    return out


RUNS = {
    "mixture (before)": ("mixture", MIXTURE_BEFORE),
    "mixture (uniform start)": ("mixture", {"init_design": "uniform"}),
    "mixture (re-init at the start)": ("mixture", {"reinit_design": "start"}),
    "mixture": ("mixture", {}),
    "iaf (before)": ("iaf_fixed_base", IAF_BEFORE),
    "iaf": ("iaf", {}),
    "fullrank (before)": (
        "fullrank",
        {"adam_b2": 0.999, "learning_rate": optax.cosine_decay_schedule(0.3, 300, alpha=0.01)},
    ),
    "fullrank": ("fullrank", {}),
    "gaussian": ("gaussian", {}),
}


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def write_markdown(res):
    """Write results/mixture_modes.md from the merged results ``res``."""
    lines = [
        "# Expressive VI families on exact oracles",
        "",
        "Written by `benchmarks/mixture_modes.py` (see its docstring for the protocol).",
        "Rows not re-run by the last call keep older figures (date in the last table).",
        "",
        "## Multimodal 2-D posteriors (12 queries per shape and replica)",
        "",
        "| shape | mixture | queries | mass error mean | max | > 0.1 | KL(q‖p) "
        "| IWAE gap log p(x_O) | max | error log p(x_U∣x_O) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, shapes in res["multimodal"].items():
        for shape, r in shapes.items():
            lines.append(
                f"| {shape} | {label} | {r.get('queries', N)} | {r['mass_error_mean']:.3f} "
                f"| {r['mass_error_max']:.3f} | {_fmt(r.get('misses'), 'd')} | {r['kl']:.3f} "
                f"| {r['iwae_gap_x_O']:.3f} | {_fmt(r.get('iwae_gap_x_O_max'), '.3f')} "
                f"| {r['loglik_error_x_U']:.3f} |"
            )
    lines += [
        "",
        "## Linear-Gaussian posteriors (half of the features observed)",
        "",
        "| oracle | backend | max variance ratio | p90 | max correlation error | mean "
        "| max mean error (sd) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, by_oracle in res["linear_gaussian"].items():
        if "variance_ratio_max" in by_oracle:  # an older single-oracle entry
            by_oracle = {"d3 D8 sigma 0.3": by_oracle}
        for oracle, r in by_oracle.items():
            lines.append(
                f"| {oracle} | {label} | {r['variance_ratio_max']:.2f} "
                f"| {r['variance_ratio_p90']:.2f} | {r['correlation_error_max']:.3f} "
                f"| {r['correlation_error_mean']:.3f} | {r['whitened_mean_error_max']:.3f} |"
            )
    lines += ["", "| run | measured |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in res["measured"].items()]
    lines += [
        "",
        f"Last call {res['seconds']:.0f} s; load average {res['load_average'][0]:.1f}.",
    ]
    (RESULTS / "mixture_modes.md").write_text("\n".join(lines) + "\n")


def main():
    global REPS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1, help="replicas of each shape's 12 queries")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--no-multimodal", action="store_true", help="linear-Gaussian oracles only")
    args = ap.parse_args()
    REPS = args.reps
    t0 = time.time()
    path = RESULTS / "mixture_modes.json"
    res = json.loads(path.read_text()) if path.exists() and args.runs != list(RUNS) else {}
    res.setdefault("multimodal", {})
    res.setdefault("linear_gaussian", {})
    res.setdefault("measured", {})
    for label in res["linear_gaussian"]:
        res["measured"].setdefault(label, "earlier release, reps 1")
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    for label in args.runs:
        name, opts = RUNS[label]
        if label.startswith("mixture") and not args.no_multimodal:
            res["multimodal"][label] = multimodal(name, opts)
            print(label, json.dumps(res["multimodal"][label]), flush=True)
        res["linear_gaussian"][label] = linear(name, opts)
        print(label, json.dumps(res["linear_gaussian"][label]), flush=True)
        res["measured"][label] = f"{stamp}, reps {REPS}"
    res["seconds"] = time.time() - t0
    res["load_average"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=2))

    write_markdown(res)


if __name__ == "__main__":
    main()
