"""A bimodal 2-D posterior (exact by grid quadrature): the mixture and the IAF
must beat mean-field Gaussian VI clearly.

Decoder ``g(z) = (z1 z2, z1 + z2, z1^2 - z2^2)``, sigma 0.2; only ``x0 = z1 z2``
is observed, so the posterior lies on both branches of a hyperbola. Measured
with the default budgets (S = 100, T = 300), 8 queries, ``KL(q || p)`` from
4,000 draws of each ``q`` against the exact grid posterior (nats, mean over
queries; see docs/backends_vi.md):

=========  ==========  =======================================
backend    KL(q || p)  |IWAE error| of log p(x_U | x_O), S=1000
=========  ==========  =======================================
gaussian   1.63        87    (one branch: the other's x_U is missed)
iaf        0.72        0.41  (S=100, T=300: 0.81, 0.43; before the full-rank base: 0.74, 29)
mixture    0.13        0.08  (before the stratified estimator: 0.25)
=========  ==========  =======================================

Comparisons are made with 4 Monte-Carlo standard errors on either side.
"""

import jax
import numpy as np
import pytest

from vaequery.testing import GridOracle2D, LinearGaussian, quadrant

M = 4000
C = np.array([1.0, 1.5, 0.6, 2.0, -1.0, 1.2, 0.8, -1.5])


@pytest.fixture(scope="module")
def problem():
    o = GridOracle2D.bimodal()
    x = np.zeros((len(C), 3))
    x[:, 0] = C
    obs = np.zeros_like(x, bool)
    obs[:, 0] = True
    # true targets from a point on the hyperbola
    zt = np.stack([np.sqrt(np.abs(C)), np.sign(C) * np.sqrt(np.abs(C))], -1)
    xt = o._decode(zt)
    xt[:, 0] = C
    return o, x, obs, xt


@pytest.fixture(scope="module")
def results(problem):
    o, x, obs, xt = problem
    q = o.vae().given(np.where(obs, x, np.nan))
    exact = o.log_likelihood(xt, obs, ~obs)
    out = {}
    for name in ["gaussian", "iaf", "mixture"]:
        post = q.infer(name, key=0)
        f = jax.jit(jax.vmap(lambda s, k, b=post.backend: b.sample_and_log_prob(s, k, M)))
        z, log_q = f(post.state, jax.random.split(jax.random.key(5), len(C)))
        kl, se = o.reverse_kl(np.asarray(z), np.asarray(log_q), x, obs)
        ll = post.log_likelihood(xt, num_samples=1000, key=3)
        out[name] = (kl.mean(), np.sqrt(np.sum(se**2)) / len(C), np.abs(ll - exact).mean())
    return out


@pytest.mark.parametrize("name", ["iaf", "mixture"])
def test_beats_mean_field_on_bimodal_posterior(results, name):
    kl_g, se_g, ll_g = results["gaussian"]
    kl, se, ll = results[name]
    assert kl + 4 * se < kl_g - 4 * se, results
    assert kl_g - kl > 0.5, results  # clearly: more than half a nat
    assert ll < ll_g / 2, results


def test_mixture_covers_both_modes(results):
    # the exact posterior is two mirror-image modes: a q on one branch pays
    # at least log 2 nats; the mixture must not
    kl, se, ll = results["mixture"]
    assert kl + 4 * se < np.log(2), results
    assert ll < results["gaussian"][2] / 100, results


def test_grid_oracle_agrees_with_linear_gaussian():
    lin = LinearGaussian.random(7, num_features=5, latent_dim=2, sigma=0.6)
    grid = GridOracle2D(lin.decode, 5, lin.sigma, lim=8.0)
    _, x = lin.sample(0, 6)
    obs = np.random.default_rng(1).random(x.shape) < 0.5
    np.testing.assert_allclose(
        grid.log_likelihood(x, obs, ~obs), lin.log_likelihood(x, obs, ~obs), atol=2e-5
    )
    mean, cov = grid.posterior(x, obs)
    mu, sigma = lin.posterior(x, obs)
    np.testing.assert_allclose(mean, mu, atol=2e-5)
    np.testing.assert_allclose(cov, sigma, atol=2e-5)


# ---------------------------------------------------------------------------
# Every mode found, with its exact mass (GridOracle2D.multimodal: two mirror
# modes, kinked modes, a hyperbola, a ring, four modes, unequal modes). Before
# the stratified estimator and the weight refit, the mixture's mode masses were
# off by 0.12-0.28 on average over these shapes (up to 0.5: a mode missing) and
# its IWAE of log p(x_O) by up to 0.3 nats (benchmarks/results/mixture_modes.md).
# The four-mode shape gets 12 queries: with components started at the prior's
# width around the centre (before the spread start), one four-mode query in
# six to nine left a quadrant without a component (mass error 0.25, IWAE gap
# log(4/3) = 0.29); these 12 queries had two such misses (measured).
# Monte-Carlo honesty: a mass share from 2,000 draws has sd <= 0.011, far inside
# the 0.1 bound (a missed mode costs about 0.25); the IWAE gap is bounded below
# by 0 up to its own sd (~0.01). Fits of the same decoder share one compiled
# program (one batch of 27 queries).

