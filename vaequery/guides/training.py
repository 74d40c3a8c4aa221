r"""Training amortized guides: posterior matching, decoder-only, re-tuned encoder.

All three share one optax loop (:func:`_fit`): minibatches are *generated inside
the compiled program* (rows and masks drawn from the key), ``eval_every`` steps
run under one ``lax.scan``, then the loss on a fixed validation batch decides
early stopping; the best parameters are kept. Same key, same guide.

Posterior matching (Strauss & Oliva 2022, eq. 3), for a frozen encoder
:math:`q_\psi(z\mid x)` and a partial encoder :math:`q_\theta(z\mid x_O, b)`:

.. math::
    \min_\theta\; \mathbb E_{x}\,\mathbb E_{b}\,\mathbb E_{z\sim q_\psi(z\mid x)}
    \big[-\log q_\theta(z\mid x_O, b)\big].

The decoder is untouched and no gradient flows through ``z`` (appendix D.1).

Decoder-only amortization (vaequery's own; no paper has it) minimises the same
loss with pairs from the *model* instead of data and encoder:
:math:`z\sim\mathcal N(0, I)`, :math:`x\sim p(x\mid z)`. Its optimum is the
exact posterior :math:`p(z\mid x_O)` for every mask in the training
distribution (the expected forward KL
:math:`\mathbb E_{p(x_O)}\mathrm{KL}(p(z\mid x_O)\,\|\,q_\theta)` plus a
constant), so a user holding only a decoder gets amortized inference.

The re-tuned encoder (Collier et al. 2020, QAVI's baseline) fine-tunes a copy
of the model's encoder on zero-filled masked rows by maximising the ELBO of the
observed features with the decoder frozen,
:math:`\mathbb E_{q(z\mid\tilde x)}[\log p(x_O\mid z)] - \mathrm{KL}(q\,\|\,p)`.

Optimiser: Adam with weight decay 1e-5 (posterior matching's settings), learning
rate 1e-3 decayed by 0.9 ten times over the run (posterior matching: every 5,000
of 200,000 steps), global-norm clipping at 10.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaequery.guides.guide import Guide
from vaequery.guides.masks import MaskDistribution, as_mask_distribution
from vaequery.guides.networks import PartialEncoder


def _key(key):
    from vaequery.fit import as_key

    return as_key(key)


def _optimizer(learning_rate, num_steps, weight_decay, clip_norm):
    schedule = optax.exponential_decay(learning_rate, max(num_steps // 10, 1), 0.9)
    return optax.chain(
        optax.clip_by_global_norm(clip_norm), optax.adamw(schedule, weight_decay=weight_decay)
    )


def _check_positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


@eqx.filter_jit
def _chunk(params, static, opt_state, key, data, loss_fn, make_batch, opt_cfg, num):
    """``num`` optimisation steps under one ``lax.scan``.

    Module-level and keyed on hashable modules (the batch maker and loss are
    :class:`equinox.Module` s), so a second guide of the same shapes reuses
    the compiled program.
    """
    opt = _optimizer(*opt_cfg)

    def step(carry, k):
        p, s = carry
        kb, kl = jax.random.split(k)
        batch = make_batch(kb, data)
        loss, g = jax.value_and_grad(lambda q: loss_fn(eqx.combine(q, static), batch, kl))(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (params, opt_state), losses = jax.lax.scan(
        step, (params, opt_state), jax.random.split(key, num)
    )
    return params, opt_state, losses.mean()


@eqx.filter_jit
def _val_loss(params, static, batch, loss_fn):
    # the validation loss is a fixed function of the parameters
    return loss_fn(eqx.combine(params, static), batch, jax.random.key(1))


def _fit(
    network,
    loss_fn,
    make_batch,
    data,
    val_batch,
    *,
    num_steps,
    eval_every,
    patience,
    learning_rate,
    weight_decay,
    clip_norm,
    key,
    progress,
    desc,
):
    """The shared loop. ``loss_fn(net, batch, key)``; ``make_batch(key, data)``."""
    num_steps = _check_positive_int("num_steps", num_steps)
    eval_every = min(_check_positive_int("eval_every", eval_every), num_steps)
    patience = _check_positive_int("patience", patience)
    params, static = eqx.partition(network, eqx.is_inexact_array)
    opt_cfg = (float(learning_rate), num_steps, float(weight_decay), float(clip_norm))
    opt_state = _optimizer(*opt_cfg).init(params)

    from tqdm.auto import tqdm

    num_chunks = -(-num_steps // eval_every)
    t0 = time.perf_counter()
    best, best_params, best_chunk, history = np.inf, params, 0, []
    bar = tqdm(range(num_chunks), disable=not progress, desc=desc)
    for c in bar:
        params, opt_state, train_loss = _chunk(
            params,
            static,
            opt_state,
            jax.random.fold_in(key, c),
            data,
            loss_fn,
            make_batch,
            opt_cfg,
            eval_every,
        )
        v = float(_val_loss(params, static, val_batch, loss_fn))
        if not np.isfinite(v) or not np.isfinite(float(train_loss)):
            bar.close()
            raise FloatingPointError(
                f"{desc}: the loss became non-finite after {(c + 1) * eval_every} steps "
                f"(train {float(train_loss)}, validation {v}); try a smaller learning_rate"
            )
        history.append(round(v, 4))
        if v < best:
            best, best_params, best_chunk = v, params, c + 1
        bar.set_postfix(loss=f"{float(train_loss):.3f}", val=f"{v:.3f}", best=f"{best:.3f}")
        if c + 1 - best_chunk >= patience:
            break
    bar.close()
    info = {
        "steps_run": (c + 1) * eval_every,
        "best_step": best_chunk * eval_every,
        "val_loss": best,
        "val_history": history,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
    }
    return eqx.combine(best_params, static), info


def _rows(model, data, name):
    """Standardised rows and availability mask ``([N, D], bool [N, D])`` from raw data."""
    from vaequery._elbo import _model_units

    if data is None:
        raise TypeError(f"{name} needs training data (a table or an array [N, D] in raw units)")
    x, avail = _model_units(data, model.schema)
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows of data, got {x.shape[0]}")
    return x, avail


def _train_val_rows(model, train_data, val_data, key, name):
    """``((x, avail), (x_val, avail_val))``; without ``val_data``, 10 % of the rows held out."""
    x, avail = _rows(model, train_data, name)
    if val_data is not None:
        return (x, avail), _rows(model, val_data, name)
    perm = np.asarray(jax.random.permutation(key, x.shape[0]))
    n_val = max(1, x.shape[0] // 10)
    val, train = perm[:n_val], perm[n_val:]
    return (x[train], avail[train]), (x[val], avail[val])


class _PMBatch(eqx.Module):
    """Rows of the data, masks, and ``z ~ q_psi(z | x)`` from the frozen encoder."""

    encode_fn: Callable
    masks: MaskDistribution
    batch_size: int = eqx.field(static=True)

    def __call__(self, key, data):
        x, avail = data
        ki, km, kz = jax.random.split(key, 3)
        idx = jax.random.randint(ki, (self.batch_size,), 0, x.shape[0])
        xb, ab = x[idx], avail[idx]
        loc, scale = self.encode_fn(xb)
        z = jax.lax.stop_gradient(loc + scale * jax.random.normal(kz, loc.shape))
        b = self.masks(km, xb.shape) & ab
        return xb, b, z


def _matching_loss(net, batch, key):
    x, b, z = batch
    return -jnp.mean(jax.vmap(net.log_prob)(z, x, b))


def _partial_encoder(model, head, width, num_blocks, num_components, context_size, key):
    arch = {
        "class": "PartialEncoder",
        "num_features": model.num_features,
        "latent_dim": model.latent_dim,
        "head": head,
        "width": int(width),
        "num_blocks": int(num_blocks),
        "num_components": int(num_components),
        "context_size": int(context_size),
    }
    args = {k: v for k, v in arch.items() if k != "class"}
    return PartialEncoder(key=key, **args), arch


def _attach(model, guide, name, attach):
    if attach:
        model.guides[name] = guide
    return guide


def train_posterior_matching(
    model,
    train_data,
    val_data=None,
    *,
    head: str = "gaussian",
    masks="uniform",
    num_steps: int = 20_000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-5,
    clip_norm: float = 10.0,
    eval_every: int = 500,
    patience: int = 8,
    width: int = 128,
    num_blocks: int = 2,
    num_components: int = 10,
    context_size: int = 64,
    key=0,
    progress: bool = True,
    name: str = "posterior_matching",
    attach: bool = True,
) -> Guide:
    """Train a posterior-matching partial encoder for a model with an encoder.

    Parameters
    ----------
    model : vaequery.VAE
        Needs ``encode_fn`` (the frozen :math:`q_\\psi(z\\mid x)`).
    train_data, val_data : Table, MaskedTable or array ``[N, D]``
        Raw units; NaN entries are never shown as observed. Without
        ``val_data``, 10 % of the training rows are held out for early stopping.
    head : {"gaussian", "mixture"}
        Full-covariance Gaussian or autoregressive mixture of Gaussians.
    masks : str or MaskDistribution
        Training masks (see :mod:`vaequery.guides.masks`); default ``"uniform"``.
        Posterior matching's UCI runs use ``MCAR(0.5)``.
    num_steps, batch_size : int
        At most this many steps (posterior matching: 200,000 at 512).
    learning_rate, weight_decay, clip_norm : float
    eval_every, patience : int
        Validation every ``eval_every`` steps; stop after ``patience``
        evaluations without improvement (the best parameters are kept).
    width, num_blocks : int
        Residual MLP of the encoder (and of the mixture head).
    num_components, context_size : int
        Mixture head only.
    key : int or PRNG key
        Same key, same guide.
    progress : bool
        Show a tqdm progress bar.
    name : str
        Name in ``model.guides`` (the ``"posterior_matching"`` backend's ``guide=``).
    attach : bool
        Store the guide in ``model.guides[name]`` (saved with the model).

    Returns
    -------
    Guide

    Examples
    --------
    >>> import vaequery as vq
    >>> vae = vq.pretrained("banknote")
    >>> g = vq.guides.train_posterior_matching(vae, vq.datasets.load("banknote"),
    ...                                        num_steps=200, progress=False)
    >>> vae.given(vq.datasets.load("banknote", "test").with_missing(key=0)
    ...           ).infer("posterior_matching").z.shape
    (276, 100, 2)
    """
    if model.encode_fn is None:
        raise ValueError(
            "posterior matching distils the model's encoder q(z | x), and this model has none; "
            "use vaequery.guides.train_decoder_only(model), which needs only the decoder"
        )
    masks = as_mask_distribution(masks)
    k_split, k_net, k_val, k_fit = jax.random.split(_key(key), 4)
    (x, avail), (xv, av) = _train_val_rows(
        model, train_data, val_data, k_split, "train_posterior_matching"
    )
    net, arch = _partial_encoder(
        model, head, width, num_blocks, num_components, context_size, k_net
    )
    B = _check_positive_int("batch_size", batch_size)
    make = _PMBatch(model.encode_fn, masks, B)
    # the validation batch: every validation row, 4 masks and z draws each
    val_batch = eqx.filter_jit(_PMBatch(model.encode_fn, masks, 4 * xv.shape[0]))(k_val, (xv, av))
    net, info = _fit(
        net,
        _matching_loss,
        make,
        (x, avail),
        val_batch,
        num_steps=num_steps,
        eval_every=eval_every,
        patience=patience,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        key=k_fit,
        progress=progress,
        desc=f"posterior matching ({head})",
    )
    info.update(
        objective="posterior matching: -log q(z | x_O), z ~ frozen encoder",
        masks=masks.describe(),
        batch_size=B,
        num_train=int(x.shape[0]),
        key=int(key) if isinstance(key, (int, np.integer)) else None,
    )
    guide = Guide(
        "posterior_matching", net, list(model.feature_names), model.latent_dim, arch, info
    )
    return _attach(model, guide, name, attach)


class _DecoderBatch(eqx.Module):
    """``z ~ p(z)``, ``x ~ p(x | z)`` and masks: the model's own samples."""

    decode_fn: Callable
    likelihood: eqx.Module
    masks: MaskDistribution
    latent_dim: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)

    def __call__(self, key, data):
        kz, kx, km = jax.random.split(key, 3)
        z = jax.random.normal(kz, (self.batch_size, self.latent_dim))
        x = self.likelihood.sample(kx, self.decode_fn(z)).astype(z.dtype)
        return x, self.masks(km, x.shape), z


