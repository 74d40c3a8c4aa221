r"""Train a VAE (encoder + decoder) with a masked ELBO, in JAX.

The objective per row, in standardised units, is

.. math::

    \mathcal L(x) = \mathbb E_{q(z\mid \tilde x)} \Big[\sum_{j \in O} \log p(x_j \mid z)\Big]
    - \mathrm{KL}\big(q(z \mid \tilde x)\,\|\,\mathcal N(0, I)\big),

where ``O`` are the row's observed (non-NaN) features and :math:`\tilde x` is the
row with unobserved entries set to 0 (the standardised mean). Missing training
entries therefore simply drop out of the likelihood (VAEAC section 4.3.3). The
KL term is analytic and one reparameterised draw is used per row and step.

Each :math:`\log p(x_j \mid z)` is the feature's own kind: Gaussian for real
columns, Bernoulli for binary ones, categorical (over level codes) for
categorical ones. A table with any non-real column gets a
:class:`~vaequery.decoder.MixedMLPDecoder` and the
:class:`~vaequery.likelihoods.Mixed` likelihood; an all-real one keeps the
Gaussian :class:`~vaequery.decoder.MLPDecoder`. Without a schema, one is
inferred from the training table (:func:`vaequery.schema.infer_schema`).

Architecture and optimiser follow QAVI's tabular setup (see REFERENCE_NOTES):
encoder ``D -> 128 -> 128 -> 2d``, decoder ``d -> 128 -> 128 -> 2D`` with ReLU,
Gaussian likelihood with per-feature, per-sample scale ``softplus + 0.001``,
Adam 1e-3, batch 64. vaequery adds global-norm gradient clipping and early
stopping on the validation ELBO instead of QAVI's fixed ~2,000 epochs.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaequery._elbo import _model_units, _raw_values, _row_elbo  # noqa: F401  (used here and by models)
from vaequery.decoder import MixedMLPDecoder, MLPDecoder, MLPEncoder
from vaequery.likelihoods import make_likelihood
from vaequery.schema import Schema, infer_schema
from vaequery.vae import VAE


def _as_key(key):
    from vaequery.fit import as_key

    return as_key(key)


# One compiled evaluator shared by every call (modules and likelihood are pytrees:
# their arrays are traced, their static structure keys the cache).
@eqx.filter_jit
def _mean_elbo(encoder, decoder, likelihood, key, x, mask, num_samples=1):
    """Mean masked ELBO over rows; an encoder with ``mask_input`` is given the true mask."""
    if getattr(encoder, "mask_input", False):
        enc = encoder
        encoder = lambda v: enc(v, mask)  # noqa: E731
    return jnp.mean(_row_elbo(encoder, decoder, likelihood, key, x, mask, num_samples))


def _resolve_schema(data, schema, names, kinds):
    """The schema to train with: given, the table's own, or inferred from ``data``."""
    if schema is not None:
        if kinds:
            raise TypeError(
                "give either schema= (complete) or kinds= (overrides for the inferred "
                "schema), not both"
            )
        return schema
    own = getattr(data, "schema", None)
    if own is not None and not kinds:
        return own
    if own is not None:  # a Table with overrides: infer again from its raw values
        return infer_schema(np.asarray(data.X), names=own.names, kinds=kinds)
    return infer_schema(getattr(data, "X", data), names=names, kinds=kinds)


def _optimizer(learning_rate, clip_norm, weight_decay=0.0):
    # weight_decay 0 keeps plain Adam, bit for bit (the shipped models' recipe)
    step = (
        optax.adamw(learning_rate, weight_decay=weight_decay)
        if weight_decay
        else optax.adam(learning_rate)
    )
    return optax.chain(optax.clip_by_global_norm(clip_norm), step)


def _encode(encoder, x, mask):
    """``(loc, scale)``; an encoder with ``mask_input`` gets the true mask."""
    return encoder(x, mask) if getattr(encoder, "mask_input", False) else encoder(x)


