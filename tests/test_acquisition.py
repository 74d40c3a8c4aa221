"""Active feature acquisition against the linear-Gaussian oracle's closed form.

On the oracle the posterior after measuring ``x_i`` is Gaussian with a
covariance that does not depend on the measured value, so the expected
entropy of every candidate is exact: ``0.5 log det Sigma_{O+i} + d/2 log(2 pi e)``
for the full-covariance family and, for the mean-field family, the entropy of
its optimum (variances ``1 / diag(Sigma_{O+i}^{-1})``). The greedy choice is the
argmin of those numbers, computed here in NumPy, independently of vaequery.
"""

import math
import pickle

import numpy as np
import pytest

import vaequery as vq
from vaequery import acquisition
from vaequery.acquisition import FeatureChoice, next_feature
from vaequery.testing import LinearGaussian

K = 6  # imagined values per candidate
LOOK = None  # the defaults: 200 warm-started steps at peak learning rate 0.2
HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)


def exact_expected_entropy(oracle, observed, family):
    """``[N, D]`` exact entropies after measuring each feature (NaN if observed)."""
    W, s2, d = oracle.W, oracle.sigma**2, oracle.latent_dim
    N, D = observed.shape
    out = np.full((N, D), np.nan)
    for n in range(N):
        for j in np.flatnonzero(~observed[n]):
            m = observed[n].copy()
            m[j] = True
            prec = np.eye(d) + W[m].T @ W[m] / s2
            if family == "fullrank":
                logdet_cov = -np.linalg.slogdet(prec)[1]
            else:  # mean-field optimum: variances 1 / diag(precision)
                logdet_cov = -np.sum(np.log(np.diag(prec)))
            out[n, j] = 0.5 * logdet_cov + d * HALF_LOG_2PIE
    return out


def random_evidence(oracle, n, seed, rate):
    _, x = oracle.sample(seed, n)
    rng = np.random.default_rng(seed + 1)
    observed = rng.random(x.shape) < rate
    observed[:, 0] = False  # every feature is a candidate in some row
    return x, observed


# two oracles of different dimensions, noise levels and evidence
ORACLES = {
    "D8_d3_s0.4": (LinearGaussian.random(3, num_features=8, latent_dim=3, sigma=0.4), 0.3),
    "D10_d2_s0.8": (LinearGaussian.random(11, num_features=10, latent_dim=2, sigma=0.8), 0.2),
}
# one VAE per oracle: tests on the same oracle and shapes share compiled programs
VAES = {name: oracle.vae() for name, (oracle, _) in ORACLES.items()}


@pytest.fixture(scope="module", params=sorted(ORACLES))
def fullrank_case(request):
    oracle, rate = ORACLES[request.param]
    x, observed = random_evidence(oracle, 8, seed=5, rate=rate)
    vae = VAES[request.param]
    q = vae.given(np.where(observed, x, np.nan))
    choice = next_feature(q, num_samples=K, backend="fullrank", key=0, lookahead=LOOK)
    return oracle, vae, observed, choice


def test_fullrank_expected_entropies_are_exact(fullrank_case):
    oracle, vae, observed, choice = fullrank_case
    cols = [vae.schema.index(c) for c in choice.candidates]
    exact = exact_expected_entropy(oracle, observed, "fullrank")[:, cols]
    assert np.array_equal(np.isnan(exact), np.isnan(choice.expected_entropy))
    err = np.nan_to_num(choice.expected_entropy - exact)
    # SGD noise of 200 warm-started Adam steps with 20 samples: a few hundredths of a nat
    assert np.abs(err).max() < 0.08, np.abs(err).max()
    # the current entropy is the exact posterior's too
    prec = np.eye(oracle.latent_dim) + np.einsum(
        "nj,ja,jb->nab", observed.astype(float), oracle.W, oracle.W
    ) / (oracle.sigma**2)
    h_now = -0.5 * np.linalg.slogdet(prec)[1] + oracle.latent_dim * HALF_LOG_2PIE
    np.testing.assert_allclose(choice.entropy, h_now, atol=0.08)


