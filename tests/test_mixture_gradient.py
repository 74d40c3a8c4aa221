"""The mixture backend's gradient estimators are unbiased.

Reference: autodiff (float64) of the ELBO computed by 2-D grid quadrature,
:math:`\\sum_i h^2 q_\\lambda(z_i)[\\log p(x_O, z_i) - \\log q_\\lambda(z_i)]`, a
computation that shares nothing with the estimator (no sampling, no implicit
reparameterisation, no score function). The estimator's mean over ``R``
independent replicates must match it within 4.5 standard errors per parameter
(10 parameters; the standard errors come from the replicates themselves).
Both estimators are checked: QAVI's implicit-reparameterisation + score
estimator and the stratified one, whose mean and log-scale gradients are
divided by the component weight on purpose (so they are multiplied back here).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaequery.backends.mixture import Mixture, mixture_log_prob
from vaequery.testing import LinearGaussian

R, S = 4000, 16


def _problem():
    o = LinearGaussian.random(4, num_features=4, latent_dim=2, sigma=0.8)
    _, x = o.sample(0, 1)
    obs = np.array([[True, True, False, True]])
    params = {
        "loc": np.array([[-0.6, 0.4], [0.7, -0.3]]),
        "log_scale": np.array([[-0.3, 0.1], [0.2, -0.5]]),
        "logits": np.array([0.4, -0.2]),
    }
    return o, x, obs, params


def _exact_gradient(o, x, obs, params):
    with jax.enable_x64(True):
        g = jnp.linspace(-7.0, 7.0, 561)
        Z = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        h2 = (g[1] - g[0]) ** 2
        W, b, s = jnp.asarray(o.W), jnp.asarray(o.b), o.sigma
        m = jnp.asarray(obs[0], float)
        r = (jnp.asarray(x[0]) - Z @ W.T - b) / s
        log_lik = jnp.sum(m * (-0.5 * r**2 - jnp.log(s) - 0.5 * jnp.log(2 * jnp.pi)), -1)
        log_joint = log_lik - 0.5 * jnp.sum(Z**2, -1) - jnp.log(2 * jnp.pi)

        def elbo(p):
            log_q = mixture_log_prob(p, Z)
            return h2 * jnp.sum(jnp.exp(log_q) * (log_joint - log_q))

        p64 = jax.tree.map(jnp.asarray, params)
        mass = h2 * jnp.sum(jnp.exp(mixture_log_prob(p64, Z)))
        return jax.tree.map(np.asarray, jax.grad(elbo)(p64)), float(mass)


def _estimates(o, x, obs, params, estimator):
    target = o.vae().given(np.where(obs, x, np.nan)).target()
    row = jax.tree.map(lambda a: a[0], target.data)
    backend = Mixture(num_components=2, num_samples=S, estimator=estimator)
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)

    @jax.jit
    def grads(keys):
        # loss_fn is the negative surrogate ELBO
        return jax.vmap(lambda k: jax.grad(backend.loss_fn)(p32, k, target, row))(keys)

    out = jax.tree.map(np.asarray, grads(jax.random.split(jax.random.key(0), R)))
    if estimator == "stratified":  # undo the deliberate 1 / pi_k scaling
        pi = np.asarray(jax.nn.softmax(params["logits"]))[:, None]
        out = dict(out, loc=out["loc"] * pi, log_scale=out["log_scale"] * pi)
    return out


@pytest.mark.parametrize("estimator", ["stratified", "implicit"])
def test_expected_gradient_matches_grid_quadrature(estimator):
    o, x, obs, params = _problem()
    exact, mass = _exact_gradient(o, x, obs, params)
    assert abs(mass - 1) < 1e-6  # the grid holds all of q
    est = _estimates(o, x, obs, params, estimator)
    for name in params:
        g = -est[name]  # ascent direction of the ELBO
        mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(R)
        z = np.abs(mean - exact[name]) / se
        assert (z < 4.5).all(), (name, mean, exact[name], se)
        # the check has power: the gradient is resolved well beyond its error
        assert (np.abs(exact[name]) > 8 * se).any(), (name, exact[name], se)


def test_score_term_is_what_moves_the_weights():
    # Without the importance-sampling factor the logits would get only the
    # zero-mean direct term -grad log q; the exact gradient is far from 0, so an
    # estimator missing the factor could not pass the test above.
    o, x, obs, params = _problem()
    exact, _ = _exact_gradient(o, x, obs, params)
    est = _estimates(o, x, obs, params, "implicit")
    se = est["logits"].std(0, ddof=1) / np.sqrt(R)
    assert (np.abs(exact["logits"]) > 8 * se).all(), (exact["logits"], se)