def _row_bound(encoder, decoder, likelihood, key, x, mask, num_importance=1, beta=1.0):
    r"""Training bound per row ``[N]``: the masked ELBO, or MIWAE's bound for ``K > 1``.

    With ``K = num_importance`` draws :math:`z_k \sim q(z \mid \tilde x, m)`,

    .. math::

        \mathcal L_K = \log \frac1K \sum_k \exp\Big(\sum_{j \in O}
        \log p(x_j \mid z_k) + \beta\,[\log p(z_k) - \log q(z_k \mid \tilde x)]\Big)

    (Mattei & Frellsen 2019, eq. 4, with a KL weight ``beta``); only the
    observed entries enter the likelihood. ``K = 1`` uses the analytic KL
    (same expectation, less variance): :func:`vaequery._elbo._row_elbo` when
    ``beta = 1`` and the encoder reads values only, so the default recipe is
    unchanged.
    """
    if num_importance == 1 and beta == 1.0 and not getattr(encoder, "mask_input", False):
        return _row_elbo(encoder, decoder, likelihood, key, x, mask)
    if num_importance == 1:
        loc, scale = _encode(encoder, x, mask)
        z = loc + scale * jax.random.normal(key, (1,) + loc.shape)
        xb, mb = (jnp.broadcast_to(a, z.shape[:-1] + a.shape[-1:]) for a in (x, mask))
        ll = likelihood.log_prob(xb, decoder(z), mb)[0]
        kl = 0.5 * jnp.sum(scale**2 + loc**2 - 1.0 - 2.0 * jnp.log(scale), -1)
        return ll - beta * kl
    return _iw_bound(encoder, decoder, likelihood, key, x, mask, num_importance, beta)


def _iw_bound(encoder, decoder, likelihood, key, x, mask, num_importance, beta=1.0):
    """MIWAE's bound per row ``[N]`` with ``K`` reparameterised draws (any ``K >= 1``)."""
    loc, scale = _encode(encoder, x, mask)
    eps = jax.random.normal(key, (num_importance,) + loc.shape)
    z = loc + scale * eps  # [K, N, d]
    xb, mb = (jnp.broadcast_to(a, z.shape[:-1] + a.shape[-1:]) for a in (x, mask))
    ll = likelihood.log_prob(xb, decoder(z), mb)  # [K, N]
    # log p(z) - log q(z | x): the 2 pi terms cancel
    log_ratio = jnp.sum(-0.5 * z**2 + 0.5 * eps**2 + jnp.log(scale), -1)
    log_w = ll + beta * log_ratio
    return jax.scipy.special.logsumexp(log_w, 0) - jnp.log(num_importance)


@eqx.filter_jit
def _heldout_scores(encoder, decoder, likelihood, key, x, mask, x_held, held, num_samples):
    r"""Predictive scores of held-out entries given each row's other observed entries.

    Self-normalised importance sampling with the encoder as proposal
    (MIWAE's imputation, Mattei & Frellsen 2019 section 4): weights
    :math:`w_k \propto p(x_O \mid z_k) p(z_k) / q(z_k \mid x_O)`.

    Returns
    -------
    (loglik, se, count)
        Sum over rows of :math:`\log p(x_H \mid x_O)` (IW estimate), and per
        feature the summed squared error of the importance-weighted predictive
        mean on the held-out entries, and their number.
    """
    loc, scale = _encode(encoder, x, mask)
    eps = jax.random.normal(key, (num_samples,) + loc.shape)
    z = loc + scale * eps
    params = decoder(z)
    xb, mb, xh, hb = (
        jnp.broadcast_to(a, z.shape[:-1] + a.shape[-1:]) for a in (x, mask, x_held, held)
    )
    log_w = likelihood.log_prob(xb, params, mb) + jnp.sum(
        -0.5 * z**2 + 0.5 * eps**2 + jnp.log(scale), -1
    )
    ll_h = likelihood.log_prob(xh, params, hb)
    lse = jax.scipy.special.logsumexp
    loglik = jnp.sum(lse(log_w + ll_h, 0) - lse(log_w, 0))
    w = jax.nn.softmax(log_w, 0)[..., None]
    mean = jnp.sum(w * likelihood.mean(params), 0)
    se = jnp.sum(jnp.where(held, (mean - x_held) ** 2, 0.0), 0)
    return loglik, se, jnp.sum(held, 0)


