"""Per-query stopping of the variational backends (``tol=``).

Accuracy tolerances are the Monte-Carlo ones of ``tests/test_gaussian_oracle.py``:
the fitted mean-field moments must be as accurate as ``N_EQ`` exact draws.
"""

import equinox as eqx
import jax
import numpy as np
import pytest

import vaequery.backends as vb
from vaequery.testing import LinearGaussian

N_EQ = 1000


@pytest.fixture(scope="module")
def case():
    oracle = LinearGaussian.random(0, num_features=8, latent_dim=3, sigma=0.5)
    _, x = oracle.sample(1, 64)
    observed = np.random.default_rng(2).random(x.shape) < 0.5
    return oracle, x, observed, oracle.vae().given(np.where(observed, x, np.nan))


def test_tol_none_is_the_single_scan(case):
    # tol=None must be exactly the pre-tol optimiser: one lax.scan of step()
    _, _, _, query = case
    target = query.target()
    row = jax.tree.map(lambda a: a[3], target.data)
    b = vb.get("gaussian", num_steps=30, num_samples=8)
    k_init, k_steps = jax.random.key(1), jax.random.key(2)

    @jax.jit
    def by_hand(k_init, k_steps):
        state = b.init_state(k_init, target, row)

        def body(s, k):
            return b.step(s, k, target, row)

        state, loss = jax.lax.scan(body, state, jax.random.split(k_steps, b.num_steps))
        return state.params, loss

    params, loss = eqx.filter_jit(b.fit_params)(k_init, k_steps, target, row)
    ref_params, ref_loss = by_hand(k_init, k_steps)
    np.testing.assert_array_equal(loss, ref_loss)
    for k in params:
        np.testing.assert_array_equal(params[k], ref_params[k])


@pytest.fixture(scope="module")
def stopped(case):
    return case[3].infer("gaussian", key=0, tol=0.005, patience=3)


def test_tol_stops_early_and_stays_accurate(case, stopped):
    oracle, x, observed, _ = case
    mu, var = oracle.mean_field(x, observed)
    used = stopped.info["num_steps_used"]
    assert used.shape == (64,) and used.dtype.kind == "i"
    assert used.min() >= 40 and used.max() <= 300
    assert used.mean() < 0.95 * 300, used.mean()
    loc = np.asarray(stopped.state["loc"])
    fitted_var = np.exp(2 * np.asarray(stopped.state["log_scale"]))
    assert (np.abs(loc - mu) / np.sqrt(var)).max() < 4 / np.sqrt(N_EQ)
    assert np.abs(fitted_var / var - 1).max() < 4 * np.sqrt(2 / (N_EQ - 1))


def test_loss_trace_after_the_stop(stopped):
    post, T = stopped, 300
    used = post.info["num_steps_used"]
    assert post.loss.shape == (64, T) and np.isfinite(post.loss).all()
    assert not post.failed.any()
    assert (used % 10 == 0).all() and used.min() < T
    for i in np.flatnonzero(used < T)[:5]:
        tail = post.loss[i, used[i] - 1 :]
        assert (tail == tail[0]).all()
        assert post.loss[i, used[i] - 1] != post.loss[i, used[i] - 2]
    np.testing.assert_array_equal(post.info["final_loss"], post.loss[:, -1])
    # a backend that overrides fit_params (mixture) gets its steps from the trace
    np.testing.assert_array_equal(
        jax.vmap(post.backend.steps_used)(post.loss), post.info["num_steps_used"]
    )
    stats = post._sample_stats()
    np.testing.assert_array_equal(stats["num_steps_used"][0, 0], used)


def test_a_row_does_not_depend_on_its_batch(case):
    # under vmap the while_loop runs until the slowest row stops, but a stopped
    # row's carry is frozen: its answer is the one it gets alone
    _, _, _, query = case
    target = query.target()
    b = vb.get("gaussian", num_steps=100, num_samples=16, tol=0.02, patience=1)
    keys = jax.random.split(jax.random.key(0), 6)
    run = eqx.filter_jit(jax.vmap(lambda k, row: b.run_one(k, target, row, 10)))
    batch = run(keys, jax.tree.map(lambda a: a[:6], target.data))
    used = np.asarray(batch.info["num_steps_used"])
    assert len(set(used.tolist())) > 1, used
    for i in range(6):
        alone = run(keys[i : i + 1], jax.tree.map(lambda a: a[i : i + 1], target.data))
        assert int(alone.info["num_steps_used"][0]) == used[i]
        for k in alone.state:
            np.testing.assert_allclose(alone.state[k][0], batch.state[k][i], rtol=1e-5, atol=1e-6)


def test_tol_with_lbfgs(case):
    # the de-randomised objective is deterministic: the line search keeps the
    # loss monotone, and tol stops a row once it has settled
    _, _, _, query = case
    sub = query.model.given(np.asarray(query.x)[:4])
    post = sub.infer("fullrank", optimizer="lbfgs", num_steps=60, num_samples=16, tol=1e-3)
    assert np.isfinite(post.loss).all() and post.info["num_steps_used"].max() < 60
    assert (np.diff(post.loss, axis=1) <= 1e-5 * np.abs(post.loss[:, 1:]) + 1e-6).all()


@pytest.mark.parametrize(
    "bad",
    [
        dict(tol=0),
        dict(tol=-1.0),
        dict(tol="1e-3"),
        dict(tol=True),
        dict(tol=float("nan")),
        dict(tol=float("inf")),
        dict(check_every=0),
        dict(patience=0),
    ],
)
def test_bad_tol_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        vb.get("gaussian", **bad)
