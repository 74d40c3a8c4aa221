"""A VAEAC model answered by the density-based backends, against grid quadrature.

A VAEAC is a NumPyro model whose prior and decoder read the evidence
(``vaequery.model.build_numpyro_model(conditional=...)``): for a query with
point evidence x_O and mask b = 1 - observed,

    z ~ p_psi(z | x_O, b),    x_U ~ p_theta(x_U | z, x_O, b),

and interval evidence on an unobserved feature k adds the factor
P(lo <= x_k <= hi | z, x_O, b). With a two-dimensional latent every quantity
is an integral over z that a fine grid computes exactly (to quadrature error
far below the Monte-Carlo tolerances): the posterior moments of z, the
posterior mean of a decoded target, and log p(x_U | x_O, evidence).

The networks are random (untrained) VAEACs with a small fixed decoder scale,
so that the decoder's dependence on z is strong and interval evidence moves
the posterior far from the prior network's Gaussian (checked: a backend that
ignored the interval would fail by many tolerances).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

import vaequery as vq
from vaequery.models import VAEACModel
from vaequery.models.vaeac import _build

D, D_LATENT = 5, 2
NAMES = [f"x{i}" for i in range(D)]


def make_model(seed, scale):
    X = np.random.default_rng(seed).normal(size=(200, D))
    schema = vq.schema.infer_schema(X, names=NAMES)
    nets = _build(D, D_LATENT, (16,), scale, 1e-3, jax.random.key(seed))
    return VAEACModel(nets, schema), X


def grid(model, x_row, obs, lo=None, hi=None, k=None, n=401):
    """Quadrature on z: (log weights [G], z [G, 2], decoded loc [G, D], scale [G, D], log Z).

    Weights are the unnormalised posterior p_psi(z | x_O) * P(lo <= x_k <= hi | z)
    times the cell area; ``x_row`` in model units (unobserved entries ignored).
    """
    nets = model.networks
    b = jnp.asarray(~obs, jnp.float32)
    x = jnp.asarray(np.where(obs, x_row, 0.0), jnp.float32)
    loc, scale = nets.prior_params(x, b)
    u = np.linspace(-7.0, 7.0, n)
    g = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    z = jnp.asarray(loc[None] + scale[None] * g, jnp.float32)
    logw = norm.logpdf(z, loc, scale).sum(-1) + jnp.log(jnp.prod(scale) * (u[1] - u[0]) ** 2)
    dloc, dscale = nets.decode(z, x, b)
    if k is not None:
        a, c = (lo - dloc[:, k]) / dscale[:, k], (hi - dloc[:, k]) / dscale[:, k]
        logw = logw + jnp.log(jnp.clip(norm.cdf(c) - norm.cdf(a), 1e-300))
    return np.asarray(logw, np.float64), np.asarray(z), np.asarray(dloc), np.asarray(dscale)


def moments(logw, values):
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean = w @ values
    var = w @ (values - mean) ** 2
    return mean, var


#: Two oracles: (network seed, decoder scale, observed features, interval feature, target).
ORACLES = {"A": (3, 0.15, (0, 1), 3, 4), "B": (11, 0.3, (1, 4), 0, 2)}


def setup(name):
    seed, scale, observed, k, t = ORACLES[name]
    model, X = make_model(seed=seed, scale=scale)
    rows = X[:3].copy()
    obs = np.zeros((3, D), bool)
    obs[:, list(observed)] = True
    return model, rows, obs, k, t


@pytest.mark.parametrize("name, backends", [("A", ("fullrank", "nuts")), ("B", ("gaussian",))])
def test_point_evidence_posterior_is_the_prior_network(name, backends):
    """With point evidence alone the posterior is p_psi(z | x_O, b): every backend recovers it."""
    model, rows, obs, _, _ = setup(name)
    E = np.where(obs, rows, np.nan)
    x = model.schema.standardise(np.nan_to_num(rows))
    loc, scale = model.networks.prior_params(
        jnp.asarray(np.where(obs, x, 0.0), jnp.float32), jnp.asarray(~obs, jnp.float32)
    )
    loc, scale = np.asarray(loc), np.asarray(scale)
    for backend in backends:
        kw = {"num_chains": 2} if backend == "nuts" else {}
        post = model.given(E).infer(backend, key=0, num_draws=1000, **kw)
        z = np.asarray(post.z).reshape(len(rows), -1, D_LATENT)
        err = np.abs(z.mean(1) - loc) / scale
        ratio = z.var(1) / scale**2
        assert err.max() < 0.15, (backend, err)  # 1,000 draws: MC sd of the mean 0.03 sd
        assert 0.8 < ratio.min() and ratio.max() < 1.25, (backend, ratio)


def interval_for(model, x_row, obs, k):
    """[lo, hi] (model units) in the upper tail of x_k's prior predictive given x_O."""
    lw, _, dl, ds = grid(model, x_row, obs, n=201)
    m, v = moments(lw, dl[:, k])
    lo = m + 2.0 * np.sqrt(v + np.exp(lw - logsumexp(lw)) @ ds[:, k] ** 2)
    return lo, lo + 0.5