@eqx.filter_jit
def _run_epoch(
    params, static, likelihood, opt_cfg, opt_state, key, x, mask, batch_size, obj=(1, 1.0)
):
    """One pass over shuffled minibatches under ``lax.scan`` (compiled once per config).

    ``opt_cfg`` = (learning rate, clip norm[, weight decay]); ``obj`` =
    (importance samples, KL weight beta), see :func:`_row_bound`.
    """
    opt = _optimizer(*opt_cfg)
    n = x.shape[0]
    nb = n // batch_size  # the last partial batch is dropped; rows reshuffle every epoch
    k_perm, k_steps = jax.random.split(key)
    idx = jax.random.permutation(k_perm, n)[: nb * batch_size].reshape(nb, batch_size)

    def loss_fn(p, k, xb, mb):
        enc, dec = eqx.combine(p, static)
        return -jnp.mean(_row_bound(enc, dec, likelihood, k, xb, mb, *obj))

    def step(carry, inp):
        p, s = carry
        k, i = inp
        loss, g = jax.value_and_grad(loss_fn)(p, k, x[i], mask[i])
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (params, opt_state), losses = jax.lax.scan(
        step, (params, opt_state), (jax.random.split(k_steps, nb), idx)
    )
    return params, opt_state, losses.mean()


def evaluate_elbo(vae: VAE, data, key=0, num_samples=16) -> float:
    """Mean per-row ELBO of ``data`` under a VAE with an encoder.

    Parameters
    ----------
    vae : VAE
        Needs ``encode_fn``.
    data : Table, MaskedTable or array ``[N, D]``
        Raw units; NaN entries are left out of the likelihood.
    key : int or jax PRNG key
    num_samples : int
        Draws of ``z`` per row.

    Returns
    -------
    float
        Nats per row, in standardised units (the data's ``loc``/``scale``).
    """
    if vae.encode_fn is None:
        raise ValueError("evaluate_elbo needs a VAE with an encoder (encode_fn)")
    x, mask = _model_units(data, vae.schema)
    return float(
        _mean_elbo(vae.encode_fn, vae.decode_fn, vae.likelihood, _as_key(key), x, mask, num_samples)
    )


#: Trainers of other model families, ``{method: fn}``, filled by
#: :func:`register_method` (vaequery.models.vaeac registers ``"vaeac"``)
_METHODS: dict = {}


def register_method(name: str, fn) -> None:
    """Let ``train(..., method=name)`` train another model family.

    Parameters
    ----------
    name : str
        The ``method`` value.
    fn : callable
        Called with ``train``'s arguments (data positionally, the rest by
        keyword, plus the method's own options).
    """
    _METHODS[name] = fn


#: Defaults of the options for small, incomplete tables (issue 18); a recipe
#: records an option only when it differs from these.
_DEFAULTS = {
    "num_importance": 1,
    "beta": 1.0,
    "encoder_mask": False,
    "weight_decay": 0.0,
    "holdout": 0.0,
    "select_by": "loglik",
}

_SELECT_BY = ("loglik", "error")


def _check_options(*, num_importance, beta, encoder_mask, weight_decay, holdout, select_by, mixed):
    """Validate the options of :func:`train` for incomplete tables; returns them normalised."""
    if isinstance(num_importance, bool) or not isinstance(num_importance, (int, np.integer)):
        raise TypeError(
            f"num_importance must be a positive integer (importance samples per row), "
            f"got {num_importance!r}"
        )
    if num_importance < 1:
        raise ValueError(
            f"num_importance must be >= 1 (1 = the masked ELBO, K > 1 = MIWAE's bound), "
            f"got {num_importance}"
        )
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta (the KL weight) must be a finite number > 0, got {beta!r}")
    if not np.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if not np.isfinite(holdout) or not 0.0 <= holdout < 1.0:
        raise ValueError(
            f"holdout must be a fraction in [0, 1) of the observed training entries to hide "
            f"for early stopping (e.g. 0.1), got {holdout!r}"
        )
    if select_by not in _SELECT_BY:
        raise ValueError(f"select_by must be one of {list(_SELECT_BY)}, got {select_by!r}")
    if not isinstance(encoder_mask, (bool, np.bool_)):
        raise TypeError(f"encoder_mask must be True or False, got {encoder_mask!r}")
    if encoder_mask and mixed:
        raise ValueError(
            "encoder_mask=True needs a table whose features are all real: the backends call "
            "the encoder on zero-filled rows and read the mask as x != 0, which a binary or "
            "categorical code 0 would break"
        )
    return {
        "num_importance": int(num_importance),
        "beta": float(beta),
        "encoder_mask": bool(encoder_mask),
        "weight_decay": float(weight_decay),
        "holdout": float(holdout),
        "select_by": select_by,
    }