def _decoder_batch(model, masks, batch_size):
    return _DecoderBatch(model.decode_fn, model.likelihood, masks, model.latent_dim, batch_size)


def train_decoder_only(
    model,
    *,
    head: str = "gaussian",
    masks="uniform",
    num_steps: int = 20_000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-5,
    clip_norm: float = 10.0,
    eval_every: int = 500,
    patience: int = 8,
    width: int = 128,
    num_blocks: int = 2,
    num_components: int = 10,
    context_size: int = 64,
    num_val: int = 2048,
    key=0,
    progress: bool = True,
    name: str = "decoder_only",
    attach: bool = True,
) -> Guide:
    """Train a partial encoder from the decoder alone: no data, no encoder.

    Pairs come from the model, :math:`z\\sim\\mathcal N(0, I)`,
    :math:`x\\sim p(x\\mid z)`, masks from ``masks``; the loss is
    :math:`-\\log q_\\theta(z\\mid x_O)`, whose optimum is the exact posterior
    (see the module docstring). Parameters are those of
    :func:`train_posterior_matching`; ``num_val`` model draws (fixed by the key)
    form the validation set.

    Returns
    -------
    Guide
        Stored in ``model.guides[name]`` when ``attach``; answer queries with
        ``infer("decoder_only")``.
    """
    masks = as_mask_distribution(masks)
    k_net, k_val, k_fit = jax.random.split(_key(key), 3)
    net, arch = _partial_encoder(
        model, head, width, num_blocks, num_components, context_size, k_net
    )
    B = _check_positive_int("batch_size", batch_size)
    val_batch = eqx.filter_jit(
        _decoder_batch(model, masks, _check_positive_int("num_val", num_val))
    )(k_val, None)
    net, info = _fit(
        net,
        _matching_loss,
        _decoder_batch(model, masks, B),
        None,
        val_batch,
        num_steps=num_steps,
        eval_every=eval_every,
        patience=patience,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        key=k_fit,
        progress=progress,
        desc=f"decoder-only guide ({head})",
    )
    info.update(
        objective="decoder-only: -log q(z | x_O), z ~ p(z), x ~ p(x | z)",
        masks=masks.describe(),
        batch_size=B,
        key=int(key) if isinstance(key, (int, np.integer)) else None,
    )
    guide = Guide("decoder_only", net, list(model.feature_names), model.latent_dim, arch, info)
    return _attach(model, guide, name, attach)