Z_MODES = np.array([[1.2, -0.4], [-0.7, 1.1], [1.6, 0.9]])
Z_FOUR = np.random.default_rng(4).standard_normal((12, 2)) * 0.8 + [[0.5, 0.5]]


@pytest.fixture(scope="module")
def modes():
    o = GridOracle2D.multimodal()
    rng = np.random.default_rng(0)
    xs, obs, shapes = [], [], []
    for shape, idx in o.MULTIMODAL_QUERIES.items():
        zs = Z_FOUR if shape == "four" else Z_MODES
        x = o._decode(zs) + o.sigma * rng.standard_normal((len(zs), o.num_features))
        m = np.zeros_like(x, bool)
        m[:, list(idx)] = True
        xs.append(x)
        obs.append(m)
        shapes += [shape] * len(zs)
    x, obs = np.concatenate(xs), np.concatenate(obs)
    post = o.vae().given(np.where(obs, x, np.nan)).infer("mixture", key=0)
    draw = jax.jit(jax.vmap(lambda s, k, b=post.backend: b.sample_and_log_prob(s, k, 2000)))
    z, log_q = map(np.asarray, draw(post.state, jax.random.split(jax.random.key(1), len(x))))
    return o, x, obs, np.array(shapes), z, log_q


def test_mixture_gives_every_mode_its_exact_mass(modes):
    o, x, obs, shapes, z, _ = modes
    half, quad = o.quadrant_masses(x, obs)
    qz = quadrant(z)
    err = np.abs((qz >= 2).mean(-1) - half[:, 1])  # z1 > 0 against z1 < 0
    four = shapes == "four"
    err[four] = np.max([np.abs((qz[four] == k).mean(-1) - quad[four, k]) for k in range(4)], 0)
    assert (quad[four] > 0.2).all()  # the four-mode queries really have four modes
    report = {s: err[shapes == s].round(3).tolist() for s in o.MULTIMODAL_QUERIES}
    # the goal, 0.1, for every query with separate modes; on the ring the
    # half-plane share depends on how ten diagonal components tile it (a query of
    # radius 1.8 is nearly a thin ring): measured up to 0.14 on 36 ring queries
    ring = shapes == "ring"
    assert err[~ring].max() < 0.1, report
    assert err[ring].max() < 0.15, report


def test_mixture_iwae_matches_grid_on_multimodal_posteriors(modes):
    o, x, obs, shapes, z, log_q = modes
    log_px = o.log_marginal(x, obs)
    lw = o.log_posterior(z, x, obs) + log_px[:, None] - log_q
    iwae = np.asarray(jax.scipy.special.logsumexp(lw, -1)) - np.log(lw.shape[-1])
    gap = log_px - iwae
    report = {s: gap[shapes == s].round(3).tolist() for s in o.MULTIMODAL_QUERIES}
    # compact, separate modes: every query within the 0.1 nats (a
    # quadrant without a component costs log(4/3) = 0.29)
    compact = np.isin(shapes, ["even", "abs", "four", "skewed"])
    assert gap[compact].max() < 0.1, report
    assert gap[compact].min() > -0.05, report  # not above the truth
    # a long curved ridge (the hyperbola) and a ring are tiled, not covered, by
    # ten diagonal components: the query z = (1.6, 0.9) on the hyperbola
    # measured 0.15 on average over 16 starts (range -0.02 to 0.28; 0.18 with
    # the previous uniform start), so only the mean over the 6 queries is bounded
    assert gap[~compact].mean() < 0.15, report


# ---------------------------------------------------------------------------
# Gaussian posteriors: the mixture must not over-disperse, and the IAF (which
# contains every full-rank Gaussian) must be as accurate as "fullrank". Before:
# the mixture's largest variance ratio was 2.9 and the IAF's largest correlation
# error 0.66 on these oracles (fullrank 0.07). 2,000 draws: a variance ratio has
# relative sd 0.03 and a correlation sd <= 0.022, so the bounds 1.3 and 0.1
# leave room for Monte-Carlo error and catch the faults.


