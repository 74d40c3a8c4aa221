"""VAEAC in vaequery on VAEAC's own imputation protocol (Ivanov et al. 2019, Table 1).

Protocol (appendix A.2, the functions of ``benchmarks/imputation.py``): a new 3:1
train/test shuffle per repeat, 50 % of the values hidden completely at random in
**both** parts, NRMSE = mean over features of the RMSE over hidden test entries
divided by the feature's sd on the complete test rows.

Methods, on the same splits and masks:

* **vaequery VAEAC**: ``vq.train(train_rows, method="vaeac")`` with the paper's
  settings for tables: each present value masked with probability 0.2 during
  training (missing ones always unobserved, never in the loss), Gaussian
  likelihood with sigma fixed at 1 in standardised units, 25 % of the training
  rows held out and the best validation-IWAE epoch kept. The imputation is the
  mean over draws of the decoder mean, ``model.given(test).infer("vaeac")``.
* **vaequery VAE + gaussian VI**: :func:`benchmarks.imputation.impute_vaequery`
  (masked-ELBO VAE, then mean-field Gaussian VI per query).

Both see standardisation from the observed train entries only
(:func:`benchmarks.imputation.train_schema`). The paper's 0.850 ± 0.007
(white wine) and 0.94 ± 0.01 (yeast) are printed beside.

Writes ``benchmarks/results/vaeac.{json,md}``; asserts nothing about time.

Usage: ``python benchmarks/vaeac.py [--tables white_wine] [--repeats 2] [--epochs 200]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import RESULTS, machine
from imputation import PUBLISHED, impute_vaequery, nrmse, split_and_hide, train_schema

import vaequery as vq


def impute_vaeac(names, data, seed, repeat, train_kwargs, num_draws):
    """Train a VAEAC on the incomplete train rows and impute the test rows.

    Parameters
    ----------
    names : list of str
    data : dict
        From :func:`imputation.split_and_hide`.
    seed, repeat : int
    train_kwargs : dict
        Passed to :func:`vaequery.train` (``method="vaeac"`` is added).
    num_draws : int
        Draws per test row; the imputation is their mean.

    Returns
    -------
    dict
        ``x_hat`` (raw units), ``seconds`` (inference), ``train_seconds`` and
        the training ``recipe``.
    """
    schema = train_schema(names, data["train"])
    t0 = time.perf_counter()
    model = vq.train(
        data["train"],
        schema=schema,
        method="vaeac",
        key=seed * 101 + repeat,
        progress=False,
        **train_kwargs,
    )
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    post = model.given(data["test"]).infer("vaeac", key=seed * 101 + repeat, num_draws=num_draws)
    return {
        "x_hat": post.mean,
        "seconds": time.perf_counter() - t0,
        "train_seconds": train_seconds,
        "recipe": model.metadata["recipe"],
    }


def run(args):
    """Every table x repeat; the result dictionary written to JSON."""
    vaeac_kwargs = {
        "num_epochs": args.epochs,
        "latent_dim": args.latent_dim,
        "hidden": tuple(args.hidden),
        "patience": args.patience,
    }
    res = {
        "benchmark": "vaeac",
        **machine(),
        "vaequery_version": vq.__version__,
        "protocol": {
            "split": "3:1 train:test, new shuffle per repeat",
            "missingness": "50 % MCAR in train and test",
            "nrmse": "mean over features of RMSE over hidden test entries / sd of the "
            "complete test rows; imputation = mean over draws",
            "repeats": args.repeats,
            "seed": args.seed,
            "vaeac_train": {
                **vaeac_kwargs,
                "hidden": list(args.hidden),
                "mask_rate": 0.2,
                "scale": 1.0,
                "validation": "25 % of train rows, best IWAE epoch",
            },
            "vae_train": {"num_epochs": args.epochs, "early_stopping": "25 % of train rows"},
            "num_draws": args.num_draws,
        },
        "tables": {},
    }
    for name in args.tables:
        table = vq.datasets.load(name, "all")
        names = table.feature_names
        runs = []
        for r in range(args.repeats):
            data = split_and_hide(table.X, 0.5, args.seed, r)
            ac = impute_vaeac(names, data, args.seed, r, vaeac_kwargs, args.num_draws)
            vae = impute_vaequery(
                names, data, ["gaussian"], args.seed, r, {"num_epochs": args.epochs}
            )
            one = {
                "vaeac": {
                    "nrmse": nrmse(ac["x_hat"], data["test_true"], data["hidden"]),
                    "train_seconds": ac["train_seconds"],
                    "infer_seconds": ac["seconds"],
                    "best_epoch": ac["recipe"]["best_epoch"],
                    "epochs_run": ac["recipe"]["epochs_run"],
                },
                "vae_gaussian": {
                    "nrmse": nrmse(vae["gaussian"]["x_hat"], data["test_true"], data["hidden"]),
                    "train_seconds": vae["_train"]["seconds"],
                    "infer_seconds": vae["gaussian"]["seconds"],
                    "best_epoch": vae["_train"]["recipe"]["best_epoch"],
                },
            }
            runs.append(one)
            print(
                f"{name} repeat {r}: VAEAC {one['vaeac']['nrmse']:.3f}  "
                f"VAE+gaussian {one['vae_gaussian']['nrmse']:.3f}",
                flush=True,
            )
        res["tables"][name] = {
            "runs": runs,
            "summary": {
                m: {
                    "mean": float(np.mean([o[m]["nrmse"] for o in runs])),
                    "sd": float(np.std([o[m]["nrmse"] for o in runs])),
                }
                for m in ("vaeac", "vae_gaussian")
            },
            "published_vaeac": PUBLISHED.get(name, {}).get("VAEAC"),
        }
        write(res, args.out)
    return res


def markdown(res):
    """The NRMSE table beside the paper's."""
    p = res["protocol"]
    lines = [
        "# VAEAC in vaequery on VAEAC's imputation protocol",
        "",
        f"50 % MCAR in train and test, 3:1 split, {p['repeats']} repeat(s), seed {p['seed']}; "
        f"NRMSE (lower is better), mean ± sd over repeats. Device: {res['device']}, "
        f"{res['cpu_count']} CPUs (shared).",
        "",
        "| table | VAEAC (paper) | VAEAC (vaequery) | VAE + gaussian VI (vaequery) |",
        "|---|---|---|---|",
    ]
    for name, t in res["tables"].items():
        pub = t["published_vaeac"]
        pub_s = "—" if pub is None else f"{pub[0]:.3f} ± {pub[1]:.3f}"
        s = t["summary"]
        lines.append(
            f"| {name} | {pub_s} | {s['vaeac']['mean']:.3f} ± {s['vaeac']['sd']:.3f} | "
            f"{s['vae_gaussian']['mean']:.3f} ± {s['vae_gaussian']['sd']:.3f} |"
        )
    tr = p["vaeac_train"]
    lines += [
        "",
        f"VAEAC: latent {tr['latent_dim']}, hidden {tr['hidden']}, at most {tr['num_epochs']} "
        f"epochs (patience {tr['patience']}), training masks of rate 0.2, sigma fixed at 1, "
        f"best validation-IWAE epoch on 25 % of the train rows; imputation = mean of "
        f"{p['num_draws']} draws. VAE: `vq.train` defaults with at most "
        f"{p['vae_train']['num_epochs']} epochs, then `infer('gaussian')`.",
        "",
        "Training seconds are wall time on the machine above (shared with other jobs); the "
        "first repeat includes compilation.",
        "",
        "| table | repeat | VAEAC best/run epochs | VAEAC train s | VAE best epoch | VAE train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in res["tables"].items():
        for r, o in enumerate(t["runs"]):
            a, v = o["vaeac"], o["vae_gaussian"]
            lines.append(
                f"| {name} | {r} | {a['best_epoch']}/{a['epochs_run']} | "
                f"{a['train_seconds']:.0f} | {v['best_epoch']} | {v['train_seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def write(res, out):
    """Write ``results/<out>.json`` and ``.md``."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"{out}.md").write_text(markdown(res))


def main():
    """Parse the command line, run, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=["white_wine"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=30)
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--hidden", nargs="+", type=int, default=[128, 128])
    ap.add_argument("--num-draws", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="vaeac")
    args = ap.parse_args()
    run(args)


if __name__ == "__main__":
    main()
