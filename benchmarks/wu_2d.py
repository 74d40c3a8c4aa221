"""Wu, Domke & Sanner's 2-D MNIST experiment: every backend against the exact grid posterior.

Protocol (Wu et al. §4.1-4.4, Figures 3-5; ``../shared/REFERENCE_NOTES.md``):

* a Bernoulli VAE on binarised MNIST (pixels thresholded at 128), one hidden
  layer of 64 ReLU units in encoder and decoder, a 2-D latent, trained with
  :func:`vaequery.train` (every pixel a ``"binary"`` feature) on a random
  subset of the training split (``--train-rows``; Wu et al. used all 60,000);
* ``--queries`` evidence sets (Wu et al.: 50): random test images, each with a
  random ``--observed`` share of its pixels as evidence ``x_O`` and the rest as
  the query ``x_U`` (Wu et al. draw "a subset of that image"; their appendix
  varies the observed share, and sparse evidence gives the multimodal
  posteriors of their Figure 4);
* the ground truth is vaequery's ``grid`` backend (adaptive quadrature, exact
  for a 2-D latent) where Wu et al. used rejection sampling;
* prior networks: GVI = ``fullrank``, NF = ``planar`` (16 layers), FCN =
  ``fcn``; MCMC: ``nuts`` and ``hmc``; every backend at its defaults
  (vaequery's Adam budgets, not Wu et al.'s RMSProp/L-BFGS ones).

Metrics, per evidence set, then mean (and median) over sets:

* **KL(q || p)** for the variational backends: ``E_q[log q(z) - log p(z |
  x_O)]`` from ``--draws`` draws with their exact ``log q``
  (``backend.sample_and_log_prob``); ``log p(z | x_O) = log p(z, x_O) - log
  p(x_O)`` with ``log p(x_O)`` from the grid's quadrature;
* **TV** for every backend (MCMC has no ``log q``): the total-variation
  distance between the backend's draws and ``--draws`` exact grid draws,
  binned on a 16 x 16 histogram over the grid posterior's box (mean +- 5 sd).
  Its Monte-Carlo floor is the TV between two independent sets of grid
  draws, reported as the ``grid`` row;
* **log p(x_U | x_O)** (Wu et al.'s query marginal likelihood, Figure 5b):
  quadrature for ``grid`` (exact), IWAE with ``--samples`` draws for the
  others (:meth:`vaequery.Posterior.log_likelihood`); nats per evidence set;
  and Wu et al.'s own estimate, ``log mean_s p(x_U | z_s)`` over 500 of the
  backend's draws, whose shortfall from the exact value is reported.

Figure 4 analogue: for three evidence sets (the two where the prior networks'
mean KL is largest, and the median one), the evidence image, the exact
posterior density and each backend's draws over the exact density's contours.

Writes ``benchmarks/results/wu_2d.{json,md,png}``; asserts nothing::

    python benchmarks/wu_2d.py            # recorded run (about 6 CPU-minutes)
    python benchmarks/wu_2d.py --quick    # smoke run, nothing written
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import RESULTS, machine
from scipy.special import logsumexp

import vaequery as vq

MNIST = "/work/shared/data/mnist"
VI = ["fullrank", "planar", "fcn"]
MCMC = ["nuts", "hmc"]
PAPER_NAMES = {
    "grid": "exact draws",
    "fullrank": "GVI",
    "planar": "NF",
    "fcn": "FCN",
    "nuts": "HMC (NUTS)",
    "hmc": "HMC",
}
BINS = 16
#: Draws per evidence set of Wu et al.'s query-likelihood estimate (Figure 5b).
WU_DRAWS = 500


def load_binary_mnist(path, n_train, n_test, seed):
    """``(X_train, X_test, names)``: thresholded 0/1 pixel rows, random subsets."""
    rng = np.random.default_rng(seed)
    tr = vq.datasets.load("mnist", "train", path=path)
    te = vq.datasets.load("mnist", "test", path=path)
    xtr = np.asarray(tr.X)[rng.choice(len(tr.X), n_train, replace=False)]
    xte = np.asarray(te.X)[rng.choice(len(te.X), n_test, replace=False)]
    return (xtr > 127.5).astype(float), (xte > 127.5).astype(float), list(tr.feature_names)


def train_vae(X, names, epochs, seed):
    """The 784-64-2 Bernoulli VAE (every pixel ``"binary"``, even if constant in ``X``)."""
    return vq.train(
        X,
        names=names,
        kinds={n: "binary" for n in names},
        latent_dim=2,
        hidden=(64,),
        num_epochs=epochs,
        batch_size=128,
        learning_rate=3e-3,
        progress=False,
        key=seed,
    )


def log_joint(target, z):
    """``log p(z, x_O)`` at draws ``z [N, M, 2]`` of each evidence set -> ``[N, M]``."""

    def one(zs, row):
        return jax.vmap(lambda zz: target.logdensity_fn(zz, row))(zs)

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(z), target.data))


def draws_with_log_q(post, m, seed):
    """``(z [N, m, 2], log_q [N, m])`` from a variational posterior's fitted ``q``."""
    f = jax.jit(jax.vmap(lambda s, k, b=post.backend: b.sample_and_log_prob(s, k, m)))
    z, lq = f(post.state, jax.random.split(jax.random.key(seed), post.num_queries))
    return np.asarray(z, float), np.asarray(lq, float)