def _fit(
    x_tr,
    m_tr,
    val,
    schema,
    likelihood,
    mixed,
    cfg,
    key,
    *,
    batch_size,
    learning_rate,
    clip_norm,
    patience,
    min_scale,
    progress,
    name,
):
    """Train one configuration ``cfg``; returns the best epoch's parameters and its record.

    Early stopping: on held-out training entries when ``cfg["holdout"] > 0``
    (hidden from the bound, scored by :func:`_heldout_scores`), else on the
    validation rows' ELBO when ``val`` is given, else none.
    """
    D = len(schema)
    latent_dim, hidden = cfg["latent_dim"], cfg["hidden"]
    n = x_tr.shape[0]
    B = min(int(batch_size), n)
    k_enc, k_dec, k_train, k_eval = jax.random.split(_as_key(key), 4)
    model = (
        MLPEncoder(D, latent_dim, hidden, key=k_enc, mask_input=cfg["encoder_mask"]),
        MixedMLPDecoder(
            latent_dim,
            schema.kinds,
            [f.num_levels for f in schema],
            hidden,
            min_scale=min_scale,
            key=k_dec,
        )
        if mixed
        else MLPDecoder(latent_dim, D, hidden, min_scale=min_scale, key=k_dec),
    )
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_cfg = (float(learning_rate), float(clip_norm))
    if cfg["weight_decay"]:
        opt_cfg = (*opt_cfg, cfg["weight_decay"])
    obj = (cfg["num_importance"], cfg["beta"])
    opt_state = _optimizer(*opt_cfg).init(params)

    x_fit, m_fit = x_tr, m_tr
    stopping = "val" if val is not None else None
    if cfg["holdout"] > 0:
        # Hide a fraction of the observed entries from the bound and the encoder;
        # the epoch whose model predicts them best is kept (Mattei & Frellsen's
        # imputation, scored as log-likelihood or squared error).
        k_hold = jax.random.fold_in(k_eval, 7)
        held = m_tr & jax.random.bernoulli(k_hold, cfg["holdout"], m_tr.shape)
        m_fit = m_tr & ~held
        x_fit = jnp.where(m_fit, x_tr, 0.0)
        x_held = jnp.where(held, x_tr, 0.0)
        stopping = "holdout"

        def score(p):
            enc, dec = eqx.combine(p, static)
            ll, se, cnt = _heldout_scores(
                enc, dec, likelihood, k_eval, x_fit, m_fit, x_held, held, 16
            )
            if cfg["select_by"] == "loglik":
                return float(ll) / max(int(jnp.sum(cnt)), 1)
            ok = np.asarray(cnt) > 0
            return -float(np.mean(np.sqrt(np.asarray(se)[ok] / np.asarray(cnt)[ok])))

    elif val is not None:
        x_va, m_va = val

        def score(p):
            enc, dec = eqx.combine(p, static)
            return float(_mean_elbo(enc, dec, likelihood, k_eval, x_va, m_va, 4))

    from tqdm.auto import tqdm

    best, best_epoch, params_best = -np.inf, 0, params
    epochs_run, history = 0, []
    bar = tqdm(range(cfg["num_epochs"]), disable=not progress, desc=f"train {name or ''}".strip())
    for epoch in bar:
        k_epoch = jax.random.fold_in(k_train, epoch)
        params, opt_state, loss = _run_epoch(
            params, static, likelihood, opt_cfg, opt_state, k_epoch, x_fit, m_fit, B, obj
        )
        epochs_run = epoch + 1
        if stopping is None:
            params_best, best_epoch = params, epoch + 1
            bar.set_postfix(loss=f"{float(loss):.3f}")
            continue
        v = score(params)
        history.append(v)
        if v > best:
            best, best_epoch, params_best = v, epoch + 1, params
        bar.set_postfix(loss=f"{float(loss):.3f}", score=f"{v:.3f}", best=f"{best:.3f}")
        if epoch + 1 - best_epoch >= patience:
            break
    bar.close()
    return {
        "params": params_best,
        "static": static,
        "score": float(best) if stopping else None,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "batch_size": B,
        "stopping": stopping,
        "history": history,
    }


