"""Train the MNIST model the image benchmark queries (not shipped: too large for the wheel).

Usage::

    python benchmarks/train_mnist.py [--mnist /work/shared/data/mnist]
        [--out benchmarks/models/mnist] [--epochs 20]
    python benchmarks/images.py --model benchmarks/models/mnist --dataset mnist \\
        --data /work/shared/data/mnist --out images_mnist

The model is :func:`vaequery.train` on MNIST's 50,000 first training images
(pixels / 255, so in [0, 1]), the last 10,000 validating (the split of
``vq.datasets.load("mnist", ...)``): an MLP VAE with a Gaussian likelihood on
the 784 pixels, per-pixel scales output by the decoder with a floor of 0.02
(as the shipped ``digits`` model), latent dimension 16, hidden layers
512-512, Adam 1e-3, batch 128, at most ``--epochs`` epochs with early stopping on
the validation ELBO, key 0. QAVI's MNIST models are not described in enough
detail to copy (``../shared/REFERENCE_NOTES.md``); this is a model of the same
kind (an MLP VAE) sized to train in minutes on a CPU. The folder written is a
normal vaequery model (``vq.load(path)``) with ``metrics.json`` beside it; the
summary goes to ``benchmarks/results/mnist_model.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import RESULTS, machine

import vaequery as vq

ROOT = Path(__file__).resolve().parent.parent
MNIST = "/work/shared/data/mnist"

#: The recipe (see the module docstring).
RECIPE = dict(
    latent_dim=16,
    hidden=(512, 512),
    min_scale=0.02,
    batch_size=128,
    learning_rate=1e-3,
    patience=5,
)


def main(argv=None):
    """Command line: see the module docstring and ``--help``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", default=MNIST, help="folder with the four MNIST IDX files")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "models" / "mnist"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-rows", type=int, default=None, help="fewer rows: a smoke run")
    args = p.parse_args(argv)
    splits = [vq.datasets.load("mnist", s, path=args.mnist) for s in ("train", "val", "test")]
    if args.train_rows:
        splits[0] = splits[0][: args.train_rows]
    t0 = time.perf_counter()
    vae = vq.train(*splits, num_epochs=args.epochs, key=0, **RECIPE)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    vae.save(out)
    rec = vae.metadata["recipe"]
    metrics = {
        "dataset": "mnist",
        "train_rows": int(len(splits[0].X)),
        "test_elbo": vae.metadata["test_elbo"],
        "val_elbo": vae.metadata["val_elbo"],
        "units": rec.get("elbo_units"),
        "epochs_run": rec.get("epochs_run"),
        "best_epoch": rec.get("best_epoch"),
        "train_seconds": seconds,
        "recipe": {**RECIPE, "num_epochs": args.epochs},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    res = {"benchmark": "train_mnist", **machine(), "model": str(out), **metrics}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mnist_model.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "mnist_model.md").write_text(
        "# The MNIST model of the image benchmark (`benchmarks/train_mnist.py`)\n\n"
        f"Machine: {res.get('cpu_count', '?')} CPUs, {res.get('device', 'cpu')}. "
        "Not shipped (the weights are several MB); this command produces them.\n\n"
        "| train rows | latent | hidden | epochs run (best) | test ELBO | units | seconds |\n"
        "|---:|---:|---|---|---:|---|---:|\n"
        f"| {metrics['train_rows']} | {RECIPE['latent_dim']} | {RECIPE['hidden']} | "
        f"{metrics['epochs_run']} ({metrics['best_epoch']}) | {metrics['test_elbo']:.1f} | "
        f"{metrics['units']} | {seconds:.0f} |\n"
    )
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
