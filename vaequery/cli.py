"""Command line: ``vaequery demo``, ``vaequery train`` and ``vaequery compare``.

``vaequery demo [--out DIR]`` answers three queries with the shipped models and
writes two PNGs; ``vaequery train NAME ... --out DIR`` retrains shipped models
with their recipes (see :mod:`vaequery.train`); ``vaequery compare --model
white_wine --backends gaussian,mixture,nuts --rows 200 --missing half --out
results/`` runs :func:`vaequery.compare` on a shipped model's test rows and
writes the table (markdown + CSV) and the plots.

Compiled programs are kept in JAX's persistent compilation cache
(:func:`vaequery.enable_compilation_cache`), so a second run skips most of the
compiling: the folder is ``$VAEQUERY_CACHE_DIR`` or ``<user cache>/vaequery/jax``;
``vaequery --no-cache ...`` or ``VAEQUERY_CACHE_DIR=off`` turns it off.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def _demo_breast_cancer(vq, out: Path, key: int):
    vae = vq.pretrained("breast_cancer")
    test = vq.datasets.load("breast_cancer", "test")
    row = test.X[0].copy()
    row[10:] = np.nan  # observe the 10 "mean_*" features, predict the other 20
    post = vae.given(row).infer("gaussian", key=key)
    table = post.summary()
    table["true"] = test.X[0, 10:]
    print("\n(a) breast_cancer: observe the 10 mean_* features of test row 0, predict the rest")
    print(table.round(4).to_string())
    path = out / "breast_cancer_posterior.png"
    post.plot(path)
    return path


def _demo_white_wine(vq, key: int):
    vae = vq.pretrained("white_wine")
    q = vae.given(alcohol=12.5, pH=3.1).predict("quality", "density")
    post = q.infer("gaussian", key=key)
    print("\n(b) white_wine: given(alcohol=12.5, pH=3.1).predict('quality', 'density')")
    print(post.summary().round(4).to_string())


def _demo_digits(vq, out: Path, key: int, num_shown: int = 8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vae = vq.pretrained("digits")
    test = vq.datasets.load("digits", "test")
    idx = np.arange(4)  # four test images, top half observed, bottom half predicted
    X = test.X[idx].copy()
    X[:, 32:] = np.nan
    post = vae.given(X).infer("gaussian", key=key)
    draws = post.x[:, :num_shown]  # [4, S, 64], raw pixel units (0..16)
    fig, axes = plt.subplots(
        len(idx), num_shown + 2, figsize=(1.2 * (num_shown + 2), 1.3 * len(idx))
    )
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="#9ecae1")  # hidden: light blue
    for r in range(len(idx)):
        observed = np.ma.masked_invalid(X[r]).reshape(8, 8)
        panels = [test.X[idx[r]].reshape(8, 8), observed] + [d.reshape(8, 8) for d in draws[r]]
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=16)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(["truth", "observed"][c] if c < 2 else f"draw {c - 1}", fontsize=8)
    fig.suptitle("digits: top half observed, bottom half from the posterior (gaussian VI)")
    fig.tight_layout()
    path = out / "digits_inpainting.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(
        f"\n(c) digits: inpainted the bottom half of {len(idx)} test images, {num_shown} draws each"
    )
    return path


def demo(out="vaequery-demo", key=0) -> list[Path]:
    """Run the three demo queries; returns the PNG paths written."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import vaequery as vq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = [_demo_breast_cancer(vq, out, key)]
    _demo_white_wine(vq, key)
    paths.append(_demo_digits(vq, out, key))
    print(f"\nwrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.1f} s)")
    return paths


def _train(names, out, key, progress):
    from vaequery.train import PRETRAINED_RECIPES, train_pretrained

    for name in names or list(PRETRAINED_RECIPES):
        vae = train_pretrained(name, out, key=key, progress=progress)
        print(f"{name}: test ELBO {vae.metadata['test_elbo']:.3f} -> {Path(out) / name}")


def _parse_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _compare(args):
    """``vaequery compare``: backends side by side on a shipped model's test rows."""
    import vaequery as vq

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    options: dict = {}
    for item in args.option:
        name, _, value = item.partition("=")
        backend, _, hp = name.partition(".")
        if not hp or not value:
            raise SystemExit(
                f"--option takes BACKEND.NAME=VALUE (e.g. nuts.num_warmup=200), got {item!r}"
            )
        options.setdefault(backend, {})[hp] = _parse_value(value)
    vae = vq.pretrained(args.model)
    table = vq.datasets.load(args.model, split="test")
    if args.missing == "half":
        X, target = table.with_missing(key=args.key, max_rows=args.rows)
    else:
        try:
            rate = float(args.missing)
        except ValueError:
            raise SystemExit(
                f"--missing takes 'half' (QAVI: half of each row's features) or a rate in (0, 1), "
                f"got {args.missing!r}"
            ) from None
        X, target = table.with_missing(rate, key=args.key, max_rows=args.rows)
    X_true = table.X[: len(X)]
    comp = vq.compare(
        vae,
        vq.datasets.MaskedTable(X, target),
        X_true,
        backends=backends,
        key=args.key,
        num_samples=args.num_samples,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        **options,
    )
    paths = comp.save(args.out)
    print(comp.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return comp


def _setup_cache(off: bool):
    from vaequery.cache import disabled_by_env, enable_compilation_cache

    if off or disabled_by_env():
        return None
    try:
        return enable_compilation_cache()
    except OSError as e:  # an unwritable cache folder must not stop the command
        print(f"vaequery: compilation cache off ({e})", file=sys.stderr)
        return None


def main(argv=None) -> int:
    """Entry point of the ``vaequery`` command."""
    p = argparse.ArgumentParser(prog="vaequery", description="Conditional queries on VAEs.")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="do not keep compiled programs on disk (JAX's persistent compilation cache; "
        "default folder $VAEQUERY_CACHE_DIR or <user cache>/vaequery/jax)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="query the shipped models and write PNGs")
    d.add_argument("--out", default="vaequery-demo", help="folder for the PNGs")
    d.add_argument("--key", type=int, default=0)
    t = sub.add_parser("train", help="retrain shipped models with their recipes")
    t.add_argument("names", nargs="*", help="datasets (default: all shipped)")
    t.add_argument("--out", required=True, help="folder to write NAME/ model folders into")
    t.add_argument("--key", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    c = sub.add_parser("compare", help="run several backends on the same queries; tables + plots")
    c.add_argument("--model", default="white_wine", help="a shipped model (and its test split)")
    c.add_argument("--backends", default="gaussian,mixture", help="comma-separated names")
    c.add_argument("--rows", type=int, default=200, help="test rows queried")
    c.add_argument(
        "--missing", default="half", help="'half' (QAVI) or a rate for random missingness"
    )
    c.add_argument("--out", default="results", help="folder for compare.md/.csv/.png")
    c.add_argument("--key", type=int, default=0)
    c.add_argument("--num-samples", type=int, default=1000, help="IWAE / PSIS draws per query")
    c.add_argument("--chunk-size", type=int, default=None)
    c.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="BACKEND.NAME=VALUE",
        help="a backend hyper-parameter, e.g. nuts.num_warmup=200 (repeatable)",
    )
    c.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    _setup_cache(args.no_cache)
    if args.command == "demo":
        demo(args.out, args.key)
    elif args.command == "train":
        _train(args.names, args.out, args.key, not args.no_progress)
    elif args.command == "compare":
        _compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