def train(
    train_data,
    val_data=None,
    test_data=None,
    *,
    latent_dim: int = 16,
    hidden=(128, 128),
    num_epochs: int = 500,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    clip_norm: float = 10.0,
    patience: int = 30,
    min_scale: float = 1e-3,
    key=0,
    progress: bool = True,
    schema: Schema | None = None,
    names=None,
    kinds: dict | None = None,
    name: str | None = None,
    num_importance: int = 1,
    beta: float = 1.0,
    encoder_mask: bool = False,
    weight_decay: float = 0.0,
    holdout: float = 0.0,
    select_by: str = "loglik",
    tune=False,
    method: str = "vae",
    **method_options,
) -> VAE:
    """Train a VAE (Gaussian, or mixed Gaussian/Bernoulli/categorical) for queries.

    With ``method="vaeac"`` train a VAEAC instead (a model of every
    conditional of a real-valued table, Ivanov et al. 2019):
    :func:`vaequery.models.vaeac.train_vaeac` takes the same arguments plus
    its own (``scale``, ``mask_rate``, ``val_fraction``, ...) and returns a
    :class:`~vaequery.models.VAEACModel`.

    Parameters
    ----------
    train_data, val_data, test_data : Table, MaskedTable, DataFrame or array ``[N, D]``
        Raw units; NaN (or None) = unobserved, left out of the likelihood.
        Categorical columns hold level names (or codes). ``val_data`` drives
        early stopping (the best epoch's weights are returned); without it
        training runs ``num_epochs``. ``test_data`` is only evaluated, for
        ``metadata["test_elbo"]``. Validation and test data are read with the
        schema of the training data.
    latent_dim : int
        ``d``. QAVI's final tabular runs use 1; posterior matching uses 16 for
        most UCI sets (its appendix, Table 3), which vaequery takes as default.
    hidden : tuple of int
        Hidden widths of encoder and decoder (QAVI: (128, 128)).
    num_epochs, batch_size, learning_rate : int, int, float
        QAVI: ~2,000, 64, 1e-3 (Adam).
    clip_norm : float
        Global-norm gradient clipping.
    patience : int
        Stop after this many epochs without a better validation ELBO.
    min_scale : float
        Floor of the decoder's Gaussian scale (QAVI 0.001).
    key : int or jax PRNG key
        Initialisation, shuffling and reparameterisation; same key, same model.
    progress : bool
        Show a tqdm progress bar.
    schema : Schema, optional
        Names, kinds, levels and scaling. Default: the table's own schema (a
        :class:`vaequery.datasets.Table`), else inferred from ``train_data``
        by :func:`vaequery.schema.infer_schema` (kinds from the columns,
        ``loc``/``scale`` from the observed training values).
    names : sequence of str, optional
        Column names of a plain array (needed to infer its schema).
    kinds : dict of str to str, optional
        Kind overrides for the inferred schema, e.g. ``{"grade":
        "categorical"}``. Cannot be combined with ``schema``.
    name : str, optional
        Recorded in the metadata (defaults to the table's name).
    num_importance : int
        ``K``: 1 trains the masked ELBO; ``K > 1`` the importance-weighted
        bound on incomplete data (MIWAE, Mattei & Frellsen 2019), with the
        likelihood only over observed entries (see :func:`_row_bound`).
    beta : float
        Weight of the KL term (of ``log p(z) - log q(z | x)`` for ``K > 1``).
    encoder_mask : bool
        Give the encoder the missingness mask as a second input (``[x, mask]``;
        recorded in the saved model). All-real tables only: backends call the
        encoder on zero-filled rows and it then reads the mask as ``x != 0``.
    weight_decay : float
        Decoupled weight decay (AdamW) on every weight; 0 = plain Adam.
    holdout : float
        Fraction of the observed training entries hidden from training and
        used for early stopping instead of ``val_data``: after each epoch the
        model predicts each hidden entry from its row's other observed entries
        (self-normalised importance sampling with the encoder, 16 draws) and
        the best epoch by ``select_by`` is kept. Suits small tables with holes:
        every row still trains. 0 = off.
    select_by : {"loglik", "error"}
        Score of the held-out entries: predictive log-likelihood per entry, or
        minus the mean over features of the RMSE of the predictive mean (model
        units).
    tune : bool or dict
        Choose width, depth, latent size, ``beta`` and the epoch (by early
        stopping) with the small deterministic search of
        :func:`vaequery.tuning.tune_candidates`, scored on held-out training
        entries only (``val_data`` and ``test_data`` are not read by the
        search). A dict overrides the search's grid, e.g. ``{"latent_dim": [2,
        4], "hidden": [(64,), (128, 128)], "beta": [1.0], "num_epochs": 100}``.
        The choice and every candidate's score go to
        ``metadata["recipe"]["tune"]``.
    method : {"vae", "vaeac", "hvae"}
        What to train: a VAE, a VAEAC (:mod:`vaequery.models.vaeac`) or a
        hierarchical VAE (:mod:`vaequery.models.hvae`; implied by
        ``hierarchy=``).
    **method_options
        Options of the ``"vaeac"`` and ``"hvae"`` trainers only (e.g.
        ``hierarchy=[4, 8]``, the latent sizes of the HVAE's layers).

    Returns
    -------
    VAE
        With ``encode_fn`` (takes zero-filled model-unit ``x [..., D]``:
        standardised reals, 0/1 and level codes), a Gaussian likelihood when
        every feature is real and a :class:`~vaequery.likelihoods.Mixed` one
        otherwise (decoder :class:`~vaequery.decoder.MixedMLPDecoder`), the
        schema and ``metadata`` holding the recipe, the epochs run and the
        train/val/test ELBOs (nats per row, model units).

    Raises
    ------
    TypeError
        A plain array without ``names`` or ``schema`` (nothing names its
        columns), or both ``schema`` and ``kinds``; a non-integer
        ``num_importance``, a non-boolean ``encoder_mask``, a ``tune`` that is
        neither a bool nor a dict.
    ValueError
        A column whose kind or scaling cannot be inferred (see
        :func:`~vaequery.schema.infer_schema`), or a value outside a
        feature's levels; ``num_importance < 1``, ``beta <= 0``,
        ``weight_decay < 0``, ``holdout`` outside ``[0, 1)``, an unknown
        ``select_by``, ``encoder_mask`` on a table with non-real features, or
        an unknown or empty entry of ``tune``.

    Examples
    --------
    >>> import vaequery as vq
    >>> t = vq.datasets.load("banknote", "train")
    >>> vae = vq.train(t, latent_dim=2, hidden=(16,), num_epochs=2, progress=False)
    >>> vae.latent_dim, vae.encode_fn is not None
    (2, True)
    """
    if method == "vae" and "hierarchy" in method_options and "hvae" in _METHODS:
        method = "hvae"  # latent layers given: the hierarchical VAE (vaequery.models.hvae)
    # the training options of method="vae" (checked below, or passed on when set)
    given = dict(
        num_importance=num_importance,
        beta=beta,
        encoder_mask=encoder_mask,
        weight_decay=weight_decay,
        holdout=holdout,
        select_by=select_by,
        tune=tune,
    )
    if method != "vae" and method in _METHODS:
        # the options of method="vae" reach another method only when set
        method_options = {
            **{k: v for k, v in given.items() if v != {**_DEFAULTS, "tune": False}[k]},
            **method_options,
        }
        return _METHODS[method](
            train_data,
            val_data,
            test_data,
            latent_dim=latent_dim,
            hidden=hidden,
            num_epochs=num_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            clip_norm=clip_norm,
            patience=patience,
            min_scale=min_scale,
            key=key,
            progress=progress,
            schema=schema,
            names=names,
            kinds=kinds,
            name=name,
            **method_options,
        )
    if method != "vae":
        raise ValueError(f"method must be one of {['vae', *_METHODS]}, got {method!r}")
    if method_options:
        raise TypeError(
            f"train() got unexpected keyword argument(s) {sorted(method_options)}; "
            "options beyond train()'s own belong to method='vaeac' or method='hvae'"
        )
    schema = _resolve_schema(train_data, schema, names, kinds)
    name = name or getattr(train_data, "name", None)
    D = len(schema)
    mixed = any(k != "real" for k in schema.kinds)
    opts = _check_options(**{k: v for k, v in given.items() if k != "tune"}, mixed=mixed)
    x_tr, m_tr = _model_units(train_data, schema)
    likelihood = make_likelihood("mixed" if mixed else "gaussian", schema)
    val = None if val_data is None else _model_units(val_data, schema)
    base = dict(
        latent_dim=int(latent_dim),
        hidden=tuple(int(h) for h in hidden),
        num_epochs=int(num_epochs),
        **opts,
    )
    common = dict(
        batch_size=batch_size,
        learning_rate=learning_rate,
        clip_norm=clip_norm,
        patience=patience,
        min_scale=min_scale,
        progress=progress,
        name=name,
    )
    t0 = time.perf_counter()
    search = None
    if tune:
        from vaequery.tuning import tune_candidates

        candidates = tune_candidates(D, tune, base)
        runs = []
        for i, cand in enumerate(candidates):
            fit = _fit(x_tr, m_tr, None, schema, likelihood, mixed, cand, key, **common)
            runs.append((fit["score"], -i, cand, fit))
        best_run = max(runs, key=lambda r: (r[0], r[1]))
        cfg, fit = best_run[2], best_run[3]
        search = {
            "selected": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
            "by": f"held-out training entries ({cfg['holdout']:.0%}), {cfg['select_by']}",
            "candidates": [
                {
                    **{k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()},
                    "score": float(sc),
                    "best_epoch": f["best_epoch"],
                }
                for sc, _, c, f in runs
            ],
        }
    else:
        cfg = base
        fit = _fit(x_tr, m_tr, val, schema, likelihood, mixed, cfg, key, **common)
    seconds = time.perf_counter() - t0
    params_best, static = fit["params"], fit["static"]
    latent_dim, hidden = cfg["latent_dim"], cfg["hidden"]
    k_eval = jax.random.split(_as_key(key), 4)[3]
    k_report = jax.random.fold_in(k_eval, 1)
    enc, dec = eqx.combine(params_best, static)

    def elbo_of(data):
        if data is None:
            return None
        x, m = _model_units(data, schema)
        return float(_mean_elbo(enc, dec, likelihood, k_report, x, m, 16))

    recipe = {
        "dataset": name,
        "latent_dim": int(latent_dim),
        "hidden": list(hidden),
        "likelihood": "mixed" if mixed else "gaussian",
        "min_scale": float(min_scale),
        "optimizer": f"adam(lr={learning_rate}) after clip_by_global_norm({clip_norm})"
        if not cfg["weight_decay"]
        else f"adamw(lr={learning_rate}, weight_decay={cfg['weight_decay']}) after "
        f"clip_by_global_norm({clip_norm})",
        "batch_size": fit["batch_size"],
        "max_epochs": int(cfg["num_epochs"]),
        "patience": int(patience) if fit["stopping"] else None,
        "epochs_run": fit["epochs_run"],
        "best_epoch": fit["best_epoch"],
        "key": int(key) if isinstance(key, (int, np.integer)) else None,
        "num_train": int(x_tr.shape[0]),
        "num_val": None if val_data is None else int(len(getattr(val_data, "X", val_data))),
        "num_test": None if test_data is None else int(len(getattr(test_data, "X", test_data))),
        "train_seconds": round(seconds, 2),
        "elbo_units": "nats per row, standardised features, 16 draws of z per row",
        "kinds": {k: schema.kinds.count(k) for k in ("real", "binary", "categorical")},
    }
    # The options of issue 18 are recorded only when used (the shipped recipes stay as they were).
    for k, default in _DEFAULTS.items():
        if cfg[k] != default:
            recipe[k] = cfg[k]
    if fit["stopping"] == "holdout":
        recipe["early_stopping"] = (
            f"{cfg['holdout']:.0%} of the observed training entries held out, "
            f"best {cfg['select_by']}"
        )
        recipe["holdout_score"] = fit["score"]
        recipe["holdout_history"] = [round(v, 5) for v in fit["history"]]
    if search is not None:
        recipe["tune"] = search
    metadata = {
        "recipe": recipe,
        "train_elbo": elbo_of(train_data),
        "val_elbo": elbo_of(val_data),
        "test_elbo": elbo_of(test_data),
    }
    return VAE(dec, latent_dim, schema, likelihood, encode_fn=enc, metadata=metadata)