def wu_estimate(target, joint, z, m=WU_DRAWS):
    """Wu et al.'s query likelihood ``log mean_s p(x_U | z_s)`` over ``m`` draws ``[N]``.

    ``log p(x_U | z) = log p(z, x_U, x_O) - log p(z, x_O)`` (the prior cancels),
    averaged over the first ``m`` draws of the backend itself (no importance
    weights: a lower-biased estimate for any ``q`` but the exact posterior).
    """
    z = z[:, np.linspace(0, z.shape[1] - 1, min(m, z.shape[1])).astype(int)]  # all chains
    lu = log_joint(joint, z) - log_joint(target, z)
    return logsumexp(lu, -1) - np.log(lu.shape[-1])


def flat_draws(post):
    """Latent draws ``[N, S, 2]`` of any posterior (MCMC chains flattened)."""
    z = np.asarray(post.z, float)
    return z.reshape(z.shape[0], -1, z.shape[-1])


def binned_tv(z, ref):
    """Total variation between draws ``z [N, M, 2]`` and ``ref [N, R, 2]`` per set ``[N]``.

    Both are binned on ``BINS x BINS`` cells over ``mean +- 5 sd`` of ``ref``
    per axis; draws outside the box count in an extra overflow bin.
    """
    out = np.empty(len(z))
    for i in range(len(z)):  # 50 small histograms: host-side NumPy, not compiled code
        mu, sd = ref[i].mean(0), ref[i].std(0) + 1e-9
        edges = [np.linspace(mu[k] - 5 * sd[k], mu[k] + 5 * sd[k], BINS + 1) for k in range(2)]

        def hist(a, edges=edges):
            h, _, _ = np.histogram2d(a[:, 0], a[:, 1], bins=edges)
            h = h.ravel() / len(a)
            return np.append(h, 1.0 - h.sum())

        out[i] = 0.5 * np.abs(hist(z[i]) - hist(ref[i])).sum()
    return out


def evidence_sets(X_test, n, share, seed):
    """``(X_query, X_true, observed)``: a random ``share`` of each image's pixels observed."""
    rng = np.random.default_rng(seed + 1)
    xt = X_test[:n]
    obs = rng.random(xt.shape) < share
    return np.where(obs, xt, np.nan), xt, obs


def summarise(v):
    """Mean, median and standard error of per-set values."""
    v = np.asarray(v, float)
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "se": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"),
        "per_set": [float(a) for a in v],
    }


