"""Interval evidence, composed queries and their words, against exact answers.

Every reference here is computed independently of vaequery: the interval
probability with ``scipy.stats.norm`` in float64, and the posterior of ``z``
under interval evidence by quadrature in NumPy on a fine grid (1-D and 2-D
latents of a linear-Gaussian decoder, where
``p(z | x_O, lo <= x_k <= hi) ∝ N(z; 0, I) N(x_O; W_O z + b_O, s^2)
(Phi((hi - w_k z - b_k)/s) - Phi((lo - w_k z - b_k)/s))``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import vaequery as vq
from vaequery.likelihoods import Gaussian, Mixed
from vaequery.schema import Feature, Schema
from vaequery.testing import LinearGaussian

SIGMA = 0.5
# raw units differ from model units: evidence must be standardised like point evidence
FEATURES = [Feature("a", loc=10.0, scale=2.0), Feature("b", loc=-1.0, scale=0.5), Feature("c")]


def _log_p_in(lo, hi, mu, s):
    """float64 ``log P(lo <= N(mu, s^2) <= hi)`` from scipy, tails by reflection."""
    a, b = (lo - mu) / s, (hi - mu) / s
    with np.errstate(divide="ignore", invalid="ignore"):
        up_a, up_b = norm.logsf(a), norm.logsf(b)
        dn_b, dn_a = norm.logcdf(b), norm.logcdf(a)
        upper = up_a + np.log1p(-np.exp(up_b - up_a))
        lower = dn_b + np.log1p(-np.exp(dn_a - dn_b))
    return np.where(a + b > 0, upper, lower)


def _grid_posterior(lg, points, intervals, lim=9.0, n=200_001):
    """Exact ``(mean, sd, log p(evidence))`` of ``z`` by quadrature (model units).

    ``points``: ``{j: x_j}``; ``intervals``: ``{j: (lo, hi)}``. 1-D: ``n`` nodes;
    2-D: ``sqrt``-many per axis.
    """
    d = lg.latent_dim
    if d == 1:
        g = np.linspace(-lim, lim, n)[:, None]
    else:
        t = np.linspace(-lim, lim, 601)
        g = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    cell = (g[1, -1] - g[0, -1]) ** d if d == 1 else (t[1] - t[0]) ** 2
    mean_x = g @ lg.W.T + lg.b
    lj = norm.logpdf(g).sum(-1)
    for j, v in points.items():
        lj += norm.logpdf(v, mean_x[:, j], lg.sigma)
    for j, (lo, hi) in intervals.items():
        lj += _log_p_in(lo, hi, mean_x[:, j], lg.sigma)
    top = lj.max()
    w = np.exp(lj - top)
    ev = top + np.log(w.sum() * cell)
    w /= w.sum()
    mean = w @ g
    sd = np.sqrt(w @ (g - mean) ** 2)
    return mean, sd, ev


@pytest.fixture(scope="module")
def lg1():
    return LinearGaussian(np.array([[1.0], [0.8], [-0.6]]), np.array([0.2, -0.1, 0.3]), SIGMA)


@pytest.fixture(scope="module")
def vae1(lg1):
    return vq.from_decoder(lg1.decode, 1, FEATURES, scale=SIGMA)


@pytest.fixture(scope="module")
def lg2():
    W = np.array([[1.0, 0.3], [0.5, -0.9], [-0.6, 0.4]])
    return LinearGaussian(W, np.array([0.2, -0.1, 0.3]), SIGMA)


def _raw(j, v):
    f = FEATURES[j]
    return f.loc + f.scale * v


# ----------------------------------------------------------------- the term itself
@pytest.mark.parametrize(
    "lo, hi",
    [(-1.0, 1.0), (8.0, np.inf), (-np.inf, -8.0), (-np.inf, -37.0), (12.0, 13.0), (0.3, 0.3005)],
)
def test_gaussian_interval_log_prob_matches_scipy(lo, hi):
    loc = jnp.array([0.0, 1.5, -2.0])
    got = Gaussian(scale=0.7).log_prob_interval(
        jnp.full(3, lo), jnp.full(3, hi), loc, jnp.ones(3, bool)
    )
    want = _log_p_in(lo, hi, np.array([0.0, 1.5, -2.0]), 0.7).sum()
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), want, rtol=2e-6, atol=2e-4)


def test_tail_interval_log_prob_and_gradient_are_finite_and_exact():
    lik = Gaussian(scale=1.0)

    def f(loc):
        return lik.log_prob_interval(jnp.array([8.0]), jnp.array([jnp.inf]), loc, jnp.array([True]))

    v, g = jax.jit(jax.value_and_grad(f))(jnp.zeros(1))
    np.testing.assert_allclose(float(v), norm.logsf(8.0), rtol=1e-6)  # -35.0134
    # d/dloc log P(Z > 8 - loc) = phi(8) / Q(8)
    np.testing.assert_allclose(float(g[0]), np.exp(norm.logpdf(8.0) - norm.logsf(8.0)), rtol=1e-4)

    # masked-out entries with NaN bounds contribute nothing, gradients included
    def masked(m):
        lo, hi = jnp.array([jnp.nan, 0.0]), jnp.array([jnp.nan, 1.0])
        return lik.log_prob_interval(lo, hi, m, jnp.array([False, True]))

    h = jax.jit(jax.grad(masked))(jnp.zeros(2))
    assert np.isfinite(np.asarray(h)).all() and float(h[0]) == 0.0


def test_discrete_interval_is_an_exact_sum():
    """Bernoulli and categorical heads sum the codes inside the (inclusive) bounds."""
    schema = Schema(
        (
            Feature("r"),
            Feature("y", "binary"),
            Feature("n", "binary"),
            Feature("k", "categorical", 4),
        )
    )
    ks = np.array([0.3, 1.2, -0.5, -1.0])
    params = {
        "real": jnp.array([0.4]),
        "binary": jnp.array([-1.0, 2.0]),
        "categorical": jnp.asarray(ks)[None],
    }
    lo = jnp.array([0.0, 0.5, -np.inf, 0.5])  # r in [0, 1]; y = 1; n = 0; k in {1, 2}
    hi = jnp.array([1.0, np.inf, 0.0, 2.0])
    lik = Mixed(schema, scale=2.0)
    lm = jax.jit(lambda p: lik.log_prob_interval(lo, hi, p, jnp.ones(4, bool)))(params)
    pk = np.exp(ks) / np.exp(ks).sum()
    want = (
        _log_p_in(0.0, 1.0, 0.4, 2.0)
        + np.log(1 / (1 + np.exp(1.0)))
        + np.log(1 / (1 + np.exp(2.0)))
        + np.log(pk[1] + pk[2])
    )
    np.testing.assert_allclose(float(lm), want, rtol=1e-6)


def test_target_logdensity_matches_exact_in_a_batch(lg1, vae1):
    # rows with interval evidence on different features, one-sided and two-sided
    X = np.array(
        [
            [_raw(0, 0.7), vq.between(_raw(1, -0.5), _raw(1, 0.9)), np.nan],
            [vq.above(_raw(0, 3.0)), np.nan, 0.1],
            [np.nan, np.nan, vq.below(-4.5)],
        ],
        dtype=object,
    )
    q = vae1.given(X)
    t = q.target()
    zs = jnp.linspace(-3, 3, 7)[:, None]
    # every row at every z, as a backend evaluates them: vmapped rows, one jit
    per_row = jax.vmap(lambda row: jax.vmap(lambda z: t.loglik_fn(z, row))(zs))
    got = np.asarray(jax.jit(per_row)(t.data))
    mx = np.asarray(zs) @ lg1.W.T + lg1.b
    want = np.stack(
        [
            norm.logpdf(0.7, mx[:, 0], SIGMA) + _log_p_in(-0.5, 0.9, mx[:, 1], SIGMA),
            _log_p_in(3.0, np.inf, mx[:, 0], SIGMA) + norm.logpdf(0.1, mx[:, 2], SIGMA),
            _log_p_in(-np.inf, -4.5, mx[:, 2], SIGMA),
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert q.interval_mask.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert q.targets == [["c"], ["b"], ["a", "b"]]


# ------------------------------------------------------ posteriors, exact references
@pytest.mark.parametrize(
    "points, intervals",
    [
        ({0: 0.7}, {1: (-0.5, 0.9)}),  # two-sided
        ({}, {0: (4.0, np.inf)}),  # above(~3.6 marginal sd): far in the tail
        ({2: -0.2}, {0: (-np.inf, -1.0), 1: (0.0, 0.3)}),
    ],
)
def test_grid_posterior_matches_quadrature_1d(lg1, vae1, points, intervals):
    ev = {FEATURES[j].name: _raw(j, v) for j, v in points.items()}
    ev.update(
        {
            FEATURES[j].name: vq.between(_raw(j, lo), _raw(j, hi))
            for j, (lo, hi) in intervals.items()
        }
    )
    post = vae1.given(**ev).infer("grid", key=0, num_draws=20_000)
    mean, sd, log_ev = _grid_posterior(lg1, points, intervals)
    z = post.z[0, :, 0]
    assert abs(z.mean() - mean[0]) < 4 * sd[0] / np.sqrt(z.size)
    np.testing.assert_allclose(z.std(), sd[0], rtol=0.03)
    # the normaliser log p(x_O, lo <= x_I <= hi): the interval term, integrated
    np.testing.assert_allclose(float(post.info["log_evidence"][0]), log_ev, atol=2e-3)


def test_grid_posterior_matches_quadrature_2d_and_log_likelihood(lg2):
    vae = lg2.vae(names=["a", "b", "c"])
    q = vae.given(a=0.4, b=vq.above(1.0)).predict("c")
    post = q.infer("grid", key=1, num_draws=20_000)
    mean, sd, log_ev = _grid_posterior(lg2, {0: 0.4}, {1: (1.0, np.inf)})
    z = post.z[0]
    assert np.all(np.abs(z.mean(0) - mean) < 4 * sd / np.sqrt(len(z)))
    np.testing.assert_allclose(z.std(0), sd, rtol=0.03)
    np.testing.assert_allclose(float(post.info["log_evidence"][0]), log_ev, atol=2e-3)
    # log p(c | a, b > 1) = log p(a, b > 1, c) - log p(a, b > 1): both by quadrature
    c = -0.3
    _, _, log_joint = _grid_posterior(lg2, {0: 0.4, 2: c}, {1: (1.0, np.inf)})
    ll = post.log_likelihood(np.array([[0.4, np.nan, c]]))
    np.testing.assert_allclose(ll[0], log_joint - log_ev, atol=3e-3)


def test_gaussian_vi_finds_the_exact_reverse_kl_optimum(lg1, vae1):
    """Mean-field VI under interval evidence lands on argmin KL(q || p), found by quadrature."""
    from scipy.optimize import minimize

    t, wt = np.polynomial.hermite_e.hermegauss(80)
    wt = wt / wt.sum()

    def log_joint(z):
        mx = z[:, None] * lg1.W[:, 0] + lg1.b
        return (
            norm.logpdf(z)
            + norm.logpdf(0.7, mx[:, 0], SIGMA)
            + _log_p_in(-np.inf, -1.0, mx[:, 1], SIGMA)
        )

    def kl(p):  # E_q[log q - log p~]
        m, log_s = p
        return -log_s - wt @ log_joint(m + np.exp(log_s) * t)

    res = minimize(kl, [0.0, -1.0], method="BFGS", options={"gtol": 1e-9})
    m, log_s = res.x
    ev = {"a": _raw(0, 0.7), "b": vq.below(_raw(1, -1.0))}
    post = vae1.given(**ev).infer("gaussian", key=0, num_draws=4000, num_steps=400)
    z = post.z[0, :, 0]
    s = np.exp(log_s)
    assert abs(z.mean() - m) < 0.05 * s
    np.testing.assert_allclose(z.std(), s, rtol=0.05)
    # and the interval pulls the posterior: point evidence alone is elsewhere
    alone, _ = lg1.posterior(np.array([[0.7, 0, 0]]), np.array([[1, 0, 0]], bool))
    assert abs(alone[0, 0] - m) > 10 * 0.05 * s


# --------------------------------------------------------------- composition, words
def test_given_composes_and_leaves_the_old_query_unchanged(vae1):
    q = vae1.given(a=11.0)
    q2 = q.given(b=vq.between(-1.5, -0.5))
    assert q.observed == [{"a": 11.0}] and not q.has_intervals
    assert q.targets == [["b", "c"]]
    assert q2.observed[0]["a"] == 11.0 and q2.observed[0]["b"] == vq.between(-1.5, -0.5)
    assert q2.targets == [["c"]]  # default targets shrink by the new evidence
    assert repr(q2) == "Query: 1 row; given a = 11, b in [-1.5, -0.5]; predict c"
    q3 = q2.given(c=vq.above(0.2))
    assert q3.targets == [[]] and repr(q3).endswith("c >= 0.2; predict nothing")
    with pytest.raises(ValueError, match="'a' already has evidence in row 0"):
        q2.given(a=3.0)
    with pytest.raises(ValueError, match="'c' is a target in row 0"):
        q.predict("c").given(c=1.0)
    # composed == given at once, in the model's units
    once = vae1.given(a=11.0, b=vq.between(-1.5, -0.5))
    for k in ("x", "lo", "hi", "interval_mask", "observed_mask", "target_mask"):
        np.testing.assert_array_equal(getattr(q2, k), getattr(once, k))
    np.testing.assert_allclose(q2.lo[0, 1], (-1.5 + 1.0) / 0.5)  # standardised like values


def test_batch_given_per_row_bounds_and_repr(vae1):
    q = vae1.given(np.full((4, 3), np.nan)).given(a=vq.between([8, 9, 10, 11], 12.0))
    np.testing.assert_allclose(q.lo[:, 0], (np.array([8, 9, 10, 11]) - 10) / 2)
    np.testing.assert_allclose(q.hi[:, 0], 1.0)
    text = repr(q)
    assert text.splitlines()[0] == "Query: 4 rows"
    assert "row 1: given a in [9, 12]; predict b, c" in text and "1 more" in text


def test_table_cells_carry_intervals(vae1):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"c": [0.1, np.nan], "a": [vq.above(11.0), 9.0], "b": [np.nan, np.nan]})
    q = vae1.given(df)
    assert q.observed == [{"a": vq.above(11.0), "c": pytest.approx(0.1)}, {"a": 9.0}]


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "ev, match",
    [
        ({"a": vq.between(5, 5)}, r"feature 'a' in row 0 is \[5, 5\].*lower bound must be below"),
        ({"b": vq.between(np.nan, 1)}, "lower bound for feature 'b' in row 0 is NaN"),
        ({"c": vq.above(np.inf)}, "feature 'c' in row 0"),
        ({"c": vq.between("x", 1)}, "real feature 'c' in row 0 is the string 'x'"),
    ],
)
def test_bad_intervals_name_feature_and_row(vae1, ev, match):
    with pytest.raises(ValueError if "string" not in match else TypeError, match=match):
        vae1.given(**ev)


def test_discrete_interval_errors_and_refusing_backends():
    def dec(z):
        return {
            "real": z[..., :1],
            "binary": z[..., :1],
            "categorical": jnp.stack([z, -z, 0 * z], -1),  # [..., 1, 3]
        }

    schema = Schema(
        (
            Feature("r"),
            Feature("y", "binary"),
            Feature("k", "categorical", 3, levels=("lo", "mid", "hi")),
        )
    )
    vae = vq.from_decoder(dec, 1, schema, "mixed")
    q = vae.given(k=vq.between("mid", "hi"), y=vq.above(0.5))
    assert q.observed == [{"y": vq.between(0.5, np.inf), "k": vq.between("mid", "hi")}]
    np.testing.assert_array_equal(q.lo[0, 1:], [0.5, 1.0])
    with pytest.raises(ValueError, match="binary feature 'y' in row 0 contains none of its codes"):
        vae.given(y=vq.between(0.2, 0.8))
    with pytest.raises(ValueError, match="'k' has interval evidence and is a target in row 0"):
        q.predict("k")
    with pytest.raises(ValueError, match="backend 'mwg' reads only point evidence.*'y'"):
        q.infer("mwg")


# ------------------------------------------------- soft constraints, exact references
# A quadratic factor on a linear function of the decoded mean is a Gaussian
# likelihood term on z: with x_raw = s * (W z + b) + loc and
# f(x) = -0.5 ((a . x_raw - c) / tau)^2 = -0.5 ((u . z + k - c) / tau)^2,
# u = W^T (a * s), k = a . (s * b + loc), the posterior of z stays Gaussian:
# precision I + W_O^T W_O / sigma^2 + u u^T / tau^2, computed here in NumPy.
def _factor_posterior(lg, feats, points, a, c, tau):
    """Exact ``(mean [d], cov [d, d])`` given raw ``points {j: x_j}`` and the factor."""
    s = np.array([f.scale for f in feats])
    loc = np.array([f.loc for f in feats])
    W, b, s2 = lg.W, lg.b, lg.sigma**2
    obs = np.array(sorted(points))
    xo = (np.array([points[j] for j in obs]) - loc[obs]) / s[obs]  # model units
    u = W.T @ (a * s)
    k = a @ (s * b + loc)
    prec = np.eye(lg.latent_dim) + np.outer(u, u) / tau**2
    h = u * (c - k) / tau**2
    if obs.size:
        prec += W[obs].T @ W[obs] / s2
        h += W[obs].T @ (xo - b[obs]) / s2
    cov = np.linalg.inv(prec)
    return cov @ h, cov


def _quadratic(names, a, c, tau):
    def fn(x):
        return -0.5 * ((sum(w * x[n] for n, w in zip(names, a) if w) - c) / tau) ** 2

    return fn


FEATS5 = [
    Feature("p", loc=3.0, scale=2.0),
    Feature("q", loc=-1.0, scale=0.5),
    Feature("r"),
    Feature("s", loc=100.0, scale=10.0),
    Feature("t", loc=0.5, scale=0.2),
]
# second oracle: other dimensions, noise and scales
FEATS4 = [
    Feature("u", loc=-2.0, scale=3.0),
    Feature("v"),
    Feature("w", loc=1.0, scale=0.1),
    Feature("y"),
]


A_FACTOR = (np.array([0.0, 0.0, 1.0, -0.05, 2.0]), -3.0, 0.4)  # a, c, tau
# one function object: the queries below share one compiled program
FACTOR_A = _quadratic([f.name for f in FEATS5], *A_FACTOR)


@pytest.fixture(scope="module")
def oracle_a():
    """d = 2, D = 5, sigma = 0.5: fullrank VI and grid quadrature."""
    lg = LinearGaussian.random(3, num_features=5, latent_dim=2, sigma=0.5)
    return lg, vq.from_decoder(lg.decode, 2, FEATS5, scale=0.5)


@pytest.fixture(scope="module")
def oracle_b():
    """d = 3, D = 4, sigma = 0.3: fullrank and mean-field VI, two rows in one batch."""
    lg = LinearGaussian.random(7, num_features=4, latent_dim=3, sigma=0.3, weight_scale=0.8)
    return lg, vq.from_decoder(lg.decode, 3, FEATS4, scale=0.3)


def _check_gaussian_draws(z, mean, cov, full=True):
    """Draws ``z [S, d]`` against N(mean, cov): means within 4 MCSE + 5% sd (VI's
    optimisation), covariance (or mean-field variances 1/diag(precision)) within 10%."""
    sd = np.sqrt(np.diag(cov))
    err = np.abs(z.mean(0) - mean)
    if full:
        np.testing.assert_allclose(np.cov(z.T), cov, rtol=0.1, atol=0.05 * sd.max() ** 2)
        want_sd = sd
    else:
        want_sd = 1 / np.sqrt(np.diag(np.linalg.inv(cov)))
        np.testing.assert_allclose(z.std(0), want_sd, rtol=0.1)
    assert np.all(err < 4 * want_sd / np.sqrt(len(z)) + 0.05 * sd), (z.mean(0), mean)
    return err / sd


def test_factor_is_an_exact_gaussian_term_oracle_a(oracle_a):
    lg, vae = oracle_a
    a, c, tau = A_FACTOR
    q = vae.given(p=4.0, q=-1.3).predict("r").factor(FACTOR_A)
    mean, cov = _factor_posterior(lg, FEATS5, {0: 4.0, 1: -1.3}, a, c, tau)
    alone, _ = _factor_posterior(lg, FEATS5, {0: 4.0, 1: -1.3}, a, c, 1e6)
    assert np.abs(mean - alone).max() > 0.5 * np.sqrt(np.diag(cov)).max()  # the factor matters
    for backend, kw in (("fullrank", {"num_steps": 600}), ("grid", {})):
        post = q.infer(backend, key=0, num_draws=6000, **kw)
        _check_gaussian_draws(post.z[0], mean, cov)
    # the factor counts as likelihood: log p(x_O | z) + f(E[x | z]) at each draw
    z = post.z[0, :5]
    x_mean = z @ lg.W.T + lg.b
    raw = x_mean * np.array([f.scale for f in FEATS5]) + np.array([f.loc for f in FEATS5])
    xo = np.array([(4.0 - 3.0) / 2.0, (-1.3 + 1.0) / 0.5])
    want = norm.logpdf(xo, x_mean[:, :2], 0.5).sum(-1) - 0.5 * ((raw @ a - c) / tau) ** 2
    np.testing.assert_allclose(post.pointwise_log_likelihood()[0, :5], want, rtol=1e-4)


def test_factor_is_an_exact_gaussian_term_oracle_b_batched(oracle_b):
    lg, vae = oracle_b
    a, c, tau = np.array([0.5, -1.0, 0.0, 1.0]), 1.5, 0.3
    X = np.array([[-1.0, np.nan, 1.2, np.nan], [np.nan, np.nan, np.nan, 0.4]])
    q = vae.given(X).factor(_quadratic([f.name for f in FEATS4], a, c, tau))
    refs = [
        _factor_posterior(lg, FEATS4, {0: -1.0, 2: 1.2}, a, c, tau),
        _factor_posterior(lg, FEATS4, {3: 0.4}, a, c, tau),
    ]
    full = q.infer("fullrank", key=1, num_draws=4000, num_steps=600)
    mf = q.infer("gaussian", key=2, num_draws=4000, num_steps=600)
    for i, (mean, cov) in enumerate(refs):
        _check_gaussian_draws(full.z[i], mean, cov)
        _check_gaussian_draws(mf.z[i], mean, cov, full=False)


def _where_quadrature(lg, feats, points, wheres, n=200_001):
    """1-D latent: exact posterior ``(mean, sd)`` under ``where`` factors, by quadrature.

    ``wheres``: ``[(margin, log_weight, sharpness)]``, margins on raw ``[n, D]``.
    """
    s = np.array([f.scale for f in feats])
    loc = np.array([f.loc for f in feats])
    g = np.linspace(-9.0, 9.0, n)
    xm = g[:, None] * lg.W[:, 0] + lg.b
    lj = norm.logpdf(g)
    for j, v in points.items():
        lj += norm.logpdf((v - loc[j]) / s[j], xm[:, j], lg.sigma)
    for margin, log_weight, sharpness in wheres:
        m = margin(xm * s + loc)
        if m.dtype == bool:
            lj += np.where(m, 0.0, log_weight)
        elif log_weight is None:
            lj += -np.logaddexp(0.0, -sharpness * m)  # log sigmoid
        else:
            lj += log_weight / (1.0 + np.exp(sharpness * m))
    w = np.exp(lj - lj.max())
    w /= w.sum()
    mean = w @ g
    return mean, np.sqrt(w @ (g - mean) ** 2)


def _b_below(x):  # "b below 10.3" (raw units), the condition m > 0
    return 10.3 - x["b"] if isinstance(x, vq.model.FeatureView) else 10.3 - x[:, 1]


def _c_above(x):  # "c above -0.2"
    return x["c"] + 0.2 if isinstance(x, vq.model.FeatureView) else x[:, 2] + 0.2


def _b_below_bool(x):
    return x["b"] < 10.3 if isinstance(x, vq.model.FeatureView) else x[:, 1] < 10.3


@pytest.mark.parametrize(
    "wheres",
    [
        [(_b_below, None, 4.0), (_c_above, -6.0, 3.0)],  # both smooth forms in one query
        [(_b_below_bool, -4.0, 1.0)],  # a boolean condition: a step
    ],
)
def test_where_matches_quadrature(lg1, wheres):
    feats = [Feature("a", loc=10.0, scale=2.0), Feature("b", loc=10.0, scale=1.0), Feature("c")]
    vae = vq.from_decoder(lg1.decode, 1, feats, scale=SIGMA)
    q = vae.given(a=11.5)
    for fn, log_weight, sharpness in wheres:
        q = q.where(fn, sharpness=sharpness, log_weight=log_weight)
    post = q.infer("grid", key=0, num_draws=20_000)
    mean, sd = _where_quadrature(lg1, feats, {0: 11.5}, wheres)
    alone, _ = _where_quadrature(lg1, feats, {0: 11.5}, [])
    assert abs(alone - mean) > 0.2 * sd  # the constraints move the posterior
    z = post.z[0, :, 0]
    assert abs(z.mean() - mean) < 4 * sd / np.sqrt(z.size)
    np.testing.assert_allclose(z.std(), sd, rtol=0.03)


# ------------------------------------------------------------- derived targets
def test_derived_target_has_the_exact_predictive_moments(oracle_a):
    """``p - 2 r + 3 q`` with ``q`` observed: a linear function of a Gaussian predictive.

    Under the factor the posterior of z is N(mean, cov) (above); the predictive
    of the unobserved x_raw = s (W z + b + sigma e) + loc, so the derived target
    has mean ``c . E[x_raw]`` and variance ``c_U diag(s) (W cov W^T + sigma^2 I)
    diag(s) c_U``, the observed ``q`` a constant.
    """
    lg, vae = oracle_a
    a, c, tau = A_FACTOR
    q = (
        vae.given(q=-1.3, t=0.7)
        .factor(FACTOR_A)
        .predict("r", lin=lambda x: x["p"] - 2 * x["r"] + 3 * x["q"])
    )
    assert repr(q) == "Query: 1 row; given q = -1.3, t = 0.7; predict r, lin; factor fn"
    post = q.infer("fullrank", key=3, num_draws=6000, num_steps=600)
    mean, cov = _factor_posterior(lg, FEATS5, {1: -1.3, 4: 0.7}, a, c, tau)
    s = np.array([f.scale for f in FEATS5])
    loc = np.array([f.loc for f in FEATS5])
    cu = np.array([1.0, 0.0, -2.0, 0.0, 0.0])
    want_mean = cu @ (s * (lg.W @ mean + lg.b) + loc) + 3 * -1.3
    pred_cov = lg.W @ cov @ lg.W.T + lg.sigma**2 * np.eye(5)
    want_sd = np.sqrt((cu * s) @ pred_cov @ (cu * s))
    d = post.derived["lin"]
    assert d.shape == (1, 6000)
    assert abs(d.mean() - want_mean) < 4 * want_sd / np.sqrt(d.size) + 0.05 * want_sd
    np.testing.assert_allclose(d.std(), want_sd, rtol=0.06)
    # summarised, converted and plotted like a feature target
    table = post.summary()
    assert list(table.index) == ["r", "lin"]
    np.testing.assert_allclose(table.loc["lin", "mean"], d.mean(), rtol=1e-5)
    idata = post.to_arviz(log_likelihood=False)
    assert idata.posterior["lin"].dims == ("chain", "draw", "query")
    np.testing.assert_array_equal(idata.posterior["lin"].values[0, :, 0], d[0])
    fig = post.plot()
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["r", "lin"]


def test_derived_only_and_composition(vae1):
    q = vae1.given(a=11.0).predict(ab=lambda x: x["a"] * x["b"])
    assert q.targets == [[]] and list(q.derived) == ["ab"]
    q2 = q.given(c=0.5)  # composition keeps the derived targets
    assert list(q2.derived) == ["ab"] and q2.observed == [{"a": 11.0, "c": 0.5}]
    with pytest.raises(ValueError, match="'ab' reads feature 'b', which has interval evidence"):
        q.given(b=vq.above(0.0))
    with pytest.raises(ValueError, match="'ab' reads feature 'a', which has interval evidence"):
        vae1.given(a=vq.above(10.0)).predict(ab=lambda x: x["a"] * x["b"])
    with pytest.raises(ValueError, match="infer_stream does not compute derived targets"):
        q.infer_stream("gaussian")


def _module_level_factor(x):
    return -(x["b"] ** 2)


def test_soft_constraint_and_derived_errors(vae1):
    q = vae1.given(a=11.0)
    with pytest.raises(KeyError, match=r"factor\(\): unknown feature 'zz'.*\['a', 'b', 'c'\]"):
        q.factor(lambda x: x["zz"])
    with pytest.raises(ValueError, match="one number per row"):
        q.factor(lambda x: x.array)
    with pytest.raises(TypeError, match="boolean condition needs log_weight="):
        q.where(lambda x: x["b"] > 0)
    with pytest.raises(TypeError, match="a factor is a real log-weight"):
        q.factor(lambda x: x["b"] > 0)
    with pytest.raises(ValueError, match="sharpness must be a finite number > 0"):
        q.where(lambda x: x["b"], sharpness=0)
    with pytest.raises(ValueError, match="log_weight must be a finite number"):
        q.where(lambda x: x["b"], log_weight=-np.inf)
    with pytest.raises(ValueError, match="derived target 'b' has the name of a feature"):
        q.predict(b=lambda x: x["c"])
    with pytest.raises(TypeError, match="needs a function"):
        q.predict(d=3.0)
    soft = q.where(lambda x: x["b"], sharpness=2.0)
    for backend in ("mwg", "pseudo_gibbs", "feature_vi"):
        with pytest.raises(ValueError, match=f"'{backend}' .* ignore the soft constraint 'where"):
            soft.infer(backend)
    step = q.where(lambda x: x["b"] > 0, log_weight=-5.0)
    for backend in ("gaussian", "fullrank", "pathfinder"):
        with pytest.raises(ValueError, match=f"'{backend}' follows gradients.*step without one"):
            step.infer(backend)
    # pickling: a lambda is named; a module-level function is fine
    with pytest.raises(TypeError, match="cannot pickle this query: the function of its where"):
        soft.__getstate__()
    ok = q.factor(_module_level_factor)
    assert ok.__getstate__()["factors"] == ok.factors
    # a saved result would lose the factors from its log-likelihoods: refused
    from types import SimpleNamespace

    from vaequery.io import posterior_files

    with pytest.raises(TypeError, match="cannot save this Posterior: its query has soft"):
        posterior_files(SimpleNamespace(query=ok))  # refused before anything is read
    # the factor is a site of the query's NumPyro model
    import numpyro

    model_fn, kwargs = ok.numpyro_model()
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model_fn, 0)).get_trace(**kwargs)
    assert "factor_0" in tr and tr["factor_0"]["is_observed"]