#: Recipes of the shipped models (``vaequery.pretrained``); see
#: ``benchmarks/train_pretrained.py``. Architecture: QAVI's 128-128 MLPs. Latent
#: sizes: 16 for breast_cancer (posterior matching's UCI default, and the
#: decoder the throughput floor is quoted for); smaller tables get about D/2,
#: since QAVI shows that even d = 1 models these tables well.
PRETRAINED_RECIPES = {
    "breast_cancer": dict(latent_dim=16),
    "white_wine": dict(latent_dim=6),
    "red_wine": dict(latent_dim=6),
    "banknote": dict(latent_dim=2),
    "concrete": dict(latent_dim=4),
    "yeast": dict(latent_dim=4),
    # Pixels are multiples of 1/16 in model units: a scale floor near the
    # quantisation width stops the always-blank border pixels from dominating.
    "digits": dict(latent_dim=10, min_scale=0.02),
    # Mixed kinds (4 real, 3 categorical; NaN entries drop out of the ELBO).
    "penguins": dict(latent_dim=3),
}

_COMMON = dict(hidden=(128, 128), num_epochs=300, batch_size=64, learning_rate=1e-3, patience=30)

#: Guides shipped with every pretrained model (``benchmarks/train_pretrained.py``):
#: a posterior-matching Gaussian head (residual MLP, width 64, 2 blocks: small
#: enough to ship) and QAVI's re-tuned encoder, both on "uniform" masks, at most
#: 20,000 steps of batch 256 with early stopping on the validation split, key 0.
GUIDE_RECIPES = {
    "posterior_matching": dict(head="gaussian", width=64, num_blocks=2, masks="uniform"),
    "retuned_encoder": dict(masks="uniform"),
}


