"""scikit-learn interface: :class:`VAEImputer`, a VAE-backed missing-value imputer.

``fit`` trains a VAE on an incomplete table with :func:`vaequery.train` (or takes
a pretrained one), ``transform`` answers every incomplete row in one batched
query, ``model.given(X).infer(backend)``, and fills each NaN with the posterior
predictive mean ``E[x_j | x_O]`` (the mean over posterior draws of the decoded
``E[x_j | z]``) or, with ``sample_posterior=True``, with one draw from
``p(x_U | x_O)`` for multiple imputation. It is a scikit-learn transformer:
it works in a ``Pipeline`` and ``GridSearchCV``, keeps feature names
(``get_feature_names_out``, ``set_output(transform="pandas")``) and pickles.

Examples
--------
>>> import numpy as np
>>> from vaequery.sklearn import VAEImputer
>>> X = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 6.0], [np.nan, 8.0]] * 8)
>>> imp = VAEImputer(latent_dim=1, hidden=(8,), num_epochs=2, random_state=0)
>>> imp.fit_transform(X).shape
(32, 2)
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError as e:  # pragma: no cover - depends on the installed version
    raise ImportError(
        "vaequery.sklearn needs scikit-learn >= 1.6 (sklearn.utils.validation.validate_data); "
        "upgrade with `pip install -U scikit-learn`"
    ) from e

from vaequery.schema import Feature, Schema

__all__ = ["VAEImputer"]

_SEED_HIGH = np.iinfo(np.int32).max


#: vq.train options VAEImputer passes itself (refused in ``train_kwargs``).
_OWN_TRAIN_OPTIONS = frozenset(
    {
        "latent_dim",
        "hidden",
        "num_epochs",
        "batch_size",
        "learning_rate",
        "patience",
        "schema",
        "key",
        "progress",
        "names",
        "val_data",
    }
)


class VAEImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Impute missing values (NaN) with a VAE's posterior given each row's observed values.

    ``fit`` trains a Gaussian VAE on the incomplete rows with
    :func:`vaequery.train` (missing entries drop out of the ELBO), unless a
    pretrained ``model`` is given, in which case it only checks the columns.
    ``transform`` answers all incomplete rows in one batched query with
    ``backend`` and replaces each missing entry; observed entries are returned
    unchanged and complete rows are passed through without inference.

    Parameters
    ----------
    model : vaequery.VAE, optional
        A pretrained model with real-valued features. Its feature names must
        match the columns of a DataFrame passed to ``fit`` (any order); an
        array must have ``model.num_features`` columns, in the model's order.
        ``None`` (default): train one in ``fit``.
    backend : str or backend object, default "gaussian"
        Inference backend answering the queries (:func:`vaequery.backends.available`).
    sample_posterior : bool, default False
        ``False``: impute the posterior predictive mean ``E[x_U | x_O]``.
        ``True``: impute one draw ``x_U ~ p(x_U | z)`` with ``z`` one posterior
        draw (observation noise included), as in multiple imputation.
    latent_dim : int, optional
        Latent size of a trained model; default ``max(1, min(16, D // 2))``
        (vaequery's shipped tabular models use about ``D / 2``).
    hidden : tuple of int, default (128, 128)
        Hidden widths of the trained encoder and decoder (QAVI's tabular MLPs).
    num_epochs : int, default 500
        Maximum training epochs; 0 keeps the initialised, untrained network
        (only useful to test the plumbing quickly).
    batch_size : int, default 64
    learning_rate : float, default 1e-3
    validation_fraction : float, default 0.25
        Share of the rows held out for early stopping on the validation ELBO
        (the best epoch's weights are kept); 0 trains all ``num_epochs`` on
        every row. Ignored when it would leave less than one row on either side.
    patience : int, default 30
        Epochs without a better validation ELBO before training stops.
    num_draws : int, optional
        Posterior draws per incomplete row (default: the backend's, 100 for
        variational backends); the posterior mean is averaged over them.
    backend_kwargs : dict, optional
        Hyper-parameters for the backend, e.g. ``{"num_steps": 200}``.
    train_kwargs : dict, optional
        Further options of :func:`vaequery.train` for a trained model, e.g.
        the importance-weighted recipe for small incomplete tables
        ``{"num_importance": 20, "encoder_mask": True, "weight_decay": 0.05}``
        or ``{"tune": True}`` (``docs/imputation.md``). The options this
        class sets itself (``latent_dim``, ``hidden``, ``num_epochs``,
        ``batch_size``, ``learning_rate``, ``patience``, ``schema``, ``key``,
        ``progress``) are refused here: use the parameters above.
    random_state : int, numpy RandomState or None, default None
        Seeds training and inference. ``fit`` draws two JAX seeds from it, so
        a fitted imputer always gives the same imputations for the same input.
    verbose : bool, default False
        Show the training progress bar.

    Attributes
    ----------
    model_ : vaequery.VAE
        The trained (or given) model.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``fit`` saw a DataFrame with string column names.
    columns_ : ndarray of int ``[D]``
        Model feature ``j`` is input column ``columns_[j]``.
    train_seed_, inference_seed_ : int
        The JAX seeds drawn from ``random_state`` (``train_seed_`` is ``None``
        for a given model).

    See Also
    --------
    vaequery.train : the training recipe ``fit`` calls.
    vaequery.VAE.given : the query ``transform`` runs.

    Notes
    -----
    The posterior predictive mean is ``E[x_U | x_O] = E_{p(z | x_O)}[E[x_U | z]]``,
    estimated with ``num_draws`` draws of the backend's approximate posterior;
    on a linear-Gaussian model with the ``"gaussian"`` backend it is exact up
    to Monte-Carlo error (the mean-field optimum has the exact posterior mean).
    Each incomplete row gets its own key split from the fitted seed, by its
    position among the incomplete rows of the batch.
    """

    def __init__(
        self,
        model=None,
        backend="gaussian",
        sample_posterior=False,
        *,
        latent_dim=None,
        hidden=(128, 128),
        num_epochs=500,
        batch_size=64,
        learning_rate=1e-3,
        validation_fraction=0.25,
        patience=30,
        num_draws=None,
        backend_kwargs=None,
        train_kwargs=None,
        random_state=None,
        verbose=False,
    ):
        self.model = model
        self.backend = backend
        self.sample_posterior = sample_posterior
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.num_epochs = num_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.num_draws = num_draws
        self.backend_kwargs = backend_kwargs
        self.train_kwargs = train_kwargs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Train a VAE on ``X`` (or check ``X``'s columns against the given ``model``).

        Parameters
        ----------
        X : array-like or DataFrame ``[n_samples, n_features]``
            Real values in raw units; NaN marks a missing entry.
        y : None
            Ignored (present for the scikit-learn API).

        Returns
        -------
        VAEImputer
            ``self``, fitted.

        Raises
        ------
        ValueError
            ``X`` holds infinities, or a column has no observed value (a VAE
            cannot learn it), or its columns do not match the given model.
        """
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=True)
        self._check_params()
        rng = check_random_state(self.random_state)
        train_seed, inference_seed = (int(s) for s in rng.randint(_SEED_HIGH, size=2))
        if self.model is not None:
            self.columns_ = self._match_model_columns(self.model)
            self.model_ = self.model
            self.train_seed_ = None
        else:
            self.columns_ = np.arange(X.shape[1])
            self.model_ = self._train(X, rng, train_seed)
            self.train_seed_ = train_seed
        self.inference_seed_ = inference_seed
        return self

    def _check_params(self):
        if self.backend_kwargs is not None and not isinstance(self.backend_kwargs, dict):
            raise TypeError(
                f"backend_kwargs must be a dict of backend hyper-parameters or None, got "
                f"{type(self.backend_kwargs).__name__} {self.backend_kwargs!r}"
            )
        if self.train_kwargs is not None and not isinstance(self.train_kwargs, dict):
            raise TypeError(
                f"train_kwargs must be a dict of vq.train options or None, got "
                f"{type(self.train_kwargs).__name__} {self.train_kwargs!r}"
            )
        vf = self.validation_fraction
        if not isinstance(vf, numbers.Real) or not 0 <= vf < 1:
            raise ValueError(f"validation_fraction must be a number in [0, 1), got {vf!r}")
        if self.latent_dim is not None and (
            not isinstance(self.latent_dim, numbers.Integral) or self.latent_dim < 1
        ):
            raise ValueError(
                f"latent_dim must be a positive integer or None (automatic), got "
                f"{self.latent_dim!r}"
            )

    def _input_names(self, n_features):
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{i}" for i in range(n_features)]

    def _match_model_columns(self, model):
        """Input column of each model feature, or a ValueError naming the mismatch."""
        schema = model.schema
        bad_kind = [f"{f.name} ({f.kind})" for f in schema if f.kind != "real"]
        if bad_kind:
            raise ValueError(
                f"VAEImputer imputes real-valued features only; the model has {bad_kind}"
            )
        names_in = getattr(self, "feature_names_in_", None)
        if names_in is None:
            if self.n_features_in_ != len(schema):
                raise ValueError(
                    f"X has {self.n_features_in_} columns but the model has "
                    f"{len(schema)} features {schema.names}; pass an array with those "
                    "columns in that order, or a DataFrame with those column names"
                )
            return np.arange(len(schema))
        names_in = [str(n) for n in names_in]
        missing = [n for n in schema.names if n not in names_in]
        unknown = [n for n in names_in if n not in schema.names]
        if missing or unknown:
            raise ValueError(
                f"the columns of X do not match the model's features: missing {missing}, "
                f"unknown {unknown}. Accepted: exactly the columns {schema.names} (any "
                "order; NaN marks a missing value)"
            )
        return np.array([names_in.index(n) for n in schema.names])

    def _train(self, X, rng, seed):
        from vaequery.train import train

        names = self._input_names(X.shape[1])
        observed = ~np.isnan(X)
        empty = np.flatnonzero(~observed.any(0))
        if empty.size:
            raise ValueError(
                f"column {names[empty[0]]!r} (index {empty[0]}) has no observed value in X; "
                "VAEImputer cannot learn it. Drop the column or give it some observed values"
            )
        schema = _schema_from_observed(X, names)
        n = X.shape[0]
        n_val = int(self.validation_fraction * n)
        if 1 <= n_val < n:
            perm = rng.permutation(n)
            X_fit, X_val = X[perm[n_val:]], X[perm[:n_val]]
        else:
            X_fit, X_val = X, None
        D = X.shape[1]
        latent_dim = self.latent_dim or max(1, min(16, D // 2))
        extra = dict(self.train_kwargs or {})
        own = sorted(set(extra) & _OWN_TRAIN_OPTIONS)
        if own:
            raise ValueError(
                f"train_kwargs sets {own}, which VAEImputer sets itself; use its parameters "
                f"of those names instead (train_kwargs accepts the other options of vq.train)"
            )
        return train(
            X_fit,
            X_val,
            **extra,
            schema=schema,
            latent_dim=int(latent_dim),
            hidden=tuple(int(h) for h in self.hidden),
            num_epochs=int(self.num_epochs),
            batch_size=int(self.batch_size),
            learning_rate=float(self.learning_rate),
            patience=int(self.patience),
            key=seed,
            progress=bool(self.verbose),
        )

    # ------------------------------------------------------------- transform
    def transform(self, X):
        """Replace each NaN by its imputation given the row's observed values.

        Parameters
        ----------
        X : array-like or DataFrame ``[n_samples, n_features]``
            The columns seen in ``fit``; NaN marks a missing entry.

        Returns
        -------
        ndarray ``[n_samples, n_features]``, float64
            ``X`` with its missing entries imputed (a DataFrame after
            ``set_output(transform="pandas")``).

        Raises
        ------
        vaequery.InferenceError
            The backend produced non-finite draws for some row.
        """
        check_is_fitted(self, "model_")
        X = validate_data(
            self, X, dtype=np.float64, ensure_all_finite="allow-nan", copy=True, reset=False
        )
        missing = np.isnan(X)
        rows = np.flatnonzero(missing.any(1))
        if rows.size == 0:
            return X  # nothing to impute: no inference at all
        Xm = X[np.ix_(rows, self.columns_)]  # model column order
        filled = self._impute(Xm)
        X[np.ix_(rows, self.columns_)] = np.where(np.isnan(Xm), filled, Xm)
        return X

    def _impute(self, Xm):
        """Imputed rows ``[n, D]`` (model column order, raw units) for incomplete rows."""
        model = self.model_
        post = model.given(Xm).infer(
            self.backend,
            key=self.inference_seed_,
            num_draws=self.num_draws,
            on_error="raise",
            **(self.backend_kwargs or {}),
        )
        n, D = Xm.shape
        if not self.sample_posterior:
            # posterior predictive mean: average of E[x | z] over the draws (MCMC chains too)
            return np.asarray(post.x, float).reshape(n, -1, D).mean(1)
        z = np.asarray(post.z).reshape(n, -1, model.latent_dim)
        seed = np.asarray(self.inference_seed_, np.int32)  # an array: traced, not a static arg
        x_model = _predictive_draw(seed, z, model.decode_fn, model.likelihood)
        return model.schema.unstandardise(np.asarray(x_model, float))


@eqx.filter_jit
def _predictive_draw(seed, z, decode_fn, likelihood):
    """One ``x ~ p(x | z)`` per row ``[n, D]``, ``z`` one of each row's draws ``z [n, S, d]``."""
    # fold_in(1) keeps these keys apart from the inference keys (split from the same seed)
    k_pick, k_noise = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1))
    n, S, _ = z.shape
    pick = jax.random.randint(k_pick, (n,), 0, S)
    z1 = z[jnp.arange(n), pick]
    return likelihood.sample(k_noise, decode_fn(z1))


def _schema_from_observed(X, names):
    """Real features standardised with the observed entries of each column."""
    with np.errstate(invalid="ignore"):
        loc = np.nanmean(X, 0)
        scale = np.nanstd(X, 0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return Schema(
        tuple(
            Feature(n, "real", loc=float(m), scale=float(s)) for n, m, s in zip(names, loc, scale)
        )
    )
