"""Mean-field Gaussian VI against the exact linear-Gaussian (PPCA) answers.

Tolerances are Monte-Carlo ones: the fitted mean must be as accurate as the
average of ``N_EQ`` exact posterior draws (|error| <= 4 sd / sqrt(N_EQ)) and the
fitted variance as accurate as the sample variance of ``N_EQ`` draws
(relative error <= 4 sqrt(2 / (N_EQ - 1))). The IWAE tolerance comes from the
exact variance of the importance weights (``importance_relative_variance``).
"""

import numpy as np
import pytest

from vaequery.testing import LinearGaussian, importance_relative_variance

N_EQ = 1000


@pytest.fixture(scope="module")
def fitted(oracle, oracle_batch):
    x, observed = oracle_batch
    post = oracle.vae().given(np.where(observed, x, np.nan)).infer("gaussian", key=0)
    return post


def test_means_match_mean_field_optimum(oracle, oracle_batch, fitted):
    x, observed = oracle_batch
    mu, var = oracle.mean_field(x, observed)
    loc = np.asarray(fitted.state["loc"])
    z_err = np.abs(loc - mu) / np.sqrt(var)
    assert z_err.max() < 4 / np.sqrt(N_EQ), z_err.max()


def test_variances_match_mean_field_optimum(oracle, oracle_batch, fitted):
    x, observed = oracle_batch
    _, var = oracle.mean_field(x, observed)
    fitted_var = np.exp(2 * np.asarray(fitted.state["log_scale"]))
    rel = np.abs(fitted_var / var - 1)
    assert rel.max() < 4 * np.sqrt(2 / (N_EQ - 1)), rel.max()


def test_draws_and_imputations(oracle, oracle_batch, fitted):
    x, observed = oracle_batch
    assert fitted.z.shape == (64, 100, 3) and fitted.x.shape == (64, 100, 8)
    # imputations are the decoder mean W z + b of each draw (oracle in NumPy)
    expect = fitted.z @ oracle.W.T + oracle.b
    target = ~observed
    np.testing.assert_allclose(
        fitted.x[np.broadcast_to(target[:, None], expect.shape)],
        expect[np.broadcast_to(target[:, None], expect.shape)],
        rtol=1e-4, atol=1e-4,
    )
    # observed values are copied through untouched
    np.testing.assert_allclose(fitted.x[:, 5][observed], x[observed], rtol=1e-6)
    # the draws' sample mean is the fitted mean within 4 standard errors
    loc = np.asarray(fitted.state["loc"])
    sd = np.exp(np.asarray(fitted.state["log_scale"]))
    z = (fitted.z.mean(1) - loc) / (sd / np.sqrt(100))
    assert np.abs(z).max() < 4.5


def test_iwae_matches_exact_log_likelihood():
    # A well-conditioned oracle so that the mean-field proposal has finite
    # importance-weight variance on every row (checked below, exactly).
    oracle = LinearGaussian.random(5, num_features=12, latent_dim=2, sigma=0.7)
    _, x = oracle.sample(3, 64)
    observed = np.random.default_rng(4).random(x.shape) < 0.5
    post = oracle.vae().given(np.where(observed, x, np.nan)).infer("gaussian", key=1)
    S = 4000
    ll = post.log_likelihood(x, num_samples=S, key=2)
    exact = oracle.log_likelihood(x, observed, ~observed)

    q_mean = np.asarray(post.state["loc"], float)
    q_cov = np.eye(2) * np.exp(2 * np.asarray(post.state["log_scale"], float))[:, None, :]
    r_obs = importance_relative_variance(*oracle.posterior(x, observed), q_mean, q_cov)
    r_joint = importance_relative_variance(
        *oracle.posterior(x, np.ones_like(observed)), q_mean, q_cov
    )
    finite = np.isfinite(r_obs) & np.isfinite(r_joint)
    assert finite.mean() > 0.9
    tol = 4 * (np.sqrt(r_obs / S) + np.sqrt(r_joint / S)) + (r_obs + r_joint) / (2 * S)
    err = np.abs(ll - exact)[finite]
    assert (err < tol[finite] + 1e-3).all(), (err - tol[finite]).max()
    # and it is not trivially loose: the estimate is informative
    assert np.abs(ll - exact).mean() < 0.05 * np.abs(exact).mean()


def test_all_unobserved_row_gives_the_prior(oracle):
    post = oracle.vae().given(np.full(8, np.nan)).infer("gaussian", key=3)
    loc = np.asarray(post.state["loc"])[0]
    sd = np.exp(np.asarray(post.state["log_scale"]))[0]
    assert np.abs(loc).max() < 4 / np.sqrt(N_EQ)
    assert np.abs(sd**2 - 1).max() < 4 * np.sqrt(2 / (N_EQ - 1))


def test_beta_changes_the_optimum(oracle, oracle_batch):
    # With a beta-weighted KL the optimum of the Gaussian case is the posterior
    # of a likelihood tempered by 1/beta: precision I + W_O^T W_O / (beta s^2).
    x, observed = oracle_batch
    x, observed = x[:16], observed[:16]
    beta = 4.0
    post = oracle.vae().given(np.where(observed, x, np.nan)).infer(
        "gaussian", key=0, beta=beta
    )
    tempered = LinearGaussian(oracle.W, oracle.b, oracle.sigma * np.sqrt(beta))
    mu, var = tempered.mean_field(x, observed)
    loc = np.asarray(post.state["loc"])
    assert (np.abs(loc - mu) / np.sqrt(var)).max() < 4 / np.sqrt(N_EQ)
