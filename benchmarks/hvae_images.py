"""Inpainting with a hierarchical VAE: QAVI's hierarchical family, its warm-up, and baselines.

The model is the two-layer digits HVAE of ``benchmarks/train_hvae.py``
(``z1 [4] -> z2 [8]``, 8x8 digits, Gaussian pixels; ``--model`` loads another
saved HVAE). The queries are those of ``benchmarks/images.py`` (imported from
there, not copied): QAVI's **two patches** (two 3x3 patches on 8x8, QAVI's
10x10 on 28x28 scaled) and **rotating half** masks on ``--images`` test images.
Backends, each on the same queries and key:

* ``gaussian``: mean-field Gaussian over the flattened latent ``(z1, z2)``
  (vaequery's defaults: S = 100, 300 steps);
* ``hierarchical``: QAVI's hierarchical family (eq. 10) with the KL-balanced
  warm-up (eq. 11), QAVI's settings S = 28, 1000 steps, 500 warm-up;
* ``nuts``: NUTS on the flattened latent, on the first ``--nuts-images`` images
  only (2 chains x ``--nuts-draws`` after ``--nuts-warmup``), a reference.

Metrics per mask and backend (definitions of ``benchmarks/images.py``): IWAE
``post.log_likelihood(X, num_samples=--samples)`` of the missing pixels (nats,
model units: pixels / 16), PSNR of the posterior-mean inpainting over the whole
image and over the missing pixels (peak 16), SSIM; all on the NUTS subset too,
so the three backends compare on equal images. A picture grid (observed,
truth, draws per backend) goes to ``hvae_images.png``.

**Warm-up** (QAVI Fig. 2): the hierarchical family on the rotating-half
queries with ``warmup_steps=500`` and with ``warmup_steps=0`` (same key, same
start); both loss traces are the negative ELBO, averaged over images, plotted
against the step in ``hvae_warmup.png`` and tabulated at a few steps.

Writes ``benchmarks/results/hvae_images.{json,md,png}`` and
``hvae_warmup.png``; asserts nothing. ``--quick`` runs 8 images, S = 500,
2 NUTS images, short chains.

MNIST: train with ``python benchmarks/train_hvae.py --dataset mnist --data
../shared/data/mnist --out mnist_hvae``, then ``python benchmarks/hvae_images.py
--model mnist_hvae --dataset mnist --data ../shared/data/mnist`` (10x10
patches, peak 255; not run here).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine
from images import MASKS, flat_draws, picture, psnr, ssim

import vaequery as vq

DEFAULT_MODEL = "digits_hvae"  # vq.pretrained name, or a saved model folder
BACKENDS = ["gaussian", "hierarchical", "nuts"]
CHECK_STEPS = [0, 25, 50, 100, 200, 300, 500, 750, 999]


def metrics(post, X, hidden, peak, shape, samples, seed):
    """IWAE, PSNR and SSIM per image of one posterior."""
    h, w = shape
    ll = np.asarray(post.log_likelihood(X, num_samples=samples, key=seed + 1))
    mean = np.asarray(post.impute())
    return {
        "iwae": ll,
        "psnr": psnr(mean, X, peak),
        "psnr_missing": psnr(mean, X, peak, where=hidden),
        "ssim": ssim(mean.reshape(-1, h, w), X.reshape(-1, h, w), peak),
    }


def summarise(m, rows=None):
    """Means (and the IWAE's standard error) over images ``rows``."""
    rows = slice(None) if rows is None else rows
    ll = m["iwae"][rows]
    return {
        "iwae_mean": float(np.nanmean(ll)),
        "iwae_median": float(np.nanmedian(ll)),
        "iwae_se": float(np.nanstd(ll, ddof=1) / np.sqrt(max(np.isfinite(ll).sum(), 1))),
        "psnr_db": float(np.mean(m["psnr"][rows])),
        "psnr_missing_db": float(np.mean(m["psnr_missing"][rows])),
        "ssim": float(np.mean(m["ssim"][rows])),
    }


def run(args):
    """Every backend on both masks, then the warm-up comparison."""
    model = (
        vq.pretrained(args.model)
        if args.model in vq.io.available_pretrained()
        else vq.load(args.model)
    )
    if getattr(model, "hierarchy", None) is None:
        raise SystemExit(f"{args.model} is not a hierarchical VAE (train one: train_hvae.py)")
    table = vq.datasets.load(args.dataset, "test", path=args.data)
    shape = tuple(table.image_shape)
    peak = 16.0 if args.dataset == "digits" else 255.0
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(table.X), size=min(args.images, len(table.X)), replace=False))
    X = np.asarray(table.X[idx], float)
    k = min(args.nuts_images, len(X))
    results, shown, curves = [], {}, {}
    for m_i, (mname, fn) in enumerate(MASKS.items()):
        masked = fn(X, shape, key=args.seed * 10 + m_i)
        hidden = np.asarray(masked.target_mask, bool)
        shown[mname] = {"observed": masked.X, "draws": {}}
        for name in args.backends:
            rows = slice(0, k) if name == "nuts" else slice(None)
            opts = (
                dict(num_chains=2, num_warmup=args.nuts_warmup, num_draws=args.nuts_draws)
                if name == "nuts"
                else {}
            )
            c0, w0 = time.process_time(), time.perf_counter()
            post = model.given(masked.X[rows]).infer(name, key=args.seed, **opts)
            c1, w1 = time.process_time(), time.perf_counter()
            m = metrics(post, X[rows], hidden[rows], peak, shape, args.samples, args.seed)
            c2 = time.process_time()
            draws = flat_draws(np.asarray(post.x))
            shown[mname]["draws"][name] = draws[: args.show, : args.num_draws_shown]
            if name == "hierarchical" and mname == "rotating_half":
                curves["warmup_500"] = np.asarray(post.loss)
            row = {
                "mask": mname,
                "backend": name,
                "options": opts,
                "images": int(len(X[rows])),
                **summarise(m),
                "on_nuts_images": summarise(m, slice(0, k)),
                "failed": int(np.asarray(post.failed).sum()),
                "infer_cpu_s": round(c1 - c0, 2),
                "infer_wall_s": round(w1 - w0, 2),
                "metrics_cpu_s": round(c2 - c1, 2),
                "per_image": {key: np.asarray(v).tolist() for key, v in m.items()},
            }
            results.append(row)
            print(
                f"{mname:14s} {name:13s} n={row['images']:3d} IWAE {row['iwae_mean']:8.2f} ± "
                f"{row['iwae_se']:.2f}  PSNR {row['psnr_db']:6.2f} dB (missing "
                f"{row['psnr_missing_db']:5.2f})  SSIM {row['ssim']:.3f}  "
                f"({row['infer_cpu_s']:.0f} CPU-s)",
                flush=True,
            )
    # warm-up off, same queries (rotating half) and key
    masked = MASKS["rotating_half"](X, shape, key=args.seed * 10 + 1)
    post0 = model.given(masked.X).infer("hierarchical", key=args.seed, warmup_steps=0)
    curves["warmup_0"] = np.asarray(post0.loss)
    hidden = np.asarray(masked.target_mask, bool)
    m0 = metrics(post0, X, hidden, peak, shape, args.samples, args.seed)
    warm = {
        "mask": "rotating_half",
        "steps": CHECK_STEPS,
        "neg_elbo_mean": {
            key: [float(c[:, s].mean()) for s in CHECK_STEPS] for key, c in curves.items()
        },
        "final_100_mean": {key: float(c[:, -100:].mean()) for key, c in curves.items()},
        "without_warmup": summarise(m0),
    }
    info = {
        "model": str(args.model),
        "hierarchy": list(model.sizes),
        "dataset": args.dataset,
        "image_shape": list(shape),
        "peak": peak,
        "images": idx.tolist(),
        "num_images": len(idx),
        "nuts_images": k,
        "iwae_samples": args.samples,
        "seed": args.seed,
    }
    return info, results, warm, curves, X, shown