@pytest.mark.parametrize("name, backend", [("A", "nuts"), ("B", "mixture"), ("A", "fullrank")])
def test_interval_evidence_matches_grid_quadrature(name, backend):
    """x_k in [lo, hi] on top of point evidence: posterior moments, a decoded target, the IWAE."""
    model, rows, obs, k, t = setup(name)
    std = model.schema.standardise(np.nan_to_num(rows))
    sc, lc = model.schema.scale, model.schema.loc
    errs, shifts, ll_err = [], [], []
    for r in range(len(rows)):
        lo, hi = interval_for(model, std[r], obs[r], k)
        evidence = {NAMES[j]: rows[r, j] for j in np.flatnonzero(obs[r])}
        evidence[NAMES[k]] = vq.between(lo * sc[k] + lc[k], hi * sc[k] + lc[k])
        q = model.given(**evidence).predict(NAMES[t])
        kw = {"num_chains": 2, "num_draws": 1000} if backend == "nuts" else {"num_draws": 2000}
        post = q.infer(backend, key=r, **kw)
        lw, z, dl, ds = grid(model, std[r], obs[r], lo, hi, k)
        mz, vz = moments(lw, z)
        mt, vt = moments(lw, dl[:, t])
        lw0, z0 = grid(model, std[r], obs[r], n=201)[:2]
        shifts.append(np.abs(moments(lw0, z0)[0] - mz) / np.sqrt(vz))
        zs = np.asarray(post.z).reshape(-1, D_LATENT)
        xt = (np.asarray(post.x)[..., t].ravel() - lc[t]) / sc[t]
        errs.append([*(np.abs(zs.mean(0) - mz) / np.sqrt(vz)), abs(xt.mean() - mt) / np.sqrt(vt)])
        # log p(x_t = v | x_O, x_k in [lo, hi]) by quadrature vs the posterior's IWAE, at
        # v half a predictive sd above the posterior mean (where the IWAE is not dominated
        # by one rare draw: at a far tail value its own spread exceeds the tolerance)
        v = mt + 0.5 * np.sqrt(vt + np.exp(lw - logsumexp(lw)) @ ds[:, t] ** 2)
        lp = logsumexp(lw + norm.logpdf(v, dl[:, t], ds[:, t])) - logsumexp(lw)
        truth = rows[r : r + 1].copy()
        truth[0, t] = v * sc[t] + lc[t]
        ll = post.log_likelihood(truth, num_samples=2000)[0]
        ll_err.append(abs(ll - float(lp)))
    print(backend, np.round(errs, 3), np.round(shifts, 2), np.round(ll_err, 3))
    assert np.max(shifts) > 0.3  # the interval matters: ignoring it fails the bound below
    assert np.max(errs) < 0.2, errs
    assert np.max(ll_err) < 0.1, ll_err


def test_backends_that_assume_the_standard_prior_are_refused():
    model, rows, obs, _, _ = setup("A")
    q = model.given(x0=rows[0, 0])
    for backend in ("grid", "mwg", "posterior_matching", "hierarchical"):
        with pytest.raises(ValueError, match="conditions its prior and decoder on the evidence"):
            q.infer(backend)
    with pytest.raises(ValueError, match="interval evidence.*infer\\('fullrank'\\)"):
        model.given(x0=vq.between(0, 1)).infer("vaeac")
    with pytest.raises(TypeError, match="no settings"):
        q.infer("vaeac", num_steps=3)


def test_imputation_and_resampling_decode_with_the_rows_evidence():
    """post.x, predictive draws and resample() all read each row's own evidence."""
    model, rows, obs, _, t = setup("B")
    E = np.where(obs, rows, np.nan)
    post = model.given(E).infer("fullrank", key=0, num_draws=400)
    std = model.schema.standardise(np.nan_to_num(rows))
    x = jnp.asarray(np.where(obs, std, 0.0), jnp.float32)
    z = jnp.asarray(post.z)
    dl, _ = jax.vmap(lambda zr, xr, br: model.networks.decode(zr, xr, br))(
        z, x, jnp.asarray(~obs, jnp.float32)
    )
    raw = np.asarray(dl) * model.schema.scale + model.schema.loc
    np.testing.assert_allclose(post.x[..., t], raw[..., t], rtol=1e-4, atol=1e-4)
    # the predictive mean of one completed table per draw is the decoded mean on average
    tables = post.impute(200, key=1)
    assert (
        np.abs(np.mean([tb[:, t] for tb in tables], 0) - raw[..., t].mean(1)).max()
        < 0.2 * (model.schema.scale[t])
    )
    res = post.resample(num_draws=100, key=2)
    assert np.isfinite(res.x).all()


def test_posteriors_pickle_and_save_with_their_vaeac_model(tmp_path):
    """A Posterior on a VAEAC carries the VAEAC's own format; reloaded, it answers the same."""
    import pickle

    model, rows, obs, k, t = setup("B")
    q = model.given(x1=rows[0, 1], x4=rows[0, 4], x0=vq.between(-1.0, 0.5)).predict("x2")
    post = q.infer("gaussian", key=0, num_draws=50)
    ll = post.log_likelihood(rows[:1], num_samples=200, key=1)
    again = pickle.loads(pickle.dumps(post))
    assert type(again.query.model).__name__ == "VAEACModel"
    np.testing.assert_array_equal(again.x, post.x)
    np.testing.assert_allclose(again.log_likelihood(rows[:1], num_samples=200, key=1), ll)
    path = post.save(tmp_path / "post.vqpost")
    loaded = vq.load_posterior(path)
    assert type(loaded.query.model).__name__ == "VAEACModel"
    np.testing.assert_array_equal(loaded.query.interval_mask, post.query.interval_mask)
    np.testing.assert_array_equal(loaded.x, post.x)