def train_pretrained_guides(vae: VAE, name: str, *, key=0, progress=True, **overrides) -> VAE:
    """Train the shipped guides (:data:`GUIDE_RECIPES`) of a pretrained model in place.

    Parameters
    ----------
    vae : VAE
        The model trained by :func:`train_pretrained` for dataset ``name``.
    name : str
        Its dataset (the guides train on its train split, stop on its val split).
    key : int
    progress : bool
    **overrides
        Passed to both trainers (e.g. ``num_steps=100`` for a smoke test).

    Returns
    -------
    VAE
        The same object, with ``vae.guides`` filled.
    """
    from vaequery import datasets, guides

    train_split, val_split = datasets.load(name, "train"), datasets.load(name, "val")
    trainers = {
        "posterior_matching": guides.train_posterior_matching,
        "retuned_encoder": guides.train_retuned_encoder,
    }
    for guide_name, recipe in GUIDE_RECIPES.items():
        trainers[guide_name](
            vae, train_split, val_split, key=key, progress=progress, **{**recipe, **overrides}
        )
    return vae


def train_pretrained(name: str, out_dir=None, *, key=0, progress=True, **overrides) -> VAE:
    """Train one shipped model with its recipe and optionally save it.

    Parameters
    ----------
    name : str
        A key of :data:`PRETRAINED_RECIPES`.
    out_dir : str or Path, optional
        Save to ``out_dir / name`` (see :func:`vaequery.save`), plus
        ``metrics.json`` with the held-out test ELBO.
    key : int
    progress : bool
    **overrides
        Replace recipe entries (e.g. ``num_epochs=5`` for a smoke test).

    Returns
    -------
    VAE
    """
    import json
    from pathlib import Path

    from vaequery import datasets

    if name not in PRETRAINED_RECIPES:
        raise ValueError(f"no recipe for {name!r}; known: {sorted(PRETRAINED_RECIPES)}")
    cfg = {**_COMMON, **PRETRAINED_RECIPES[name], **overrides}
    splits = [datasets.load(name, s) for s in ("train", "val", "test")]
    vae = train(*splits, key=key, progress=progress, **cfg)
    if out_dir is not None:
        target = Path(out_dir) / name
        vae.save(target)
        metrics = {
            "dataset": name,
            "test_elbo": vae.metadata["test_elbo"],
            "val_elbo": vae.metadata["val_elbo"],
            "train_elbo": vae.metadata["train_elbo"],
            "num_features": vae.num_features,
            "test_elbo_per_feature": vae.metadata["test_elbo"] / vae.num_features,
            "units": vae.metadata["recipe"]["elbo_units"],
            "epochs_run": vae.metadata["recipe"]["epochs_run"],
            "best_epoch": vae.metadata["recipe"]["best_epoch"],
            "train_seconds": vae.metadata["recipe"]["train_seconds"],
        }
        (target / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return vae
