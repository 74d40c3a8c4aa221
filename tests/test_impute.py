"""Point and multiple imputation (``post.impute``) and Rubin's rules (``vq.rubin``).

The imputations are checked against the exact Gaussian conditional of
linear-Gaussian oracles: ``x_U | x_O`` has mean ``W mu + b`` and covariance
``W P W^T + sigma^2 I`` (``mu, P`` the exact latent posterior). "fullrank" is
exact in family, so its errors are Monte-Carlo: with ``S`` draws the mean's
sd is ``sd / sqrt(S)``; with ``m`` tables a variance estimate has relative sd
``sqrt(2 / m)``.
"""

import numpy as np
import pytest

import vaequery as vq
from vaequery.testing import LinearGaussian


def _oracle_rows(seed, D, d, sigma, n=6):
    lin = LinearGaussian.random(seed, num_features=D, latent_dim=d, sigma=sigma)
    _, x = lin.sample(seed + 1, n)
    obs = np.random.default_rng(seed + 2).random(x.shape) < 0.5
    obs[:, 0] = True  # every row has evidence and
    obs[:, 1] = False  # something to impute
    return lin, x, obs


def _exact_predictive(lin, x, obs):
    mu, P = lin.posterior(x, obs)
    W = np.asarray(lin.W)
    mean = mu @ W.T + np.asarray(lin.b)
    var = np.einsum("ja,nab,jb->nj", W, P, W) + lin.sigma**2
    return mean, var


@pytest.fixture(
    scope="module", params=[(0, 6, 2, 0.5), (3, 8, 3, 0.2)], ids=["d2_sigma0.5", "d3_sigma0.2"]
)
def fitted(request):
    seed, D, d, sigma = request.param
    lin, x, obs = _oracle_rows(seed, D, d, sigma)
    post = lin.vae().given(np.where(obs, x, np.nan)).infer("fullrank", key=seed, num_draws=1000)
    return lin, x, obs, post


def test_point_imputation_is_the_exact_conditional_mean(fitted):
    lin, x, obs, post = fitted
    mean, var = _exact_predictive(lin, x, obs)
    for kind in ["mean", "median"]:
        imp = post.impute(kind=kind)
        np.testing.assert_allclose(imp[obs], x[obs], rtol=1e-6)  # evidence kept (float32)
        # |error| in predictive sd: MC sd of the mean of 1,000 draws is 0.032
        # (the median's 0.04), plus the fit's own bias
        err = np.abs(imp - mean)[~obs] / np.sqrt(var[~obs])
        assert err.max() < 0.2, (kind, err.max())


def test_multiple_imputation_spreads_as_the_exact_predictive(fitted):
    lin, x, obs, post = fitted
    mean, var = _exact_predictive(lin, x, obs)
    tables = post.impute(m=400, key=1)
    assert tables.shape == (400,) + x.shape
    np.testing.assert_allclose(tables[:, obs], np.broadcast_to(x[obs], (400, obs.sum())), rtol=1e-6)
    ratio = tables.var(0, ddof=1)[~obs] / var[~obs]
    # relative sd of a 400-draw variance: 0.07 -> 4 sd is 0.28
    assert 0.7 < ratio.min() and ratio.max() < 1.35, ratio
    z = (tables.mean(0) - mean)[~obs] / np.sqrt(var[~obs])
    assert np.abs(z).max() < 0.25


def test_rubin_pooling_of_a_mean_covers_the_truth():
    # 40 rows of one oracle column half missing; analyse each completed table by its
    # column mean and pool: the pooled variance must exceed the complete-data one
    # (missing information) and the interval must hold the exact answer
    lin = LinearGaussian.random(5, num_features=4, latent_dim=1, sigma=0.3)
    _, x = lin.sample(6, 40)
    obs = np.ones(x.shape, bool)
    obs[::2, 2] = False
    post = lin.vae().given(np.where(obs, x, np.nan)).infer("fullrank", key=0, num_draws=200)
    tables = post.impute(m=50, key=2)
    col = tables[:, :, 2]
    pooled = vq.rubin(col.mean(1), col.var(1, ddof=1) / col.shape[1])
    assert pooled.fmi > 0.05 and pooled.variance > pooled.within
    lo, hi = pooled.interval(0.99)
    assert lo < x[:, 2].mean() < hi


def test_rubin_against_hand_computation():
    q = np.array([[1.0, 2.0], [1.2, 2.0], [0.8, 2.0]])
    u = np.array([[0.04, 0.01], [0.05, 0.01], [0.03, 0.01]])
    p = vq.rubin(q, u)
    np.testing.assert_allclose(p.estimate, [1.0, 2.0])
    np.testing.assert_allclose(p.within, [0.04, 0.01])
    np.testing.assert_allclose(p.between, [0.04, 0.0], atol=1e-12)
    np.testing.assert_allclose(p.variance, [0.04 + 4 / 3 * 0.04, 0.01])
    np.testing.assert_allclose(p.df, [2 * 1.75**2, np.inf])
    np.testing.assert_allclose(p.fmi, [4 / 7, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        vq.rubin([1.0], [0.1])
    with pytest.raises(ValueError, match="same shape"):
        vq.rubin([1.0, 2.0], [0.1])


def test_impute_refuses_what_it_cannot_do(fitted):
    lin, x, obs, post = fitted
    with pytest.raises(ValueError, match="num_draws >= 2000"):
        post.impute(m=2000)
    with pytest.raises(ValueError, match="positive int"):
        post.impute(m=0)
    with pytest.raises(ValueError, match="kind"):
        post.impute(kind="mode")
    frame = post.impute(as_frame=True)
    assert list(frame.columns) == lin.vae().schema.names


def test_summary_gives_level_probabilities_of_discrete_targets():
    # feature "b"'s logits do not depend on z: its predictive is softmax(c) exactly,
    # whatever the evidence on "a" (whose logits do depend on z)
    import jax.numpy as jnp

    c = jnp.array([0.5, -1.0, 1.5])

    def decode(z):
        a = z[..., :1] * jnp.array([1.0, 0.0, -1.0])
        return jnp.stack([a, jnp.broadcast_to(c, a.shape)], -2)

    levels = ("lo", "mid", "hi")
    feats = [vq.Feature(n, "categorical", num_levels=3, levels=levels) for n in "ab"]
    model = vq.from_decoder(decode, 1, feats, likelihood="categorical")
    post = model.given(a="hi").predict("b").infer("fullrank", key=0, num_draws=4000)
    table = post.summary()
    assert list(table.index) == ["b=lo", "b=mid", "b=hi"]
    exact = np.exp(c) / np.exp(c).sum()
    # 4,000 draws: sd of a share <= 0.008
    np.testing.assert_allclose(table["mean"].to_numpy(), exact, atol=0.035)
    assert table["sd"].isna().all()
    completed = post.impute()
    assert completed[0, 0] == 2 and completed[0, 1] == int(np.argmax(exact))  # the mode
