"""``vq.compare``: the exact grid against a VI backend on a linear-Gaussian
oracle, the table and per-query values, plots, files, bad input, the CLI."""

import numpy as np
import pytest

import vaequery as vq
from vaequery.cli import main
from vaequery.compare import CompileClock
from vaequery.testing import LinearGaussian

ORACLE = LinearGaussian.random(7, num_features=5, latent_dim=2, sigma=0.4)


@pytest.fixture(scope="module")
def comparison():
    _, x = ORACLE.sample(3, 6)
    obs = np.random.default_rng(3).random(x.shape) < 0.5
    obs[:, 0] = True  # every row has a target and evidence
    obs[:, 1] = False
    comp = vq.compare(
        ORACLE.vae(),
        np.where(obs, x, np.nan),
        x,
        backends=["grid", "gaussian"],
        key=1,
        num_samples=200,
        gaussian={"num_steps": 60, "num_samples": 8},
    )
    return comp, x, obs


def test_table_holds_the_exact_answer_and_the_gap(comparison):
    comp, x, obs = comparison
    t = comp.table
    assert list(t.index) == ["grid", "gaussian"]
    for col in ["log_lik", "log_lik_gap", "nrmse_min", "nrmse_mean", "compile_s", "answer_s"]:
        assert col in t.columns
    exact = ORACLE.log_likelihood(x, obs, ~obs)
    np.testing.assert_allclose(comp.per_query.loc["grid", "log_lik"], exact, atol=1e-3)
    assert abs(t.loc["grid", "log_lik"] - exact.mean()) < 1e-3
    assert t.loc["grid", "log_lik_gap"] == 0.0
    # 60 steps of mean-field VI lose likelihood against the truth, but an IWAE
    # estimate cannot beat it by more than its Monte-Carlo error
    assert t.loc["gaussian", "log_lik_gap"] > -0.05
    # the per-query values are the posterior's own metrics
    post = comp.posteriors["gaussian"]
    np.testing.assert_allclose(
        comp.per_query.loc["gaussian", "nrmse_mean"], post.nrmse(x, "mean"), rtol=1e-6
    )
    assert ((t["compile_s"] >= 0) & (t["answer_s"] > 0) & (t["queries_per_s"] > 0)).all()
    assert t["khat_gt_0.7"].between(0, 1).all() and (t["failed"] == 0).all()
    assert t.loc["grid", "khat_gt_0.7"] == 0.0  # the grid density is a near-perfect proposal
    assert "| grid |" in comp.to_markdown() and "Comparison(" in repr(comp)


def test_plots_and_files(comparison, tmp_path):
    import matplotlib.pyplot as plt

    comp, _, _ = comparison
    paths = comp.save(tmp_path, query=1)
    for key in ("markdown", "csv", "per_query_csv", "plot", "forest"):
        assert paths[key].stat().st_size > 100
    fig = comp.plot(query=2)
    assert len([a for a in fig.axes if a.get_visible()]) >= 2
    plt.close("all")
    with pytest.raises(ValueError, match="kind must be"):
        comp.plot(kind="histogram")
    with pytest.raises(IndexError, match="out of range"):
        comp.plot(query=99)


def test_compile_clock_counts_only_compilation():
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda a: jnp.sin(a) * 3.0 + 1.25)
    with CompileClock() as first:
        f(jnp.ones(17)).block_until_ready()
    with CompileClock() as second:
        f(jnp.ones(17)).block_until_ready()
    assert first.seconds > 0 and second.seconds == 0


def test_bad_input_is_named():
    vae = ORACLE.vae()
    X = np.full((2, 5), np.nan)
    with pytest.raises(ValueError, match=r"unknown backend 'gausian'; available: .*'gaussian'"):
        vq.compare(vae, X, backends=["gausian"])
    with pytest.raises(TypeError, match=r"options given for \['nuts'\]"):
        vq.compare(vae, X, backends=["gaussian"], nuts={"num_warmup": 10})
    with pytest.raises(ValueError, match="given twice"):
        vq.compare(vae, X, backends=["gaussian", "gaussian"])
    with pytest.raises(ValueError, match="backends is empty"):
        vq.compare(vae, X, backends=[])
    with pytest.raises(ValueError, match="latent_dim <= 2"):
        vq.compare(LinearGaussian.random(0, 4, 3).vae(), X[:, :4], backends=["grid"])


def test_cli_writes_tables_and_plots(tmp_path, capsys):
    args = ["--no-cache", "compare", "--model", "banknote", "--backends", "gaussian"]
    args += ["--rows", "4", "--num-samples", "20", "--out", str(tmp_path), "--no-progress"]
    args += ["--option", "gaussian.num_steps=5", "--option", "gaussian.num_samples=4"]
    assert main(args) == 0
    assert "| gaussian |" in capsys.readouterr().out
    for name in ("compare.md", "compare.csv", "compare_per_query.csv", "compare.png"):
        assert (tmp_path / name).stat().st_size > 100
