"""Posterior reporting: NRMSE against a hand computation, summary, ArviZ, plot, to_pandas."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def post_and_truth(oracle):
    _, x = oracle.sample(5, 6)
    observed = np.zeros_like(x, bool)
    observed[:, :4] = True
    post = (
        oracle.vae()
        .given(np.where(observed, x, np.nan))
        .predict(target=np.arange(8) >= 5)
        .infer("gaussian", key=0, num_draws=50, num_steps=100)
    )
    return post, x


def test_nrmse_min_and_mean(post_and_truth):
    post, x = post_and_truth
    err = post.x[:, :, 5:] - x[:, None, 5:]
    per_draw = np.sqrt((err**2).mean(-1))
    np.testing.assert_allclose(post.nrmse(x, "min"), per_draw.min(1), rtol=1e-5)
    mean_err = post.x[:, :, 5:].mean(1) - x[:, 5:]
    np.testing.assert_allclose(post.nrmse(x, "mean"), np.sqrt((mean_err**2).mean(-1)), rtol=1e-5)
    with pytest.raises(ValueError, match="reduce must be"):
        post.nrmse(x, "median")


def test_true_values_are_required_for_targets(post_and_truth):
    post, x = post_and_truth
    bad = x.copy()
    bad[3, 6] = np.nan
    with pytest.raises(ValueError, match="target feature 'x6' in row 3"):
        post.log_likelihood(bad)


def test_summary_has_one_row_per_target(post_and_truth):
    post, _ = post_and_truth
    s = post.summary()
    assert list(s.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert len(s) == 6 * 3
    row = s.loc[(2, "x6")]
    draws = post.x[2, :, 6]
    assert row["mean"] == pytest.approx(draws.mean(), rel=1e-5)
    assert row["hdi_3%"] <= np.median(draws) <= row["hdi_97%"]
    inside = ((draws >= row["hdi_3%"]) & (draws <= row["hdi_97%"])).mean()
    assert 0.9 <= inside <= 0.98


def test_to_arviz_groups_and_shapes(post_and_truth):
    post, _ = post_and_truth
    idata = post.to_arviz()
    for g in ("posterior", "posterior_predictive", "observed_data"):
        assert g in idata.groups()
    z = idata.posterior["z"]
    assert dict(z.sizes) == {"chain": 1, "draw": 50, "query": 6, "latent": 3}
    assert set(idata.posterior_predictive.data_vars) == {"x5", "x6", "x7"}


def test_plot_writes_a_file(post_and_truth, tmp_path):
    post, _ = post_and_truth
    path = tmp_path / "marginals.png"
    post.plot(path)
    assert path.stat().st_size > 5000


def test_to_pandas_is_tidy_and_in_raw_units(post_and_truth, oracle):
    post, _ = post_and_truth
    df = post.to_pandas(latent=True)
    N, S = post.z.shape[:2]
    assert list(df.columns) == ["query", "draw", "x5", "x6", "x7", "z_0", "z_1", "z_2"]
    assert len(df) == N * S
    row = df[(df["query"] == 4) & (df["draw"] == 7)]
    assert len(row) == 1
    # independent of the posterior's own unstandardising: the oracle decodes
    # E[x | z] = W z + b in raw units, from the latent columns of the same row
    z = df[["z_0", "z_1", "z_2"]].to_numpy()
    expected = z @ oracle.W.T + oracle.b
    np.testing.assert_allclose(df[["x5", "x6", "x7"]].to_numpy(), expected[:, 5:], atol=1e-4)
    assert list(post.to_pandas().columns) == ["query", "draw", "x5", "x6", "x7"]


def test_to_pandas_leaves_non_targets_empty(oracle):
    _, x = oracle.sample(3, 2)
    X = np.where(np.arange(8) < 4, x, np.nan)
    target = np.zeros_like(X, bool)
    target[0, 5], target[1, 6] = True, True
    post = (
        oracle.vae()
        .given(X)
        .predict(target=target)
        .infer("gaussian", key=1, num_draws=5, num_steps=20)
    )
    df = post.to_pandas()
    assert list(df.columns) == ["query", "draw", "x5", "x6"]
    assert df.loc[df["query"] == 0, "x6"].isna().all()
    assert df.loc[df["query"] == 1, "x5"].isna().all()
    np.testing.assert_allclose(df.loc[df["query"] == 1, "x6"], post.x[1, :, 6], rtol=1e-6)


def test_plot_draws_kde_marginals_and_marks_the_truth(post_and_truth):
    post, x = post_and_truth
    fig = post.plot(query=1, X_true=x)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["x5", "x6", "x7"]
    for ax, j in zip(axes, (5, 6, 7)):
        assert not [p for p in ax.patches if type(p).__name__ == "Rectangle"]  # no histogram
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert any(np.allclose(ln.get_xdata(), x[1, j]) for ln in dashed)
        # the KDE is a curve over the draws' range
        curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 50]
        assert curves
        xs, draws = curves[0].get_xdata(), post.x[1, :, j]
        # plot_density draws the KDE over the 94 % HDI of the draws
        assert draws.min() - 1e-6 <= xs.min() < xs.max() <= draws.max() + 1e-6
        assert np.ptp(xs) >= 0.6 * np.ptp(draws)
    with pytest.raises(ValueError, match="target feature 'x6' in row 3"):
        bad = x.copy()
        bad[3, 6] = np.nan
        post.plot(X_true=bad)
