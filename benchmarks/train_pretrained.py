"""Train every model shipped in ``vaequery/pretrained/`` (reproducible, CPU, a few minutes).

Usage::

    python benchmarks/train_pretrained.py [--out vaequery/pretrained] [--only NAME ...]
        [--guides-only]

Each model is trained with :func:`vaequery.train.train_pretrained` (recipes in
``vaequery.train.PRETRAINED_RECIPES``: QAVI's 128-128 MLPs, Adam 1e-3, batch 64,
at most 300 epochs with early stopping on the validation ELBO, key 0) and saved
with its held-out test ELBO in ``metrics.json``, then its amortized guides are
trained (``vaequery.train.GUIDE_RECIPES``: posterior matching and the re-tuned
encoder) and saved with it; ``--guides-only`` retrains just the guides of the
models already in ``--out``. A summary goes to
``benchmarks/results/pretrained.json`` and ``.md`` (with ``--only``, the rows
of the models not retrained are kept). ``penguins`` is a mixed model (real and
categorical features, Gaussian and categorical likelihood heads). Same code, same key, same
weights (up to XLA's floating-point non-determinism across machines).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import vaequery
from vaequery.train import PRETRAINED_RECIPES, train_pretrained, train_pretrained_guides

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "vaequery" / "pretrained"))
    p.add_argument("--only", nargs="*", default=None, help="train only these names")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--guides-only", action="store_true", help="keep the models, retrain guides")
    args = p.parse_args(argv)
    names = args.only or list(PRETRAINED_RECIPES)
    rows = []
    t_all = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        if args.guides_only:
            vae = vaequery.load(Path(args.out) / name)
        else:
            vae = train_pretrained(name, args.out, key=0, progress=not args.no_progress)
        t1 = time.perf_counter()
        train_pretrained_guides(vae, name, key=0, progress=not args.no_progress)
        vae.save(Path(args.out) / name)
        guide_seconds = {g: vae.guides[g].info["train_seconds"] for g in sorted(vae.guides)}
        r = vae.metadata["recipe"]
        rows.append(
            {
                "dataset": name,
                "features": vae.num_features,
                "latent_dim": vae.latent_dim,
                "train/val/test rows": f"{r['num_train']}/{r['num_val']}/{r['num_test']}",
                "epochs (best)": f"{r['epochs_run']} ({r['best_epoch']})",
                "test_elbo": round(vae.metadata["test_elbo"], 3),
                "test_elbo_per_feature": round(vae.metadata["test_elbo"] / vae.num_features, 3),
                "model seconds": round(t1 - t0, 1) if not args.guides_only else r["train_seconds"],
                "guide seconds": ", ".join(f"{g} {v}" for g, v in guide_seconds.items()),
                "guide steps": ", ".join(
                    f"{g} {vae.guides[g].info['best_step']}/{vae.guides[g].info['steps_run']}"
                    for g in sorted(vae.guides)
                ),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]))
    total = round(time.perf_counter() - t_all, 1)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    if args.only and (out / "pretrained.json").exists():
        # --only retrains some models: keep the other models' rows of the summary
        trained = {r["dataset"] for r in rows}
        old = json.loads((out / "pretrained.json").read_text()).get("models", [])
        rows = [r for r in old if r["dataset"] not in trained] + rows
        total = round(sum(float(r.get("seconds", 0)) for r in rows), 1)
    info = {
        "vaequery_version": vaequery.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "total_seconds": total,
        "models": rows,
    }
    (out / "pretrained.json").write_text(json.dumps(info, indent=2) + "\n")
    cols = list(rows[0])
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    md.append(f"\nTotal: {total} s (ELBO: nats per row, standardised units, 16 draws).")
    (out / "pretrained.md").write_text("\n".join(md) + "\n")
    print(f"total {total} s; models in {args.out}")


if __name__ == "__main__":
    main()