@pytest.fixture(scope="module", params=[(3, 8, 0.3, 0), (4, 10, 0.2, 1)], ids=["d3", "d4"])
def gaussian_fits(request):
    d, D, sigma, seed = request.param
    lin = LinearGaussian.random(seed, num_features=D, latent_dim=d, sigma=sigma)
    _, x = lin.sample(seed + 100, 24)
    rng = np.random.default_rng(seed + 7)
    obs = np.zeros(x.shape, bool)
    for r in range(len(x)):
        obs[r, rng.permutation(D)[: D // 2]] = True
    mu, P = lin.posterior(x, obs)
    q = lin.vae().given(np.where(obs, x, np.nan))
    out = {}
    for name in ["mixture", "iaf", "fullrank"]:
        post = q.infer(name, key=seed)
        draw = jax.jit(jax.vmap(lambda s, k, b=post.backend: b.sample_and_log_prob(s, k, 2000)))
        z = np.asarray(draw(post.state, jax.random.split(jax.random.key(2), len(x)))[0], float)
        m = z.mean(1)
        Q = np.einsum("nsa,nsb->nab", z - m[:, None], z - m[:, None]) / (z.shape[1] - 1)
        out[name] = (m, Q)
    return mu, P, out


def _correlation(C):
    s = np.sqrt(np.diagonal(C, 0, 1, 2))
    return C / s[:, :, None] / s[:, None, :]


def test_mixture_does_not_over_disperse(gaussian_fits):
    mu, P, out = gaussian_fits
    _, Q = out["mixture"]
    ratio = np.diagonal(Q, 0, 1, 2) / np.diagonal(P, 0, 1, 2)
    assert ratio.max() < 1.3, ratio.max()


def test_iaf_as_accurate_as_fullrank_on_gaussian_posteriors(gaussian_fits):
    mu, P, out = gaussian_fits
    err = {n: np.abs(_correlation(out[n][1]) - _correlation(P)).max() for n in ["iaf", "fullrank"]}
    assert err["iaf"] < 0.1, err
    assert err["iaf"] < err["fullrank"] + 0.05, err
    # the means too, in posterior standard deviations
    d = out["iaf"][0] - mu
    assert np.sqrt(np.einsum("na,nab,nb->n", d, np.linalg.inv(P), d)).max() < 0.2


# ---------------------------------------------------------------------------
# Re-initialisation of collapsed components ("birth"). With collapsed components
# restarted from the start's design (near the prior's centre), one four-mode
# query in 36 kept a quadrant empty (benchmarks/results/mixture_modes.md: a
# component restarted at step 100 sits where the evidence on z1 is flat and
# rolls to an occupied mode or to the saddle between two). A birth puts it where
# log p(x_O, z) - log q(z) is largest among draws from the start: in the empty
# quadrant. Checked on a hand-built mixture covering three of the four exact
# modes (z1 = +-sqrt(0.36), z2 = +-sqrt(3.1), from the grid), two components
# collapsed: the first birth lands in the missing quadrant, near its mode.


def test_collapsed_components_are_reborn_in_a_missed_mode():
    from vaequery.backends.mixture import Mixture
    from vaequery.fit import prepare

    o = GridOracle2D.multimodal()
    x = np.full((1, o.num_features), np.nan)
    x[0, 0], x[0, 4] = 0.36, 3.1  # z1^2 and z2^2: one mode per quadrant
    mean, _ = o.posterior(np.nan_to_num(x), ~np.isnan(x))
    assert np.abs(mean).max() < 0.05  # four symmetric modes
    half, quad = o.quadrant_masses(np.nan_to_num(x), ~np.isnan(x))
    assert np.allclose(quad, 0.25, atol=0.01)
    backend, target, keys, *_ = prepare(o.vae().given(x), "mixture", 0, None, None, {})
    row = jax.tree.map(lambda a: a[0], target.data)
    modes = np.array([[0.6, 1.76], [-0.6, 1.76], [0.6, -1.76]])  # (-, -) is missed
    loc = np.concatenate([np.repeat(modes, [3, 3, 2], 0), [[0.0, 0.4], [0.3, 0.0]]])
    log_scale = np.log(np.concatenate([np.full((8, 2), 0.06), np.ones((2, 2))]))
    logits = np.log(np.concatenate([np.full(8, 0.125), [1e-4, 1e-4]]))
    params = {"loc": loc, "log_scale": log_scale, "logits": logits}
    params = jax.tree.map(lambda a: jax.numpy.asarray(a, "float32"), params)
    for design, found in [("birth", True), ("start", False)]:
        b = Mixture(reinit_design=design)
        state = b.init_state(jax.random.key(0), target, row)._replace(params=params)
        new = b.after_step(state, 20, jax.random.key(1), target, row).params
        born = np.asarray(new["loc"][8:])
        assert np.allclose(new["loc"][:8], loc[:8]) and np.allclose(new["logits"], 0.0)
        in_missed = (born[:, 0] < 0) & (born[:, 1] < -1.2)
        assert in_missed[0] == found, (design, born.round(2).tolist())
