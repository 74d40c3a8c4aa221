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
_mean_elbo = eqx.filter_jit(lambda *a: jnp.mean(_row_elbo(*a)))


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


def _optimizer(learning_rate, clip_norm):
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


@eqx.filter_jit
def _run_epoch(params, static, likelihood, opt_cfg, opt_state, key, x, mask, batch_size):
    """One pass over shuffled minibatches under ``lax.scan`` (compiled once per config)."""
    opt = _optimizer(*opt_cfg)
    n = x.shape[0]
    nb = n // batch_size  # the last partial batch is dropped; rows reshuffle every epoch
    k_perm, k_steps = jax.random.split(key)
    idx = jax.random.permutation(k_perm, n)[: nb * batch_size].reshape(nb, batch_size)

    def loss_fn(p, k, xb, mb):
        enc, dec = eqx.combine(p, static)
        return -jnp.mean(_row_elbo(enc, dec, likelihood, k, xb, mb))

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
    method : {"vae", "vaeac"}
        What to train.
    **method_options
        Options of the ``"vaeac"`` trainer only.

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
        columns), or both ``schema`` and ``kinds``.
    ValueError
        A column whose kind or scaling cannot be inferred (see
        :func:`~vaequery.schema.infer_schema`), or a value outside a
        feature's levels.

    Examples
    --------
    >>> import vaequery as vq
    >>> t = vq.datasets.load("banknote", "train")
    >>> vae = vq.train(t, latent_dim=2, hidden=(16,), num_epochs=2, progress=False)
    >>> vae.latent_dim, vae.encode_fn is not None
    (2, True)
    """
    if method != "vae" and method in _METHODS:
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
            "options beyond train()'s own belong to method='vaeac'"
        )
    schema = _resolve_schema(train_data, schema, names, kinds)
    name = name or getattr(train_data, "name", None)
    D = len(schema)
    hidden = tuple(int(h) for h in hidden)
    x_tr, m_tr = _model_units(train_data, schema)
    n = x_tr.shape[0]
    B = min(int(batch_size), n)
    mixed = any(k != "real" for k in schema.kinds)
    likelihood = make_likelihood("mixed" if mixed else "gaussian", schema)

    k_enc, k_dec, k_train, k_eval = jax.random.split(_as_key(key), 4)
    model = (
        MLPEncoder(D, latent_dim, hidden, key=k_enc),
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
    opt_state = _optimizer(*opt_cfg).init(params)

    def elbo_of(data, k, num_samples):
        if data is None:
            return None
        x, m = _model_units(data, schema)
        enc, dec = eqx.combine(params_best, static)
        return float(_mean_elbo(enc, dec, likelihood, k, x, m, num_samples))

    if val_data is not None:
        x_va, m_va = _model_units(val_data, schema)

        def val_elbo(p):
            enc, dec = eqx.combine(p, static)
            return _mean_elbo(enc, dec, likelihood, k_eval, x_va, m_va, 4)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    best, best_epoch, params_best = -np.inf, 0, params
    epochs_run = 0
    bar = tqdm(range(num_epochs), disable=not progress, desc=f"train {name or ''}".strip())
    for epoch in bar:
        k_epoch = jax.random.fold_in(k_train, epoch)
        params, opt_state, loss = _run_epoch(
            params, static, likelihood, opt_cfg, opt_state, k_epoch, x_tr, m_tr, B
        )
        epochs_run = epoch + 1
        if val_data is None:
            params_best, best_epoch = params, epoch + 1
            bar.set_postfix(loss=f"{float(loss):.3f}")
            continue
        v = float(val_elbo(params))
        if v > best:
            best, best_epoch, params_best = v, epoch + 1, params
        bar.set_postfix(loss=f"{float(loss):.3f}", val_elbo=f"{v:.3f}", best=f"{best:.3f}")
        if epoch + 1 - best_epoch >= patience:
            break
    bar.close()
    seconds = time.perf_counter() - t0

    k_report = jax.random.fold_in(k_eval, 1)
    enc, dec = eqx.combine(params_best, static)
    recipe = {
        "dataset": name,
        "latent_dim": int(latent_dim),
        "hidden": list(hidden),
        "likelihood": "mixed" if mixed else "gaussian",
        "min_scale": float(min_scale),
        "optimizer": f"adam(lr={learning_rate}) after clip_by_global_norm({clip_norm})",
        "batch_size": B,
        "max_epochs": int(num_epochs),
        "patience": int(patience) if val_data is not None else None,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "key": int(key) if isinstance(key, (int, np.integer)) else None,
        "num_train": int(n),
        "num_val": None if val_data is None else int(len(getattr(val_data, "X", val_data))),
        "num_test": None if test_data is None else int(len(getattr(test_data, "X", test_data))),
        "train_seconds": round(seconds, 2),
        "elbo_units": "nats per row, standardised features, 16 draws of z per row",
        "kinds": {k: schema.kinds.count(k) for k in ("real", "binary", "categorical")},
    }
    metadata = {
        "recipe": recipe,
        "train_elbo": elbo_of(train_data, k_report, 16),
        "val_elbo": elbo_of(val_data, k_report, 16),
        "test_elbo": elbo_of(test_data, k_report, 16),
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