def test_fullrank_picks_the_closed_form_feature(fullrank_case):
    oracle, vae, observed, choice = fullrank_case
    exact = exact_expected_entropy(oracle, observed, "fullrank")
    srt = np.sort(np.where(np.isnan(exact), np.inf, exact), 1)
    clear = srt[:, 1] - srt[:, 0] > 0.15  # rows whose best candidate is clear of MC noise
    assert clear.sum() >= 4, "pick an oracle whose choice is not a near-tie"
    best = np.nanargmin(exact, 1)
    assert np.array_equal(choice.column[clear], best[clear])
    assert [vae.feature_names[j] for j in best[clear]] == list(np.array(choice.feature)[clear])


def test_greedy_beats_random_order():
    name = "D10_d2_s0.8"
    oracle, vae = ORACLES[name][0], VAES[name]
    _, x = oracle.sample(21, 8)
    observed = np.zeros(x.shape, bool)
    candidates = vae.feature_names
    # the model, shapes and settings of fullrank_case: its greedy program is reused
    kw = dict(num_samples=K, backend="fullrank", lookahead=LOOK, candidates=candidates)
    budget = 3
    greedy = vq.acquire(vae, x, budget=budget, key=1, **kw)
    randoms = [vq.acquire(vae, x, budget=budget, strategy="random", key=k, **kw) for k in (1, 2)]
    # the same key fits the same first posterior
    np.testing.assert_allclose(greedy.rmse[0], randoms[0].rmse[0], rtol=1e-6)
    random_mean = np.mean([r.rmse[1:] for r in randoms], 0)
    assert greedy.rmse[1:].mean() < random_mean.mean() - 0.05, (greedy.rmse, random_mean)
    random_full = np.mean([r.rmse_full[1:] for r in randoms], 0)
    assert greedy.rmse_full[1:].mean() < random_full.mean() - 0.05
    # nothing measured yet: the whole-row RMSE is the RMSE of the unmeasured features
    np.testing.assert_allclose(greedy.rmse_full[0], greedy.rmse[0], rtol=1e-9)
    # the first greedy step from nothing observed is the closed-form choice
    cols = np.arange(len(candidates))
    first = exact_expected_entropy(oracle, np.zeros_like(observed), "fullrank")[0, cols]
    srt = np.sort(first)
    if srt[1] - srt[0] > 0.15:
        assert np.all(greedy.order[:, 0] == cols[np.argmin(first)])
    # every step acquires a distinct, previously unobserved feature per row
    assert all(len(set(f)) == budget for f in greedy.features)
    assert greedy.observed.sum() == x.shape[0] * budget
    assert greedy.seconds.shape == (budget,)
    pickle.loads(pickle.dumps(greedy))


def test_choice_is_deterministic_and_pickles(fullrank_case, monkeypatch):
    oracle, vae, observed, choice = fullrank_case
    x, _ = random_evidence(oracle, observed.shape[0], seed=5, rate=0.0)
    q = vae.given(np.where(observed, x, np.nan))
    traced = []
    original = acquisition._fit_current
    monkeypatch.setattr(acquisition, "_fit_current", lambda *a: traced.append(1) or original(*a))
    again = q.next_feature(num_samples=K, backend="fullrank", key=0, lookahead=LOOK)
    np.testing.assert_array_equal(again.expected_entropy, choice.expected_entropy)
    assert not traced, "a second call of the same shape must not retrace"
    back = pickle.loads(pickle.dumps(choice))
    assert isinstance(back, FeatureChoice) and back.feature == choice.feature
    assert np.all(choice.information_gain[~np.isnan(choice.expected_entropy)] > 0)


def test_bad_input_is_named():
    oracle, _ = ORACLES["D8_d3_s0.4"]
    vae = oracle.vae()
    q = vae.given(x0=1.0)
    with pytest.raises(ValueError, match="analytic entropy"):
        next_feature(q, backend="iaf")
    with pytest.raises(ValueError, match="no_such"):
        next_feature(q, candidates=["no_such"])
    with pytest.raises(TypeError, match="lookahead"):
        next_feature(q, lookahead={"bogus": 1})
    X = np.zeros((2, 8))
    X[1, 4] = np.nan
    with pytest.raises(ValueError, match="'x4' in row 1"):
        vq.acquire(vae, X, budget=1)
    with pytest.raises(ValueError, match="strategy"):
        vq.acquire(vae, np.zeros((2, 8)), budget=1, strategy="best")
