"""Command line: ``vaequery demo``, ``train``, ``query`` and ``compare``.

``vaequery demo [--out DIR]`` answers a few queries with the shipped models and
writes two PNGs; ``vaequery train --csv data.csv --out model/ [--latent-dim 4]
[--epochs 300] [--kinds grade=categorical ...]`` trains a model on your own table
(schema inferred: see :func:`vaequery.schema.infer_schema`) and saves it;
``vaequery train NAME ... --out DIR`` retrains shipped models with their recipes
(see :mod:`vaequery.train`); ``vaequery query --model model/ --given age=40
colour=red --predict spend --backend gaussian [--plot out.png]`` answers one
query with a saved folder or a shipped model; ``vaequery compare --model
white_wine --backends gaussian,mixture,nuts --rows 200 --missing half --out
results/`` runs :func:`vaequery.compare` on a shipped model's test rows and
writes the table (markdown + CSV) and the plots.

Mistakes a shell user can fix (a missing file, an unknown feature, level or
backend) end with exit status 2 and one line on stderr naming what was wrong
and what is accepted.

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


def _demo_penguins(vq, key: int):
    vae = vq.pretrained("penguins")
    q = vae.given(species="Gentoo", island="Biscoe").predict("body_mass_g", "flipper_length_mm")
    post = q.infer("gaussian", key=key)
    print("\n(d) penguins (mixed kinds): given(species='Gentoo', island='Biscoe')")
    print(post.summary().round(1).to_string())


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
    """Run the demo queries (four shipped models); returns the PNG paths written."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import vaequery as vq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = [_demo_breast_cancer(vq, out, key)]
    _demo_white_wine(vq, key)
    paths.append(_demo_digits(vq, out, key))
    _demo_penguins(vq, key)
    print(f"\nwrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.1f} s)")
    return paths


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def _train(names, out, key, progress):
    from vaequery.train import PRETRAINED_RECIPES, train_pretrained

    unknown = sorted(set(names or ()) - set(PRETRAINED_RECIPES))
    if unknown:
        raise UsageError(
            f"no shipped recipe for {unknown}; known: {sorted(PRETRAINED_RECIPES)} "
            "(to train on your own table use --csv FILE)"
        )
    for name in names or list(PRETRAINED_RECIPES):
        vae = train_pretrained(name, out, key=key, progress=progress)
        print(f"{name}: test ELBO {vae.metadata['test_elbo']:.3f} -> {Path(out) / name}")


def _read_csv(path):
    import pandas as pd

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"no such CSV file: {p}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {p} as CSV: {e}") from None
    if len(df) < 2:
        raise UsageError(f"{p} has {len(df)} data rows; training needs at least 2")
    return df


def _parse_pairs(items, what):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{what} takes NAME=VALUE pairs (e.g. age=40), got {item!r}")
        out[name] = value
    return out


