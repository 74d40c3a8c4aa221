"""The ``vaequery`` command: the demo, and a CSV -> ``train`` -> ``query`` round trip."""

import re

import numpy as np
import pandas as pd
import pytest

import vaequery as vq
from vaequery.cli import main


def test_demo_writes_pngs(tmp_path, capsys):
    # --no-cache: the test process's JAX config must stay as the suite set it
    assert main(["--no-cache", "demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("breast_cancer_posterior.png", "digits_inpainting.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        assert name in out
    assert "quality" in out and "density" in out and "worst_area" in out
    assert "body_mass_g" in out and "Gentoo" in out  # the mixed model, asked by level name


# ------------------------------------------------ vaequery train --csv / query


@pytest.fixture(scope="module")
def csv_model(tmp_path_factory):
    """A 30-row CSV (3 real, 1 binary, 1 text column) and a model trained 2 epochs on it."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 60, 30).round()
    df = pd.DataFrame(
        {
            "age": age,
            "income": (age * 1000 + rng.normal(0, 3000, 30)).round(),
            "spend": rng.normal(4000, 300, 30).round(1),
            "region": rng.choice(["south", "north"], 30),
            "member": rng.integers(0, 2, 30),
        }
    )
    df.loc[3, "spend"] = np.nan
    df.to_csv(root / "data.csv", index=False)
    argv = ["--no-cache", "train", "--csv", str(root / "data.csv"), "--out", str(root / "m")]
    rc = main(argv + ["--epochs", "2", "--latent-dim", "2", "--hidden", "16", "--no-progress"])
    return root, df, rc


def test_train_csv_infers_the_schema_and_saves(csv_model, capsys):
    root, df, rc = csv_model
    assert rc == 0
    vae = vq.load(root / "m")
    assert vae.schema.kinds == ["real", "real", "real", "categorical", "binary"]
    assert vae.schema.features[3].levels == ("north", "south")
    # scaling from the training rows only: 4 of 30 rows (seeded shuffle) are held out
    train_rows = df.iloc[np.random.RandomState(0).permutation(30)[4:]]
    np.testing.assert_allclose(vae.schema.loc[:3], train_rows[["age", "income", "spend"]].mean())
    assert vae.metadata["recipe"]["num_train"] == 26 and vae.metadata["recipe"]["num_val"] == 4


def test_query_answers_by_name_and_level_and_plots(csv_model, capsys):
    root, _, _ = csv_model
    png = root / "q.png"
    argv = ["--no-cache", "query", "--model", str(root / "m"), "--given", "age=40"]
    argv += ["income=52000", "region=south", "--predict", "spend", "member", "--plot", str(png)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "given age=40, income=52000, region=south" in out
    assert "spend" in out and "hdi_97%" in out
    line = next(x for x in out.splitlines() if x.startswith("member:"))
    probs = [float(t.split()[-1]) for t in line[len("member:") :].split(",")]
    assert len(probs) == 2 and sum(probs) == pytest.approx(1.0, abs=0.011)
    assert png.stat().st_size > 5_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["query", "--model", "{m}", "--given", "agee=40"],
            r"unknown feature\(s\) \['agee'\]; "
            r"known features: \['age', 'income', 'spend', 'region', 'member'\]",
        ),
        (["query", "--model", "{m}", "--predict", "spent"], "known features: .*'spend'"),
        (["query", "--model", "{m}", "--given", "region=west"], r"no level 'west'.*'north'"),
        (["query", "--model", "{m}", "--given", "age"], "NAME=VALUE"),
        (["query", "--model", "{m}", "--backend", "gauss"], "unknown backend 'gauss'.*gaussian"),
        (["query", "--model", "{root}/nothing"], r"no model at .*nothing.*shipped: \[.*penguins"),
        (
            ["train", "--csv", "{root}/none.csv", "--out", "{root}/x"],
            "no such CSV file: .*none.csv",
        ),
        (
            ["train", "--csv", "{root}/data.csv", "--out", "{root}/x", "--kinds", "agr=real"],
            r"unknown columns \['agr'\]",
        ),
        (
            ["train", "--csv", "{root}/data.csv", "--out", "{root}/x", "--kinds", "age=text"],
            "unknown kind",
        ),
        (["train", "iris", "--out", "{root}/x"], "no shipped recipe for .*--csv"),
    ],
)
def test_mistakes_exit_2_with_an_actionable_message(csv_model, capsys, argv, message):
    root, _, _ = csv_model
    argv = [a.format(root=root, m=root / "m") for a in argv]
    assert main(["--no-cache", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vaequery {argv[0]}: error: ") and re.search(message, err), err


@pytest.mark.parametrize("command, flags", [("train", "--csv"), ("query", "--given")])
def test_help(command, flags, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert flags in out and "example:" in out