def markdown(info, results, warm, cpu_s, wall_s):
    """The results as a markdown page."""
    lines = [
        f"# Inpainting with a hierarchical VAE ({info['dataset']}, layers {info['hierarchy']})",
        "",
        f"Model `{Path(info['model']).name}` (z1 {info['hierarchy'][0]} -> z2 "
        f"{info['hierarchy'][1]}), {info['num_images']} test images "
        f"({info['image_shape'][0]}x{info['image_shape'][1]}), seed {info['seed']}, IWAE with "
        f"S = {info['iwae_samples']}; NUTS on the first {info['nuts_images']} images only. "
        "Produced by `python benchmarks/hvae_images.py`; protocol in its docstring.",
        "",
        "IWAE: mean log p(x_missing | x_observed) per image, nats, model units (pixels / 16). "
        "PSNR of the posterior-mean inpainting (peak 16), whole image and missing pixels. "
        "The right-hand columns repeat the metrics on the NUTS images for an equal comparison.",
        "",
    ]
    for mask in MASKS:
        lines += [
            f"## {mask.replace('_', ' ')}",
            "",
            "| backend | images | IWAE | PSNR dB | PSNR missing dB | SSIM | IWAE (NUTS imgs) "
            "| PSNR (NUTS imgs) | CPU s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            if r["mask"] != mask:
                continue
            s = r["on_nuts_images"]
            lines.append(
                f"| {r['backend']} | {r['images']} | {r['iwae_mean']:.2f} ± {r['iwae_se']:.2f} | "
                f"{r['psnr_db']:.2f} | {r['psnr_missing_db']:.2f} | {r['ssim']:.3f} | "
                f"{s['iwae_mean']:.2f} | {s['psnr_db']:.2f} | {r['infer_cpu_s']:.0f} |"
            )
        lines.append("")
    lines += [
        "## Warm-up (QAVI Fig. 2)",
        "",
        "Hierarchical family on the rotating-half queries, mean negative ELBO over images "
        "at each step, with QAVI's KL-balanced warm-up (500 of 1000 steps) and without "
        "(`warmup_steps=0`), same key and start. Plot: `hvae_warmup.png`.",
        "",
        "| step | " + " | ".join(str(s) for s in warm["steps"]) + " | last 100 |",
        "|---|" + "---|" * (len(warm["steps"]) + 1),
    ]
    for key, vals in warm["neg_elbo_mean"].items():
        lines.append(
            f"| {key} | "
            + " | ".join(f"{v:.2f}" for v in vals)
            + f" | {warm['final_100_mean'][key]:.2f} |"
        )
    w0 = warm["without_warmup"]
    lines += [
        "",
        f"Without warm-up the final fit scores IWAE {w0['iwae_mean']:.2f} ± {w0['iwae_se']:.2f}, "
        f"PSNR {w0['psnr_db']:.2f} dB (compare the hierarchical row of the rotating-half table).",
        "",
        f"Picture: `hvae_images.png`. Total {cpu_s:.0f} CPU-s, {wall_s:.0f} s wall.",
        "",
    ]
    return "\n".join(lines)


def warmup_plot(path, curves):
    """Mean negative ELBO per step, with and without warm-up (QAVI Fig. 2 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    labels = {"warmup_500": "KL-balanced warm-up (500 steps)", "warmup_0": "no warm-up"}
    for key, c in curves.items():
        ax.plot(c.mean(0), label=labels.get(key, key), lw=1)
    ax.axvline(500, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("negative ELBO (mean over images)")
    lo = min(c.mean(0)[200:].min() for c in curves.values())
    hi = max(np.percentile(c.mean(0), 95) for c in curves.values())
    ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    ax.legend(fontsize=8)
    ax.set_title("Hierarchical family, rotating-half digits queries", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data", default=None)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--backends", nargs="+", default=BACKENDS)
    p.add_argument("--nuts-images", type=int, default=8)
    p.add_argument("--nuts-warmup", type=int, default=300)
    p.add_argument("--nuts-draws", type=int, default=300)
    p.add_argument("--show", type=int, default=4)
    p.add_argument("--num-draws-shown", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="hvae_images")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.samples, args.nuts_images = 8, 500, 2
        args.nuts_warmup = args.nuts_draws = 100
    args.show = min(args.show, args.images, args.nuts_images)
    c0, w0 = time.process_time(), time.perf_counter()
    info, results, warm, curves, X, shown = run(args)
    RESULTS.mkdir(exist_ok=True)
    png = RESULTS / f"{args.out}.png"
    picture(
        png,
        X,
        shown,
        args.backends,
        tuple(info["image_shape"]),
        info["peak"],
        name=f"{info['dataset']} HVAE",
    )
    warmup_plot(RESULTS / "hvae_warmup.png", curves)
    cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - w0
    out = {
        "benchmark": "hvae_images",
        **info,
        "results": results,
        "warmup": warm,
        "cpu_s": round(cpu_s, 1),
        "wall_s": round(wall_s, 1),
        "machine": machine(),
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1))
    (RESULTS / f"{args.out}.md").write_text(markdown(info, results, warm, cpu_s, wall_s))
    print(f"wrote {RESULTS / args.out}.{{json,md,png}} and hvae_warmup.png ({cpu_s:.0f} CPU-s)")


if __name__ == "__main__":
    main()