def _train_csv(args):
    """``vaequery train --csv``: infer the schema, train, save, say how to query."""
    import vaequery as vq
    from vaequery.schema import KINDS, infer_schema

    df = _read_csv(args.csv)
    kinds = _parse_pairs(args.kinds, "--kinds")
    unknown = sorted(set(kinds) - set(df.columns))
    if unknown:
        raise UsageError(f"--kinds names unknown columns {unknown}; the CSV has {list(df.columns)}")
    bad = {k: v for k, v in kinds.items() if v not in KINDS}
    if bad:
        raise UsageError(f"--kinds: unknown kind(s) {bad}; accepted: {list(KINDS)}")
    drop = [c for c in args.drop if c not in df.columns]
    if drop:
        raise UsageError(f"--drop names unknown columns {drop}; the CSV has {list(df.columns)}")
    df = df.drop(columns=list(args.drop))
    try:
        schema = infer_schema(df, kinds=kinds)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    for f in schema:
        if f.kind == "categorical" and f.num_levels > max(20, len(df) // 2):
            print(
                f"vaequery train: warning: column {f.name!r} has {f.num_levels} distinct values "
                f"in {len(df)} rows (an identifier?); leave it out with --drop {f.name}",
                file=sys.stderr,
            )
    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    perm = np.random.RandomState(args.key).permutation(len(df))
    n_val = int(round(args.val_fraction * len(df))) if len(df) >= 20 else 0
    val, tr = df.iloc[perm[:n_val]], df.iloc[perm[n_val:]]
    schema = _scaled_by(schema, tr)
    try:
        hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    except ValueError:
        raise UsageError(f"--hidden takes widths like 128,128, got {args.hidden!r}") from None
    if not hidden or min(hidden) < 1 or args.latent_dim < 1 or args.epochs < 1:
        raise UsageError("--hidden widths, --latent-dim and --epochs must be positive integers")
    vae = vq.train(
        tr,
        val if n_val else None,
        schema=schema,
        latent_dim=args.latent_dim,
        hidden=hidden,
        num_epochs=args.epochs,
        patience=args.patience,
        key=args.key,
        progress=not args.no_progress,
        name=Path(args.csv).stem,
    )
    out = vae.save(args.out)
    counts = {k: schema.kinds.count(k) for k in KINDS if schema.kinds.count(k)}
    r = vae.metadata["recipe"]
    elbo = vae.metadata["val_elbo"] if n_val else vae.metadata["train_elbo"]
    print(
        f"trained on {len(tr)} rows ({n_val} held out for early stopping): "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" features, latent_dim {vae.latent_dim}, {r['epochs_run']} epochs "
        f"(best {r['best_epoch']}), {'val' if n_val else 'train'} ELBO {elbo:.3f}"
    )
    for f in schema:
        if f.levels:
            print(f"  {f.name} ({f.kind}): levels {list(f.levels)}")
    print(f"saved to {out}; ask it: vaequery query --model {out} --given NAME=VALUE --predict NAME")
    return vae


def _scaled_by(schema, rows):
    """``schema`` (kinds and levels from the whole table) with real scaling from ``rows``."""
    import dataclasses

    from vaequery.schema import Schema

    feats = []
    for f in schema:
        vals = rows[f.name].to_numpy(float) if f.kind == "real" else np.array([])
        vals = vals[~np.isnan(vals)]
        if vals.size:  # else keep the whole table's scaling
            sd = float(vals.std())
            f = dataclasses.replace(f, loc=float(vals.mean()), scale=sd if sd > 0 else 1.0)
        feats.append(f)
    return Schema(tuple(feats))


def _load_model(spec):
    import vaequery as vq
    from vaequery.io import MODEL_FILE, available_pretrained

    p = Path(spec).expanduser()
    if (p / MODEL_FILE).is_file() or (p.name == MODEL_FILE and p.is_file()):
        try:
            return vq.load(p)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
    shipped = available_pretrained()
    if spec in shipped:
        return vq.pretrained(spec)
    raise UsageError(
        f"no model at {p} (a folder written by 'vaequery train' holding {MODEL_FILE}) and "
        f"{spec!r} is not a shipped model; shipped: {shipped}"
    )


def _level_table(post, vae, name):
    """``[(level, probability)]`` of a binary/categorical target, most likely first."""
    from vaequery.report.imputation import level_probabilities

    f = vae.schema.features[vae.schema.index(name)]
    labels = f.levels or tuple(str(k) for k in range(f.num_levels))
    p = level_probabilities(post)[name][0]
    return sorted(zip(labels, p), key=lambda t: -t[1])


def _evidence_value(feature, text):
    """A ``--given`` value: a level name when the feature has that level, else a number."""
    if text in feature.levels:
        return text
    try:
        return float(text)
    except ValueError:
        return text  # the query names the accepted levels or says a number is needed


def _query(args):
    """``vaequery query``: one query on a saved or shipped model, answered and printed."""
    from vaequery.backends import available as backends

    vae = _load_model(args.model)
    if args.backend not in backends():
        raise UsageError(f"unknown backend {args.backend!r}; available: {backends()}")
    given = _parse_pairs(args.given, "--given")
    names = list(given) + list(args.predict)
    unknown = [n for n in names if n not in vae.feature_names]
    if unknown:
        raise UsageError(f"unknown feature(s) {unknown}; known features: {vae.feature_names}")
    given = {
        k: _evidence_value(vae.schema.features[vae.schema.index(k)], v) for k, v in given.items()
    }
    try:
        q = vae.given(**given)
        if args.predict:
            q = q.predict(*args.predict)
    except (TypeError, ValueError) as e:  # UnknownFeatureError, a level that does not exist
        raise UsageError(str(e)) from None
    post = q.infer(args.backend, key=args.key)
    evidence = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in given.items()
    )
    evidence = evidence or "nothing"
    print(f"given {evidence}; backend {args.backend}, {np.asarray(post.x).shape[-2]} draws")
    table = post.summary()
    kinds = {f.name: f.kind for f in vae.schema}
    real = [n for n in table.index if kinds.get(n) == "real"]
    if real:
        print(table.loc[real].to_string(float_format=lambda v: f"{v:.4g}"))
    for n in args.predict or [f.name for f in vae.schema if f.name not in given]:
        if kinds[n] != "real":
            probs = ", ".join(f"{lvl} {pr:.2f}" for lvl, pr in _level_table(post, vae, n))
            print(f"{n}: {probs}")
    if args.plot:
        post.plot(args.plot)
        print(f"wrote {args.plot}")
    return post


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
    t = sub.add_parser(
        "train",
        help="train a model on your CSV (--csv), or retrain shipped models",
        description="Train a VAE on a CSV table and save it (--csv FILE --out FOLDER), or "
        "retrain shipped models with their recipes (NAME ... --out DIR). Kinds are "
        "inferred: text columns are categorical (levels sorted), 0/1 columns binary, other "
        "numbers real (standardised with the training rows); empty cells are missing.",
        epilog="example: vaequery train --csv penguins.csv --out penguins_model "
        "--kinds year=categorical --epochs 200",
    )
    t.add_argument("names", nargs="*", help="shipped datasets to retrain (default: all)")
    t.add_argument("--csv", help="your table: a CSV file with a header row")
    t.add_argument(
        "--out", required=True, help="model folder (--csv) or folder for NAME/ model folders"
    )
    t.add_argument("--latent-dim", type=int, default=4, help="latent size d (default 4)")
    t.add_argument("--epochs", type=int, default=300, help="most epochs (default 300)")
    t.add_argument("--patience", type=int, default=30, help="early-stopping patience (epochs)")
    t.add_argument("--hidden", default="128,128", help="hidden widths (default 128,128)")
    t.add_argument(
        "--kinds",
        nargs="+",
        default=[],
        metavar="COL=KIND",
        help="override inferred kinds: real, binary or categorical (e.g. grade=categorical)",
    )
    t.add_argument("--drop", nargs="+", default=[], metavar="COL", help="columns to leave out")
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="rows held out for early stopping (default 0.15; none below 20 rows)",
    )
    t.add_argument("--key", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    qp = sub.add_parser(
        "query",
        help="ask a saved or shipped model one question",
        description="Condition a model on evidence and predict features. Values of "
        "categorical features are given by level name (species=Gentoo).",
        epilog="example: vaequery query --model penguins --given species=Gentoo "
        "island=Biscoe --predict body_mass_g sex",
    )
    qp.add_argument(
        "--model", required=True, help="a folder from 'vaequery train' or a shipped name"
    )
    qp.add_argument(
        "--given", nargs="*", default=[], metavar="NAME=VALUE", help="evidence (default: none)"
    )
    qp.add_argument(
        "--predict", nargs="*", default=[], metavar="NAME", help="targets (default: the rest)"
    )
    qp.add_argument("--backend", default="gaussian", help="inference backend (default gaussian)")
    qp.add_argument("--plot", default=None, metavar="PNG", help="write the marginals here")
    qp.add_argument("--key", type=int, default=0)
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
    try:
        if args.command == "demo":
            demo(args.out, args.key)
        elif args.command == "train" and args.csv:
            if args.names:
                raise UsageError(
                    f"give either --csv FILE or shipped names, not both (got {args.names})"
                )
            _train_csv(args)
        elif args.command == "train":
            _train(args.names, args.out, args.key, not args.no_progress)
        elif args.command == "query":
            _query(args)
        elif args.command == "compare":
            _compare(args)
    except UsageError as e:
        print(f"vaequery {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
