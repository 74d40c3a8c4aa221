"""Posterior reporting: NRMSE against a hand computation, summary, ArviZ, plot."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def post_and_truth(oracle):
    _, x = oracle.sample(5, 6)
    observed = np.zeros_like(x, bool)
    observed[:, :4] = True
    post = oracle.vae().given(np.where(observed, x, np.nan)).predict(
        target=np.arange(8) >= 5
    ).infer("gaussian", key=0, num_draws=50, num_steps=100)
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
