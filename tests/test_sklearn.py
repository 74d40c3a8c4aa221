"""VAEImputer: scikit-learn conventions, exact imputations on the linear-Gaussian oracle.

Exact answers are computed here from the oracle's joint Gaussian
``x ~ N(b, W W^T + sigma^2 I)`` by ordinary Gaussian conditioning, independently
of vaequery's inference code.
"""

import copy

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, ShuffleSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from vaequery.sklearn import VAEImputer
from vaequery.testing import LinearGaussian

#: Every check passes; an entry here would name a check and say why it cannot.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}

# check_estimator fits on ~15 differently shaped arrays and XLA compiles a training
# epoch per shape, so the plumbing is checked with num_epochs=0 (vq.train returns
# the initialised network: the same code path, model type, pickling and metadata)
# and the cheapest backend; training and the VI backends are checked below.
_TINY = VAEImputer(
    latent_dim=1,
    hidden=(4,),
    num_epochs=0,
    validation_fraction=0.0,
    backend="fill_zeros",
    random_state=0,
)


@parametrize_with_checks([_TINY], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def conditional_mean(oracle, x, observed):
    """``E[x | x_O]`` per row by Gaussian conditioning on the joint covariance."""
    C = oracle.W @ oracle.W.T + oracle.sigma**2 * np.eye(oracle.num_features)
    out = np.empty_like(x)
    for r in range(len(x)):
        o = observed[r]
        gain = C[:, o] @ np.linalg.inv(C[np.ix_(o, o)])
        out[r] = oracle.b + gain @ (x[r, o] - oracle.b[o])
    return out


def conditional_var(oracle, observed_row):
    """``diag Var[x | x_O]`` for one observation pattern."""
    C = oracle.W @ oracle.W.T + oracle.sigma**2 * np.eye(oracle.num_features)
    o = observed_row
    return np.diag(C - C[:, o] @ np.linalg.inv(C[np.ix_(o, o)]) @ C[o, :])


@pytest.fixture(scope="module")
def oracle():
    return LinearGaussian.random(5, num_features=5, latent_dim=2, sigma=0.4)


def test_oracle_imputes_exact_conditional_mean(oracle):
    _, x = oracle.sample(3, 6)
    observed = np.array(
        [
            [1, 0, 1, 0, 1],
            [0, 0, 0, 1, 1],
            [1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0],  # nothing observed: the prior mean b
            [1, 1, 1, 1, 1],  # complete: passed through
            [0, 1, 0, 1, 0],
        ],
        bool,
    )
    X = np.where(observed, x, np.nan)
    S = 2000
    imp = VAEImputer(model=oracle.vae(), num_draws=S, random_state=0)
    out = imp.fit(X).transform(X)
    exact = conditional_mean(oracle, x, observed)
    assert np.array_equal(out[observed], x[observed])  # observed entries untouched
    # Monte-Carlo sd of a mean of S draws of E[x_j | z] = W_j z + b_j is at most
    # sqrt(Var[W_j z | x_O] / S) (the exact posterior; mean-field's is smaller).
    # Gaussian VI's stochastic optimisation leaves its mean within about 0.08
    # posterior sd of the exact one (measured on 200 random rows with S = 20,000).
    post_sd = np.sqrt(
        np.clip(np.stack([conditional_var(oracle, o) for o in observed]) - oracle.sigma**2, 0, None)
    )
    tol = 4 * post_sd / np.sqrt(S) + 0.1 * post_sd + 1e-4
    err = np.abs(out - exact)
    assert (err[~observed] < tol[~observed]).all(), (err, tol)
    np.testing.assert_allclose(exact[3], oracle.b)  # the independent answer itself


def test_sample_posterior_draws_from_exact_conditional(oracle):
    # one evidence row repeated: the draws must have the exact conditional mean
    # and variance (posterior spread of W z plus the observation noise sigma^2)
    _, x = oracle.sample(4, 1)
    o = np.array([1, 1, 0, 1, 0], bool)
    n = 400
    X = np.repeat(np.where(o, x, np.nan), n, 0)
    imp = VAEImputer(
        model=oracle.vae(),
        backend="fullrank",
        sample_posterior=True,
        backend_kwargs=dict(num_steps=200, num_samples=16),
        random_state=1,
    )
    out = imp.fit(X).transform(X)
    u = ~o
    mean = conditional_mean(oracle, x, o[None])[0, u]
    var = conditional_var(oracle, o)[u]
    se_mean = np.sqrt(var / n)
    np.testing.assert_array_less(np.abs(out[:, u].mean(0) - mean), 4 * se_mean + 0.01)
    # sample variance of n Gaussian draws: relative sd sqrt(2 / (n - 1))
    rel = out[:, u].var(0, ddof=1) / var
    np.testing.assert_array_less(np.abs(rel - 1), 4 * np.sqrt(2 / (n - 1)))
    assert len(np.unique(out[:, u][:, 0])) == n  # each row its own draw


@pytest.fixture(scope="module")
def table(oracle):
    """Oracle rows as a DataFrame with 30 % missing entries, and the complete rows."""
    _, x = oracle.sample(7, 160)
    rng = np.random.default_rng(8)
    X = np.where(rng.random(x.shape) < 0.3, np.nan, x)
    names = ["a", "b", "c", "d", "e"]
    return pd.DataFrame(X, columns=names), x


@pytest.fixture(scope="module")
def fitted(table):
    X, _ = table
    imp = VAEImputer(
        latent_dim=2,
        hidden=(16,),
        num_epochs=100,
        batch_size=32,
        learning_rate=1e-2,
        num_draws=20,
        backend_kwargs=dict(num_steps=100, num_samples=8),
        random_state=0,
    )
    return imp.fit(X)


def test_trained_imputer_beats_mean_imputation(fitted, table, oracle):
    X, x = table
    out = fitted.transform(X)
    miss = X.isna().to_numpy()
    assert np.array_equal(out[~miss], x[~miss])
    rmse = np.sqrt(np.mean((out - x)[miss] ** 2))
    rmse_mean = np.sqrt(np.mean((np.nanmean(X, 0) - x)[miss] ** 2))
    exact = conditional_mean(oracle, X.fillna(0).to_numpy(), ~miss)
    rmse_exact = np.sqrt(np.mean((exact - x)[miss] ** 2))  # the best any imputer can do
    assert rmse < 0.7 * rmse_mean, (rmse, rmse_mean, rmse_exact)


def test_pandas_output_and_feature_names(fitted, table):
    X, _ = table
    np.testing.assert_array_equal(fitted.get_feature_names_out(), X.columns)
    assert fitted.model_.feature_names == list(X.columns)
    array = fitted.transform(X)
    try:  # the shared fitted imputer itself: a copy would compile its queries again
        frame = fitted.set_output(transform="pandas").transform(X)
    finally:
        fitted.set_output(transform="default")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(X.columns) and frame.index.equals(X.index)
    np.testing.assert_array_equal(frame.to_numpy(), array)


def test_pretrained_model_columns_in_any_order(oracle, table):
    X, _ = table
    vae = oracle.vae(names=list(X.columns))
    settings = dict(model=vae, num_draws=10, backend_kwargs=dict(num_steps=50), random_state=0)
    imp = VAEImputer(**settings)
    ref = imp.fit(X).transform(X)
    cols = ["c", "a", "e", "b", "d"]
    # the same model object (not a clone's copy): its compiled query is reused
    shuffled = VAEImputer(**settings).fit(X[cols]).transform(X[cols])
    np.testing.assert_array_equal(shuffled, ref[:, [X.columns.get_loc(c) for c in cols]])
    with pytest.raises(ValueError, match=r"missing \['e'\], unknown \['f'\]"):
        clone(imp).fit(X.rename(columns={"e": "f"}))
    with pytest.raises(ValueError, match="X has 4 columns but the model has 5 features"):
        clone(imp).fit(X.to_numpy()[:, :4])


def test_pickle_round_trip_and_determinism(fitted, table, tmp_path):
    X, _ = table
    # the cheapest backend: the round trip is about the model, and each new
    # model object compiles its inference program once
    imp = copy.deepcopy(fitted).set_params(backend="fill_zeros", backend_kwargs=None)
    path = tmp_path / "imputer.joblib"
    joblib.dump(imp, path)
    loaded = joblib.load(path)
    first = imp.transform(X)
    np.testing.assert_array_equal(loaded.transform(X), first)
    np.testing.assert_array_equal(imp.transform(X), first)  # same fitted seed, same answer
    assert np.isfinite(first).all()


def test_complete_rows_need_no_inference(fitted, table, monkeypatch):
    _, x = table
    from vaequery.query import Query

    def refuse(*a, **k):
        raise AssertionError("inference ran on rows with nothing missing")

    monkeypatch.setattr(Query, "infer", refuse)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d", "e"])
    np.testing.assert_array_equal(fitted.transform(frame), x)


def test_bad_input_is_named(table):
    X, _ = table
    empty = X.assign(c=np.nan)
    with pytest.raises(ValueError, match=r"column 'c' \(index 2\) has no observed value"):
        VAEImputer(num_epochs=0).fit(empty)
    with pytest.raises(ValueError, match="infinity"):
        VAEImputer(num_epochs=0).fit(X.assign(a=np.inf))
    with pytest.raises(TypeError, match="backend_kwargs must be a dict"):
        VAEImputer(backend_kwargs=[("num_steps", 3)]).fit(X)


def test_train_kwargs_reach_vq_train(table):
    X, _ = table
    imp = VAEImputer(num_epochs=2, train_kwargs={"num_importance": 3, "weight_decay": 0.05})
    recipe = imp.fit(X).model_.metadata["recipe"]
    assert recipe["num_importance"] == 3 and recipe["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="train_kwargs sets \\['latent_dim'\\]"):
        VAEImputer(num_epochs=0, train_kwargs={"latent_dim": 3}).fit(X)
    with pytest.raises(TypeError, match="train_kwargs must be a dict"):
        VAEImputer(train_kwargs=[("tune", True)]).fit(X)


def test_pipeline_and_grid_search(oracle):
    # predict the last oracle feature from the others, 40 % of them missing
    _, x = oracle.sample(11, 200)
    y = x[:, -1]
    X = np.where(np.random.default_rng(12).random((200, 4)) < 0.4, np.nan, x[:, :-1])
    imputer = VAEImputer(
        latent_dim=2,
        hidden=(16,),
        num_epochs=60,
        batch_size=32,
        learning_rate=1e-2,
        validation_fraction=0.0,
        backend="fill_zeros",
        random_state=0,
    )
    pipe = make_pipeline(imputer, Ridge())
    grid = {"vaeimputer__sample_posterior": [False, True]}
    # one split: every fitted model compiles its own queries (about a second each)
    cv = ShuffleSplit(n_splits=1, test_size=0.5, random_state=0)
    search = GridSearchCV(pipe, grid, cv=cv, scoring="r2").fit(X, y)
    baseline = cross_val_score(make_pipeline(SimpleImputer(), Ridge()), X, y, cv=cv).mean()
    scores = search.cv_results_["mean_test_score"]
    # the posterior mean is the better input for a regression than one noisy draw,
    # and it carries more information than the column means
    assert search.best_params_ == {"vaeimputer__sample_posterior": False}, scores
    assert scores[0] > baseline + 0.05, (scores, baseline)
    assert search.predict(X).shape == (200,)  # the refitted pipeline
