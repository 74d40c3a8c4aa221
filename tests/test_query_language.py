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
