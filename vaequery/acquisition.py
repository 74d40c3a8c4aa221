r"""Active feature acquisition: which feature to measure next.

For a query with evidence :math:`x_O`, the greedy policy of EDDI (Ma et al.
2019) and posterior matching (Strauss & Oliva 2022, §3.5, eq. 6) measures the
unobserved feature whose value is expected to tell the most about the latent:

.. math::
    i^\star = \arg\min_{i \in U}\;
    \mathbb E_{x_i \sim p(x_i \mid x_O)}\, \mathbb H[z \mid x_O, x_i],

equivalently the largest expected information gain
:math:`\mathbb H[z \mid x_O] - \mathbb E\,\mathbb H[z \mid x_O, x_i]`.

:func:`next_feature` estimates every candidate's expected entropy for every
query in **one compiled program**:

1. fit the current posterior :math:`q(z \mid x_O)` of each query with a
   Gaussian backend (``"gaussian"``, ``"fullrank"``, or the amortized
   ``"posterior_matching"`` guide with a Gaussian head);
2. imagine ``num_samples`` values of every feature from the posterior
   predictive: :math:`z_k \sim q(z \mid x_O)`, :math:`x^{(k)} \sim p(x \mid z_k)`
   (the same draws serve every candidate: common random numbers, so the
   candidates are compared on the same imagined futures);
3. refit a Gaussian posterior for every (query, candidate, imagined value),
   the three axes flattened into one batch of rows for the backend and each
   fit warm-started from the current posterior; a variational refit runs
   ``lookahead`` settings (fewer steps, a smaller learning rate), the
   amortized guide simply re-encodes the completed row (PM's "sampling"
   acquisition, §5.5);
4. average the refits' analytic entropies over the imagined values.

``method="lookahead"`` replaces steps 2-4 by posterior matching's lookahead
network (eq. 7; :func:`vaequery.guides.train_lookahead`, stored in
``model.guides``): one forward pass per row outputs a Gaussian for every
candidate, the posterior expected after measuring it, and its analytic
entropy is the candidate's score. Nothing is imagined or refitted; the
backend still fits the current posterior (its entropy, and the imputations of
:func:`acquire`).

:func:`acquire` runs that choice greedily for ``budget`` steps (or measures in
random order for comparison) on rows whose full values are known, and reports
the imputation RMSE of the still-unmeasured features after each acquisition,
as PM's Figure 7.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vaequery.backends.fullrank import FullRank
from vaequery.backends.gaussian import GaussianFamily
from vaequery.backends.posterior_matching import PosteriorMatching
from vaequery.fit import InferenceWarning, as_key, map_rows, prepare
from vaequery.guides.lookahead import LookaheadNetwork

_HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)

#: Settings of the variational lookahead refits, overriding the backend's own
#: (``lookahead=`` adds to or replaces them). Warm-started from the current
#: posterior, a refit needs fewer steps and Monte-Carlo samples than a fit from
#: the prior. On the linear-Gaussian oracle (d = 3, ``"fullrank"``) these
#: settings put every expected entropy within 0.04 nats of the exact one; a
#: peak learning rate of 0.05 left up to 0.3 nats where one measurement
#: shrinks a prior-wide posterior (the warm start is then far away).
LOOKAHEAD_DEFAULTS = {"num_steps": 200, "learning_rate": 0.2, "num_samples": 20}

STRATEGIES = ("greedy", "random", "lookahead")

#: How :func:`next_feature` estimates the expected entropies: imagined values and
#: refits (``"sampling"``, way (a)), or PM's trained lookahead network (way (b)).
METHODS = ("sampling", "lookahead")

#: Posterior draws averaged into an imputation (PM and EDDI average 50 codes);
#: :func:`next_feature` uses the same number so that it shares :func:`acquire`'s
#: compiled program.
NUM_DRAWS = 50


@dataclasses.dataclass(frozen=True)
class FeatureChoice:
    """The greedy choice of the next feature to measure, per query row.

    Attributes
    ----------
    feature : list of str or None
        ``[N]``: the chosen feature of each row (``None`` when no candidate is
        left unobserved in that row).
    column : ndarray of int ``[N]``
        Its column in the model's schema (``-1`` for none).
    expected_entropy : ndarray ``[N, C]``
        Estimated :math:`\\mathbb E_{x_i}\\mathbb H[z \\mid x_O, x_i]` (nats) of
        each candidate; NaN where the candidate already has evidence in that row.
    entropy : ndarray ``[N]``
        :math:`\\mathbb H[z \\mid x_O]` of the current posterior (nats).
    candidates : list of str
        ``[C]``: the candidate features, columns of ``expected_entropy``.
    """

    feature: list
    column: np.ndarray
    expected_entropy: np.ndarray
    entropy: np.ndarray
    candidates: list

    @property
    def information_gain(self) -> np.ndarray:
        """``[N, C]``: ``entropy - expected_entropy`` (nats; NaN where not a candidate)."""
        return self.entropy[:, None] - self.expected_entropy

    def __repr__(self) -> str:
        n = len(self.feature)
        shown = ", ".join(repr(f) for f in self.feature[:5]) + (", ..." if n > 5 else "")
        return f"FeatureChoice({n} rows, {len(self.candidates)} candidates; next: [{shown}])"


@dataclasses.dataclass(frozen=True)
class AcquisitionResult:
    """What :func:`acquire` measured along the acquisition trajectory.

    Attributes
    ----------
    strategy : str
        ``"greedy"``, ``"random"`` or ``"lookahead"``.
    rmse : ndarray ``[budget + 1]``
        Mean over rows of each row's RMSE (standardised units) of the imputed
        still-unmeasured features, after 0, 1, ..., ``budget`` acquisitions.
    rmse_rows : ndarray ``[N, budget + 1]``
        The same per row (NaN once a row has nothing left unmeasured).
    rmse_full : ndarray ``[budget + 1]``
        Mean over rows of the RMSE of the whole reconstructed row, measured
        features counting as exact: ``sqrt(sum_unmeasured err^2 / D)``. Its
        denominator does not change as features are measured, so strategies
        that leave different features unmeasured compare on the same scale.
    order : ndarray of int ``[N, budget]``
        Columns acquired at each step (``-1`` once no candidate is left).
    features : list of list of str
        The same as names, per row.
    seconds : ndarray ``[budget]``
        Wall time of each acquisition step (the first includes compilation).
    observed : ndarray of bool ``[N, D]``
        The observed mask at the end.
    """

    strategy: str
    rmse: np.ndarray
    rmse_rows: np.ndarray
    rmse_full: np.ndarray
    order: np.ndarray
    features: list
    seconds: np.ndarray
    observed: np.ndarray

    def __repr__(self) -> str:
        curve = ", ".join(f"{v:.3f}" for v in self.rmse)
        return f"AcquisitionResult({self.strategy!r}, rmse=[{curve}])"


# --------------------------------------------------------------- families
def _check_backend(backend):
    ok = isinstance(backend, GaussianFamily) or (
        isinstance(backend, PosteriorMatching)
        and getattr(backend.network, "head_name", None) == "gaussian"
    )
    if not ok:
        raise ValueError(
            f"feature acquisition needs a posterior with an analytic entropy; backend "
            f"{backend.name!r} has none. Accepted: 'gaussian', 'fullrank' (or instances), or "
            "'posterior_matching' / 'decoder_only' with a Gaussian-head guide"
        )


def _gaussian_moments(backend, params):
    """Mean ``[d]``, Cholesky factor ``[d, d]`` and entropy of a fitted Gaussian."""
    if isinstance(backend, FullRank):
        tril = FullRank.cholesky(params)
    elif isinstance(backend, GaussianFamily):
        tril = jnp.diag(jnp.exp(params["log_scale"]))
    else:  # a Gaussian-head partial encoder
        tril = params["tril"]
    ent = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(tril)))) + tril.shape[-1] * _HALF_LOG_2PIE
    return params["loc"], tril, ent


def _fit_current(backend, key, target, row, num_draws):
    """Fit one row: ``(loc, tril, entropy, z [num_draws, d])``."""
    fit = backend.run_one(key, target, row, num_draws)
    loc, tril, ent = _gaussian_moments(backend, fit.state)
    return loc, tril, ent, fit.z


def _lookahead_entropy(look, key, target, row):
    """Entropy of the refitted posterior of one imagined row."""
    if isinstance(look, PosteriorMatching):
        return _gaussian_moments(look, look.row_state(target, row))[2]
    k_init, k_steps = jax.random.split(key)
    params, _ = look.fit_params(k_init, k_steps, target, row)
    return _gaussian_moments(look, params)[2]


@eqx.filter_jit
def _program(backend, look, target, likelihood, cand, key, num_samples, num_draws, chunk_size):
    """One acquisition step for every row, compiled once per shape.

    Returns ``(entropy [N], imputation [N, D], expected_entropy [N, C] or None)``.
    """
    data = {k: v for k, v in target.data.items() if k != "start"}
    n = data["x"].shape[0]
    k_cur, k_look = jax.random.split(key)
    imagine = look is not None and not isinstance(look, LookaheadNetwork)

    def current(k, row):
        k_fit, k_z, k_x = jax.random.split(k, 3)
        loc, tril, ent, z = _fit_current(backend, k_fit, target, row, num_draws)
        imputation = jnp.mean(likelihood.mean(target.decode_fn(z)), 0)
        if not imagine:
            return loc, tril, ent, imputation, None
        z_im = loc + jax.random.normal(k_z, (num_samples, loc.shape[-1])) @ tril.T
        x_im = jax.vmap(target.sample_x_fn)(jax.random.split(k_x, num_samples), z_im)
        return loc, tril, ent, imputation, x_im

    keys = jax.random.split(k_cur, n)
    loc, tril, ent, imputation, x_im = map_rows(current, (keys, target.data), chunk_size)
    if isinstance(look, LookaheadNetwork):
        # PM eq. 7: one forward pass per row scores every candidate, nothing imagined
        h = jax.vmap(look.entropies)(data["x"], data["observed"])
        return ent, imputation, h[:, cand]
    if look is None:
        return ent, imputation, None

    C, K = cand.shape[0], num_samples
    onehot = jnp.arange(data["x"].shape[-1])[None, :] == cand[:, None]  # [C, D]

    def expand(row, x_im_n, loc_n, tril_n):
        # (candidate, imagined value) rows of one query: x_i set and observed
        def grid(a):
            return jnp.broadcast_to(a, (C, K) + a.shape)

        out = {k: grid(v) for k, v in row.items()}
        out["x"] = jnp.where(onehot[:, None, :], x_im_n[None], row["x"])
        out["observed"] = row["observed"] | jnp.broadcast_to(onehot[:, None, :], out["x"].shape)
        if "interval" in row:  # a measured value replaces interval evidence
            out["interval"] = row["interval"] & ~onehot[:, None, :]
        out["start"] = {"loc": grid(loc_n), "tril": grid(tril_n)}
        return out

    rows = jax.vmap(expand)(data, x_im, loc, tril)  # leaves [N, C, K, ...]
    flat = jax.tree.map(lambda a: a.reshape((n * C * K,) + a.shape[3:]), rows)
    # the same key for every candidate of a (query, imagined value): common noise
    k_rows = jax.random.split(k_look, (n, K))
    k_flat = jnp.broadcast_to(k_rows[:, None], (n, C, K)).reshape(n * C * K)

    def one(k, row):
        return _lookahead_entropy(look, k, target, row)

    h = map_rows(one, (k_flat, flat), chunk_size).reshape(n, C, K)
    return ent, imputation, jnp.mean(h, -1)


# ------------------------------------------------------------------ setup
def _lookahead_network(model, network):
    """The trained :class:`~vaequery.guides.LookaheadNetwork` named (or given) by ``network``."""
    from vaequery.backends._base import require_guide
    from vaequery.guides.guide import Guide

    if isinstance(network, str):
        if network not in model.guides:
            raise ValueError(
                f"this model has no trained guide {network!r} (its guides: "
                f"{sorted(model.guides) or 'none'}); method='lookahead' needs a lookahead "
                "network: vaequery.guides.train_lookahead(model, ...), or pass network=<Guide>"
            )
        guide = require_guide(model, network)
    elif isinstance(network, Guide):
        guide = network
        guide.check_compatible(model)
    else:
        raise TypeError(
            "network= takes the name of a lookahead network in model.guides (default "
            f"'lookahead') or a Guide from vaequery.guides.train_lookahead, got {network!r}"
        )
    if not isinstance(guide.network, LookaheadNetwork):
        label = network if isinstance(network, str) else guide.kind
        raise ValueError(
            f"guide {label!r} is a {guide.kind!r} guide, not a lookahead network; train one with "
            "vaequery.guides.train_lookahead(model, ...)"
        )
    return guide.network


def _method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return method


def _backends(
    query, backend, key, lookahead, hyperparameters, num_draws=1, method="sampling", network=None
):
    """Bound current and lookahead backends, target and typed key (via ``fit.prepare``).

    With ``method="lookahead"`` the second is the trained lookahead network.
    """
    if "init" in hyperparameters and not isinstance(hyperparameters["init"], str):
        raise TypeError(
            "init= here takes a name ('auto', 'prior', 'encoder', 'posterior_matching', "
            "'decoder_only'); a previous Posterior is not accepted"
        )
    cur, target, _, key, _, _ = prepare(query, backend, key, num_draws, None, hyperparameters)
    _check_backend(cur)
    if method == "lookahead":
        if lookahead:
            raise TypeError(
                "lookahead= sets the refits of the sampling method; method='lookahead' reads "
                "a trained network and refits nothing"
            )
        return cur, _lookahead_network(query.model, network), target, key
    if isinstance(cur, PosteriorMatching):
        if lookahead:
            raise TypeError(
                f"lookahead= sets the refits of a variational backend; {cur.name!r} re-encodes "
                "each imagined row and has no settings"
            )
        return cur, cur, target, key
    settings = {**LOOKAHEAD_DEFAULTS, **(lookahead or {})}
    fields = {f.name for f in dataclasses.fields(cur)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise TypeError(
            f"lookahead= has setting(s) {unknown} that backend {cur.name!r} does not have; "
            f"accepted: {sorted(fields)}"
        )
    look = dataclasses.replace(cur, **settings)
    return cur, look, target, key


def _candidates(query, candidates):
    """Candidate columns ``[C]`` (int) and names."""
    schema = query.model.schema
    if candidates is None:
        free = ~(query.observed_mask | query.interval_mask)
        cols = [j for j in range(len(schema)) if free[:, j].any()]
    else:
        if isinstance(candidates, str):
            candidates = [candidates]
        cols = [schema.index(c) for c in candidates]
        if len(set(cols)) != len(cols):
            dup = sorted({c for c in candidates if list(candidates).count(c) > 1})
            raise ValueError(f"candidates name feature(s) {dup} more than once; give each once")
    if not cols:
        raise ValueError(
            "no candidate feature: every feature already has evidence in every row "
            "(nothing is left to acquire)"
        )
    return np.asarray(cols, np.int32), [schema.names[j] for j in cols]


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _choose(expected, free, names, cols):
    """Argmin over the free candidates: ``(feature names [N], columns [N])``."""
    masked = np.where(free & np.isfinite(expected), expected, np.inf)
    best = np.argmin(masked, 1)
    has = np.isfinite(masked).any(1)
    column = np.where(has, cols[best], -1)
    feature = [names[b] if h else None for b, h in zip(best, has)]
    return feature, column


def next_feature(
    query,
    candidates=None,
    num_samples=10,
    backend="gaussian",
    key=0,
    *,
    method="sampling",
    network="lookahead",
    lookahead=None,
    chunk_size=None,
    **hyperparameters,
) -> FeatureChoice:
    r"""The feature each query row should measure next (PM eq. 6).

    Parameters
    ----------
    query : vaequery.Query
    candidates : list of str, optional
        Features that may be measured. Default: every feature that lacks
        evidence in at least one row. A candidate that already has evidence
        in a row is skipped there (its ``expected_entropy`` is NaN).
    num_samples : int, default 10
        Imagined values :math:`x_i \sim p(x_i \mid x_O)` per candidate and row
        (``method="sampling"`` only). (The backend's own Monte-Carlo sample
        count is a backend setting: pass an instance, e.g.
        ``vq.backends.Gaussian(num_samples=50)``.)
    backend : str or backend object, default "gaussian"
        ``"gaussian"``, ``"fullrank"`` or ``"posterior_matching"`` (a
        Gaussian-head guide; no optimisation at all), or an instance. Fits the
        current posterior (``entropy``) and, for ``method="sampling"``, the
        lookahead refits.
    key : int or jax PRNG key
        Same key, same answer.
    method : {"sampling", "lookahead"}, default "sampling"
        ``"sampling"``: imagine values and refit (module docstring).
        ``"lookahead"``: posterior matching's trained lookahead network (eq. 7,
        :func:`vaequery.guides.train_lookahead`) gives every candidate's
        expected entropy in one forward pass per row; nothing is imagined or
        refitted. The network reads measured values only (interval evidence
        counts as unobserved for it).
    network : str or Guide, default "lookahead"
        ``method="lookahead"`` only: the network's name in ``model.guides``,
        or the :class:`~vaequery.guides.Guide` itself.
    lookahead : dict, optional
        Settings of the variational refits, merged over
        :data:`LOOKAHEAD_DEFAULTS` (``num_steps=200``, ``learning_rate=0.2``,
        ``num_samples=20``); the other settings are the backend's.
    chunk_size : int, optional
        Rows run together (bounds memory: the refits number
        ``N * C * num_samples``).
    **hyperparameters
        The backend's constructor arguments for the current fit (with a name).

    Returns
    -------
    FeatureChoice
        ``feature`` ``[N]``, ``expected_entropy`` ``[N, C]``, ``entropy`` ``[N]``
        and ``candidates`` ``[C]``.

    Notes
    -----
    Every row and every (row, candidate, imagined value) refit runs in one
    compiled program; a second call of the same shape does not recompile. On
    the linear-Gaussian oracle the refitted entropy does not depend on the
    imagined value and the choice is
    :math:`\arg\min_i \log\det\Sigma_{z\mid O\cup\{i\}}` (``"fullrank"``).
    With ``method="lookahead"`` the program is the current fit and one network
    pass per row; ``num_samples`` is unused.
    """
    num_samples = _positive("num_samples", num_samples)
    method = _method(method)
    if chunk_size is not None:
        chunk_size = _positive("chunk_size", chunk_size)
    cols, names = _candidates(query, candidates)
    cur, look, target, key = _backends(
        query, backend, key, lookahead, hyperparameters, method=method, network=network
    )
    ent, _, expected = _program(
        cur,
        look,
        target,
        query.model.likelihood,
        jnp.asarray(cols),
        key,
        num_samples,
        NUM_DRAWS,
        chunk_size,
    )
    free = ~(query.observed_mask | query.interval_mask)[:, cols]
    expected = np.where(free, np.asarray(expected, np.float64), np.nan)
    _warn_nonfinite(expected, free)
    feature, column = _choose(expected, free, names, cols)
    return FeatureChoice(feature, column, expected, np.asarray(ent, np.float64), names)


def _warn_nonfinite(expected, free):
    bad = free & ~np.isfinite(expected)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        warnings.warn(
            f"non-finite expected entropies in rows {rows[:10].tolist()}; those candidates are "
            "skipped. Try a smaller learning rate in lookahead= or more backend samples",
            InferenceWarning,
            stacklevel=3,
        )


def _full_table(model, X_full):
    """``X_full`` as a finite float array ``[N, D]`` in raw units, checked."""
    X = getattr(X_full, "X", X_full)
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # pandas
        X = X[model.schema.names].to_numpy()
    try:
        X = np.array(X, float)
    except (TypeError, ValueError):
        raise TypeError(
            "X_full must be a numeric array [N, D] (or a vaequery.datasets table) holding "
            "every feature's true value"
        ) from None
    D = model.num_features
    if X.ndim == 1:
        X = X[None]
    if X.ndim != 2 or X.shape[1] != D:
        raise ValueError(
            f"X_full must have shape [N, {D}] (one column per feature: {model.schema.names}); "
            f"got {np.shape(X)}"
        )
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"X_full holds the true values to be measured; feature {model.schema.names[c]!r} "
            f"in row {r} is {X[r, c]} (every entry must be finite)"
        )
    return X


def acquire(
    model,
    X_full,
    budget,
    observed=None,
    strategy="greedy",
    key=0,
    *,
    num_samples=10,
    backend="gaussian",
    candidates=None,
    num_draws=NUM_DRAWS,
    network="lookahead",
    lookahead=None,
    chunk_size=None,
    **hyperparameters,
) -> AcquisitionResult:
    """Acquire ``budget`` features per row, greedily or in random order.

    At each step every row's current posterior is fitted, the unmeasured
    features are imputed (the mean of ``likelihood.mean(decode(z))`` over
    ``num_draws`` posterior draws, as PM and EDDI, who average 50 codes) and
    scored against the truth, then one more feature per row is measured:
    the :func:`next_feature` choice (``"greedy"``: imagined values and refits;
    ``"lookahead"``: the trained lookahead network, one pass per row) or a
    uniformly random unmeasured candidate (``"random"``). With the same ``key``
    every strategy fits the same first posterior, so the curves start at the
    same RMSE.

    Parameters
    ----------
    model : vaequery.VAE
    X_full : array ``[N, D]`` or vaequery.datasets.Table
        True values, raw units, every entry finite: a measurement reveals one.
    budget : int
        Acquisitions per row.
    observed : bool array ``[N, D]`` or ``[D]``, optional
        What is known before the first acquisition (default: nothing).
    strategy : {"greedy", "random", "lookahead"}
        ``"lookahead"`` is :func:`next_feature`'s ``method="lookahead"``.
    key : int or jax PRNG key
    num_samples : int, default 10
        Imagined values per candidate (greedy only).
    backend : str or backend object, default "gaussian"
        See :func:`next_feature`; also fits the posteriors that impute.
    candidates : list of str, optional
        Features that may be acquired (default: all).
    num_draws : int, default 50
        Posterior draws averaged into each imputation.
    network : str or Guide, default "lookahead"
        ``strategy="lookahead"`` only: see :func:`next_feature`.
    lookahead : dict, optional
        See :func:`next_feature`.
    chunk_size : int, optional
        See :func:`next_feature`.
    **hyperparameters
        The backend's constructor arguments (with a name).

    Returns
    -------
    AcquisitionResult
        ``rmse`` after 0..``budget`` acquisitions, the acquisition ``order``
        and the wall time of each step.

    Examples
    --------
    >>> import vaequery as vq
    >>> oracle = vq.testing.LinearGaussian.random(0, num_features=6, latent_dim=2)
    >>> _, X = oracle.sample(1, 4)
    >>> res = vq.acquire(oracle.vae(), X, budget=2, num_samples=4, lookahead={"num_steps": 30})
    >>> res.rmse.shape, res.order.shape
    ((3,), (4, 2))
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    budget = _positive("budget", budget)
    num_samples = _positive("num_samples", num_samples)
    num_draws = _positive("num_draws", num_draws)
    if chunk_size is not None:
        chunk_size = _positive("chunk_size", chunk_size)
    X = _full_table(model, X_full)
    N, D = X.shape
    obs = np.zeros((N, D), bool) if observed is None else _mask(observed, (N, D))
    truth = model.schema.standardise(X)
    key = as_key(key)
    query = model.given(X, observed=obs)
    cols, names = _candidates(query, candidates)
    method = "lookahead" if strategy == "lookahead" else "sampling"
    cur, look, _, _ = _backends(
        query, backend, 0, lookahead, hyperparameters, num_draws, method, network
    )
    greedy = strategy != "random"
    rmse = np.full((N, budget + 1), np.nan)
    rmse_full = np.zeros((N, budget + 1))
    order = np.full((N, budget), -1, np.int64)
    seconds = np.zeros(budget)
    lik = model.likelihood
    for t in range(budget + 1):
        query = model.given(X, observed=obs)
        # guide starts (init="posterior_matching") are recomputed for the new evidence
        target = _backends(
            query, backend, 0, lookahead, hyperparameters, num_draws, method, network
        )[2]
        k_t = jax.random.fold_in(key, t)
        step = greedy and t < budget
        start = time.perf_counter()
        ent, imputation, expected = _program(
            cur,
            look if step else None,
            target,
            lik,
            jnp.asarray(cols) if step else None,
            k_t,
            num_samples,
            num_draws,
            chunk_size,
        )
        jax.block_until_ready((ent, imputation, expected))  # time the work, not the dispatch
        free = ~obs[:, cols]
        if t < budget:
            if greedy:
                expected = np.where(free, np.asarray(expected, np.float64), np.nan)
                _warn_nonfinite(expected, free)
                _, column = _choose(expected, free, names, cols)
            else:
                u = np.asarray(jax.random.uniform(jax.random.fold_in(k_t, 1), free.shape))
                column = _choose(np.where(free, u, np.nan), free, names, cols)[1]
            seconds[t] = time.perf_counter() - start
        err = (np.asarray(imputation, np.float64) - truth) ** 2
        left = ~obs
        with np.errstate(invalid="ignore"):
            rmse[:, t] = np.where(
                left.any(1), np.sqrt((err * left).sum(1) / np.maximum(left.sum(1), 1)), np.nan
            )
        rmse_full[:, t] = np.sqrt((err * left).sum(1) / D)
        if t < budget:
            order[:, t] = column
            has = column >= 0
            obs = obs.copy()
            obs[np.flatnonzero(has), column[has]] = True
    feats = [[model.schema.names[j] for j in row if j >= 0] for row in order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: nothing left
        curve = np.nanmean(rmse, 0)
    return AcquisitionResult(strategy, curve, rmse, rmse_full.mean(0), order, feats, seconds, obs)


def _mask(mask, shape, what="observed"):
    m = np.asarray(mask)
    if m.dtype != bool:
        if not (m.dtype.kind in "biuf" and np.isin(m, (0, 1)).all()):
            raise ValueError(f"the {what} mask must hold booleans (or 0/1), got dtype {m.dtype}")
        m = m.astype(bool)
    if m.shape == shape[1:]:
        m = np.broadcast_to(m, shape)
    if m.shape != shape:
        raise ValueError(
            f"the {what} mask has shape {m.shape}; accepted: {list(shape)} or [{shape[1]}]"
        )
    return np.array(m, bool)
