"""Train the two-layer digits HVAE (reproducible, CPU, a few minutes), or one on MNIST.

Usage::

    python benchmarks/train_hvae.py [--out vaequery/pretrained/digits_hvae]
    python benchmarks/train_hvae.py --dataset mnist --data ../shared/data/mnist \\
        --hierarchy 16 32 --hidden 512 512 --epochs 100 --out mnist_hvae

The digits recipe (:data:`RECIPES`): ``vq.train(train, val, test, method="hvae",
hierarchy=[4, 8], hidden=(128, 128), feature_dim=32, min_scale=0.02, num_epochs=300,
patience=30, batch_size=64, learning_rate=1e-3, key=0)``: a top-down HVAE
(``z1 [4] -> z2 [8]``, decoder on both layers) with the Gaussian pixel likelihood
and scale floor of the shipped flat ``digits`` model (pixels are multiples of
1/16 in model units), early stopping on the validation ELBO. The model is
saved with :meth:`vaequery.models.HVAEModel.save` (``"format": "vaequery.hvae"``)
into ``--out`` together with ``metrics.json`` (ELBOs, per-layer KLs, seconds).

MNIST (``--dataset mnist --data DIR`` with the IDX files of
``../shared/data/mnist``) uses the same code with the sizes given on the
command line; it is documented, not run in this repository (no timing measured).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import vaequery as vq

ROOT = Path(__file__).resolve().parent.parent

#: The shipped-style recipe per dataset (``--hierarchy`` etc. override it).
RECIPES = {
    "digits": dict(
        hierarchy=[4, 8],
        hidden=(128, 128),
        feature_dim=32,
        min_scale=0.02,
        num_epochs=300,
        patience=30,
        batch_size=64,
        learning_rate=1e-3,
    ),
    "mnist": dict(
        hierarchy=[16, 32],
        hidden=(512, 512),
        feature_dim=64,
        min_scale=0.02,
        num_epochs=100,
        patience=10,
        batch_size=128,
        learning_rate=1e-3,
    ),
}


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=sorted(RECIPES))
    p.add_argument("--data", default=None, help="folder of the MNIST IDX files")
    p.add_argument("--out", default=str(ROOT / "vaequery" / "pretrained" / "digits_hvae"))
    p.add_argument("--hierarchy", type=int, nargs="+", default=None)
    p.add_argument("--hidden", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--key", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    recipe = dict(RECIPES[args.dataset])
    if args.hierarchy:
        recipe["hierarchy"] = args.hierarchy
    if args.hidden:
        recipe["hidden"] = tuple(args.hidden)
    if args.epochs:
        recipe["num_epochs"] = args.epochs
    splits = [vq.datasets.load(args.dataset, s, path=args.data) for s in ("train", "val", "test")]
    t0 = time.perf_counter()
    model = vq.train(*splits, method="hvae", key=args.key, progress=not args.no_progress, **recipe)
    seconds = time.perf_counter() - t0
    out = model.save(args.out)
    md = model.metadata
    metrics = {
        "dataset": args.dataset,
        "hierarchy": list(model.sizes),
        "test_elbo": md["test_elbo"],
        "val_elbo": md["val_elbo"],
        "train_elbo": md["train_elbo"],
        "kl_per_layer": md["kl_per_layer"],
        "epochs_run": md["recipe"]["epochs_run"],
        "best_epoch": md["recipe"]["best_epoch"],
        "train_seconds": md["recipe"]["train_seconds"],
        "wall_seconds_with_compile": round(seconds, 1),
        "units": md["recipe"]["elbo_units"],
        "size_bytes": sum(f.stat().st_size for f in out.iterdir()),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