class _MaskedRowsBatch(eqx.Module):
    """Zero-filled masked rows of the data and their masks."""

    masks: MaskDistribution
    batch_size: int = eqx.field(static=True)

    def __call__(self, key, data):
        x, avail = data
        ki, km = jax.random.split(key)
        idx = jax.random.randint(ki, (self.batch_size,), 0, x.shape[0])
        xb = x[idx]
        b = self.masks(km, xb.shape) & avail[idx]
        return jnp.where(b, xb, 0.0), b


class _ObservedELBOLoss(eqx.Module):
    """Negative ELBO of the observed features with the decoder frozen."""

    decode_fn: Callable
    likelihood: eqx.Module
    num_samples: int = eqx.field(static=True)

    def __call__(self, net, batch, key):
        from vaequery._elbo import _row_elbo

        xb, b = batch
        return -jnp.mean(
            _row_elbo(net, self.decode_fn, self.likelihood, key, xb, b, self.num_samples)
        )


def train_retuned_encoder(
    model,
    train_data,
    val_data=None,
    *,
    masks="uniform",
    num_steps: int = 20_000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-5,
    clip_norm: float = 10.0,
    eval_every: int = 500,
    patience: int = 8,
    num_samples: int = 1,
    key=0,
    progress: bool = True,
    name: str = "retuned_encoder",
    attach: bool = True,
) -> Guide:
    """Fine-tune a copy of the model's encoder on masked rows, decoder frozen.

    QAVI's "re-tuned encoder" baseline (Collier et al. 2020): the encoder sees
    zero-filled rows with features hidden by ``masks`` and is trained on the
    ELBO of the observed features (module docstring). Other parameters as in
    :func:`train_posterior_matching`; ``num_samples`` reparameterised draws per row.

    Returns
    -------
    Guide
        Stored in ``model.guides[name]`` when ``attach``; answer queries with
        ``infer("retuned_encoder")``.
    """
    from vaequery.decoder import MLPEncoder

    enc = model.encode_fn
    if not isinstance(enc, MLPEncoder):
        raise TypeError(
            "train_retuned_encoder fine-tunes vaequery's own MLPEncoder; this model's encoder is "
            f"{type(enc).__name__ if enc is not None else 'missing'}. "
            "vaequery.guides.train_posterior_matching works with any encoder."
        )
    masks = as_mask_distribution(masks)
    k_split, k_val, k_fit = jax.random.split(_key(key), 3)
    (x, avail), (xv, av) = _train_val_rows(
        model, train_data, val_data, k_split, "train_retuned_encoder"
    )
    B = _check_positive_int("batch_size", batch_size)
    S = _check_positive_int("num_samples", num_samples)
    loss = _ObservedELBOLoss(model.decode_fn, model.likelihood, S)
    val_batch = eqx.filter_jit(_MaskedRowsBatch(masks, 4 * xv.shape[0]))(k_val, (xv, av))
    net, info = _fit(
        enc,
        loss,
        _MaskedRowsBatch(masks, B),
        (x, avail),
        val_batch,
        num_steps=num_steps,
        eval_every=eval_every,
        patience=patience,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        key=k_fit,
        progress=progress,
        desc="re-tuned encoder",
    )
    arch = {
        "class": "MLPEncoder",
        "num_features": int(enc.net.in_size),
        "latent_dim": int(enc.latent_dim),
        "hidden": [int(enc.net.width_size)] * int(enc.net.depth),
    }
    info.update(
        objective="re-tuned encoder: -ELBO of the observed features, decoder frozen",
        masks=masks.describe(),
        batch_size=B,
        num_train=int(x.shape[0]),
        key=int(key) if isinstance(key, (int, np.integer)) else None,
    )
    guide = Guide("retuned_encoder", net, list(model.feature_names), model.latent_dim, arch, info)
    return _attach(model, guide, name, attach)