def figure(path, vae, X_query, X_true, obs, grid_post, draws, log_ev, sets):
    """Figure 4 analogue: evidence, exact density, and each backend's draws on its contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(draws)
    target = grid_post.query.target()
    fig, axes = plt.subplots(
        len(sets), 2 + len(names), figsize=(2.3 * (2 + len(names)), 2.4 * len(sets))
    )
    axes = np.atleast_2d(axes)
    for r, i in enumerate(sets):
        allz = np.concatenate([d[i] for d in draws.values()])
        lo, hi = np.percentile(allz, 0.2, 0), np.percentile(allz, 99.8, 0)
        pad = 0.15 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        gx, gy = np.linspace(lo[0], hi[0], 160), np.linspace(lo[1], hi[1], 160)
        Z = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
        row = jax.tree.map(lambda a, i=i: a[i], target.data)
        lp = np.asarray(jax.jit(jax.vmap(lambda z, row=row: target.logdensity_fn(z, row)))(Z))
        dens = np.exp(lp - log_ev[i]).reshape(160, 160)
        img = np.where(obs[i], X_true[i] * 0.6 + 0.2, 0.5)  # observed: dark/bright; rest grey
        ax = axes[r, 0]
        ax.imshow(img.reshape(28, 28), cmap="coolwarm", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"set {i}: evidence ({obs[i].mean():.0%})" if r == 0 else f"set {i}")
        ext = (lo[0], hi[0], lo[1], hi[1])
        axes[r, 1].imshow(dens.T, origin="lower", extent=ext, cmap="viridis", aspect="auto")
        axes[r, 1].set_title("exact p(z | x_O) (grid)" if r == 0 else "")
        for c, name in enumerate(names):
            ax = axes[r, 2 + c]
            ax.contour(gx, gy, dens.T, levels=6, cmap="viridis", linewidths=0.8)
            zi = draws[name][i]
            zb = zi[np.linspace(0, len(zi) - 1, 400).astype(int)]  # spread over all chains
            ax.scatter(zb[:, 0], zb[:, 1], s=2, c="k", alpha=0.5)
            ax.set_xlim(ext[0], ext[1])
            ax.set_ylim(ext[2], ext[3])
            if r == 0:
                ax.set_title(f"{name} ({PAPER_NAMES.get(name, '')})")
        for ax in axes[r, 1:]:
            ax.tick_params(labelsize=6)
    fig.suptitle("Wu et al. Figure 4 analogue: 2-D MNIST VAE, latent posterior given evidence")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args):
    """Train, answer every evidence set with every backend, measure; returns the result dict."""
    t_cpu, t_wall = time.process_time(), time.time()
    X_train, X_test, names = load_binary_mnist(
        args.mnist, args.train_rows, max(args.queries, 64), args.seed
    )
    t0 = time.process_time()
    vae = train_vae(X_train, names, args.epochs, args.seed)
    train_cpu = time.process_time() - t0
    X_query, X_true, obs = evidence_sets(X_test, args.queries, args.observed, args.seed)
    q = vae.given(X_query)
    target = q.target()

    timing = {}
    t0, w0 = time.process_time(), time.time()
    grid = q.infer("grid", key=0, num_draws=2 * args.draws)
    timing["grid"] = (time.process_time() - t0, time.time() - w0)
    log_ev = np.asarray(grid.info["log_evidence"], float)
    zg = flat_draws(grid)
    ref, ref2 = zg[:, : args.draws], zg[:, args.draws :]
    ll = {"grid": np.asarray(grid.log_likelihood(X_true), float)}
    joint = vae.given(X_true).target()
    wu = {"grid": wu_estimate(target, joint, ref2)}
    tv = {"grid": binned_tv(ref2, ref)}
    kl, kl_se, draws = {}, {}, {}
    for name in VI + MCMC:
        t0, w0 = time.process_time(), time.time()
        post = q.infer(name, key=0)
        jax.block_until_ready(post.z)
        timing[name] = (time.process_time() - t0, time.time() - w0)
        if name in VI:
            z, lq = draws_with_log_q(post, args.draws, args.seed + 7)
            r = lq - (log_joint(target, z) - log_ev[:, None])
            kl[name] = r.mean(-1)
            kl_se[name] = float(np.sqrt(np.sum(r.var(-1, ddof=1) / r.shape[-1])) / len(r))
        else:
            z = flat_draws(post)
        draws[name] = z
        tv[name] = binned_tv(z, ref)
        wu[name] = wu_estimate(target, joint, z)
        ll[name] = np.asarray(post.log_likelihood(X_true, num_samples=args.samples, key=3), float)
    draws = {"grid": ref, **draws}

    res = {
        "protocol": {
            "data": f"binarised MNIST (threshold 128), {args.train_rows} training images",
            "vae": "784-64-2-64-784 Bernoulli VAE (vq.train, hidden=(64,), latent_dim=2)",
            "epochs": args.epochs,
            "train_elbo": vae.metadata.get("train_elbo"),
            "evidence_sets": args.queries,
            "observed_share": args.observed,
            "draws": args.draws,
            "iwae_samples": args.samples,
            "tv_bins": BINS,
            "seed": args.seed,
        },
        "grid_edge_mass_max": float(np.max(grid.info["edge_mass"])),
        "backends": {},
    }
    for name in ["grid", *VI, *MCMC]:
        entry = {
            "paper_name": "RS (ground truth)" if name == "grid" else PAPER_NAMES[name],
            "tv": summarise(tv[name]),
            "log_lik": summarise(ll[name]),
            "log_lik_gap_to_exact": summarise(ll[name] - ll["grid"]),
            "wu_log_lik": summarise(wu[name]),
            "wu_log_lik_gap_to_exact": summarise(wu[name] - ll["grid"]),
            "cpu_s": timing[name][0],
            "wall_s": timing[name][1],
        }
        if name in kl:
            entry["kl"] = summarise(kl[name])
            entry["kl_mc_se"] = kl_se[name]
        res["backends"][name] = entry
    res["train_cpu_s"] = train_cpu
    res["cpu_s"] = time.process_time() - t_cpu
    res["wall_s"] = time.time() - t_wall
    res["_figure_args"] = (vae, X_query, X_true, obs, grid, draws, log_ev)
    return res


def markdown(res):
    """The result as a markdown page."""
    p = res["protocol"]
    lines = [
        "# Wu et al.'s 2-D MNIST experiment (benchmarks/wu_2d.py)",
        "",
        f"{p['vae']}, trained {p['epochs']} epochs on {p['data']} "
        f"(train ELBO {p['train_elbo']:.1f} nats/image). {p['evidence_sets']} evidence sets: "
        f"random test images, a random {p['observed_share']:.0%} of pixels observed. Ground "
        "truth: the `grid` backend (exact quadrature; largest border mass "
        f"{res['grid_edge_mass_max']:.1e}). KL(q || p) from {p['draws']} draws with exact log q; "
        f"TV on a {p['tv_bins']}x{p['tv_bins']} histogram against {p['draws']} exact draws (the "
        "`grid` row is the Monte-Carlo floor: two independent exact draw sets); log p(x_U | x_O) "
        f"exact for `grid`, IWAE with S = {p['iwae_samples']} otherwise (MCMC: the proposal is "
        "a Gaussian moment-matched to the chains); 'Wu est. gap': Wu et al.'s estimate "
        f"log mean p(x_U | z) over {WU_DRAWS} of the backend's own draws, minus the exact value "
        "(for `grid` its Monte-Carlo bias). Mean (median) over evidence sets; +- one standard "
        "error. CPU s: inference of all sets, compilation included.",
        "",
        "| backend | Wu et al. | KL(q \\|\\| p) | TV | log p(x_U \\| x_O) | gap to exact "
        "| Wu est. gap | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in res["backends"].items():
        kl = (
            f"{e['kl']['mean']:.3f} ({e['kl']['median']:.3f}) +- {e['kl']['se']:.3f}"
            if "kl" in e
            else "–"
        )
        lines.append(
            f"| `{name}` | {e['paper_name']} | {kl} | {e['tv']['mean']:.3f} "
            f"({e['tv']['median']:.3f}) | {e['log_lik']['mean']:.2f} "
            f"({e['log_lik']['median']:.2f}) | {e['log_lik_gap_to_exact']['mean']:+.3f} "
            f"+- {e['log_lik_gap_to_exact']['se']:.3f} | "
            f"{e['wu_log_lik_gap_to_exact']['mean']:+.3f} | {e['cpu_s']:.1f} |"
        )
    lines += [
        "",
        f"Whole run: {res['cpu_s']:.0f} CPU-s ({res['wall_s']:.0f} s wall; VAE training "
        f"{res['train_cpu_s']:.0f} CPU-s). Figure: `wu_2d.png` (Figure 4 analogue; evidence "
        f"sets {res['figure_sets']}: the two with the largest mean KL of the prior networks "
        "and the median one).",
        "",
        "## What differs from the paper",
        "",
        "- Ground truth by adaptive grid quadrature (exact), not rejection sampling; so the "
        "KL is against the exact posterior and the `grid` log-likelihood is exact.",
        f"- The VAE is trained on {p['data'].split(', ')[1]} for {p['epochs']} epochs with Adam "
        "(Wu et al.: a pre-trained VAE on all 60,000 images); same architecture.",
        "- Evidence: a uniformly random pixel subset per image; Wu et al. do not state "
        "their subset rule for Figure 5.",
        "- Optimisers and budgets are vaequery's defaults (Adam, a few hundred steps, a few "
        "dozen draws per step), not Wu et al.'s RMSProp 5,000/10,000 iterations or L-BFGS "
        "on 500 fixed draws; HMC is NUTS/HMC with window adaptation, 4 chains.",
        "- Metrics: Wu et al. show C-ELBO scatter plots (Fig. 5a) and violin plots of the "
        "query likelihood from 500 samples (Fig. 5b); we report KL to the exact posterior, "
        "TV, and the query likelihood's gap to the exact value.",
        "",
    ]
    return "\n".join(lines)


def main():
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=MNIST, help="folder with the MNIST IDX files")
    ap.add_argument("--train-rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--observed", type=float, default=0.1, help="share of pixels observed")
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--samples", type=int, default=1000, help="IWAE samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run, nothing written")
    ap.add_argument("--out", default=None, help="result file stem (default wu_2d)")
    args = ap.parse_args()
    if args.quick:
        args.train_rows, args.epochs, args.queries = 2000, 2, 3
        args.draws, args.samples = 300, 100
    out = args.out or (None if args.quick else "wu_2d")
    res = run(args)
    fig_args = res.pop("_figure_args")
    res["machine"] = machine()
    # the figure: the two sets where the prior networks miss most (mean KL), and the median one
    kl = np.mean([res["backends"][b]["kl"]["per_set"] for b in VI], 0)
    order = np.argsort(kl)
    sets = [int(order[-1]), int(order[-2]), int(order[len(order) // 2])]
    res["figure_sets"] = sets
    md = markdown(res)
    print(md)
    if out is None:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{out}.md").write_text(md)
    figure(RESULTS / f"{out}.png", *fig_args, sets=sets)
    print(f"wrote {RESULTS / out}.{{json,md,png}}")


if __name__ == "__main__":
    main()
