r"""Posterior matching's lookahead network: every candidate's next posterior in one pass.

Greedy feature acquisition (:mod:`vaequery.acquisition`, PM eq. 6) scores each
unobserved feature :math:`i` of a query by the expected entropy of the latent
posterior after measuring it, :math:`\mathbb E_{x_i\sim p(x_i\mid x_O)}
\mathbb H[z\mid x_O, x_i]`. Estimating that by imagining values of
:math:`x_i` and re-encoding costs ``candidates x samples`` network passes per
step. Posterior matching (Strauss & Oliva 2022, §3.5 eq. 7 and §5.5) instead
trains, *after* the partial encoder :math:`q_\theta(z\mid x_O, b)` and with it
frozen, a network :math:`q_\omega` that reads :math:`(x_O, b)` once and outputs
a Gaussian :math:`q^{(i)}_\omega(z\mid x_O) = \mathcal N(m_i, L_iL_i^\top)` for
**every** feature :math:`i`: the greedy choice is then the argmin of their
analytic entropies, one forward pass per query.

Training target
---------------
For a row, a training mask :math:`b` and a candidate :math:`i\notin O`, values
:math:`x_i^{(k)}` are imagined from the frozen guide's predictive
(:math:`z\sim q_\theta(z\mid x_O)`, :math:`x\sim p(x\mid z)`) and the guide
re-encodes each augmented row, giving Gaussians
:math:`\mathcal N(\mu_k, \Sigma_k) = q_\theta(z\mid x_O, x_i^{(k)})`. The loss is

.. math::
    \sum_{i\notin O} \Big[\mathrm{KL}\big(\mathcal N(0, \bar\Sigma_i)\,\big\|\,
    \mathcal N(0, L_iL_i^\top)\big) + \tfrac12\lVert m_i - \bar\mu_i\rVert^2\Big],
    \qquad \bar\Sigma_i = \tfrac1K\textstyle\sum_k \Sigma_k,\;
    \bar\mu_i = \tfrac1K\textstyle\sum_k \mu_k,

computed analytically from the guide's Gaussians (no draws of ``z``). Its
optimum is :math:`L_iL_i^\top = \mathbb E_{x_i}\Sigma_{\theta}(x_O, x_i)`, the
covariance the posterior will have after the measurement, and
:math:`m_i = \mathbb E_{x_i}\mu_\theta(x_O, x_i)`.

This deliberately differs from eq. 7 as printed, which matches
:math:`q^{(i)}_\omega` to the *mixture* :math:`\mathbb E_{x_i}q_\theta(z\mid
x_O, x_i)` with draws of ``z``: for an exact guide that mixture is the current
posterior :math:`p(z\mid x_O)` itself, whatever :math:`i` (the law of total
probability), so its entropy cannot rank the candidates; the optimum of a
Gaussian fitted to it has covariance
:math:`\mathbb E\Sigma + \mathrm{Cov}\,\mu = \Sigma_O` for every candidate.
Matching each imagined posterior around its own mean removes the spread of the
means and keeps the part that eq. 6 needs. The entropy of
:math:`\mathcal N(\cdot, \mathbb E\Sigma)` is an upper bound of
:math:`\mathbb E\,\mathbb H` (log-det is concave) and equals it when the
posterior covariance does not depend on the measured value, as on the
linear-Gaussian oracle.

As in PM (appendix D.4) each step trains a random subset of the candidates
(``num_candidates`` per row) with ``num_imagined`` values each. PM's networks
output a diagonal Gaussian per feature; vaequery's output a full-covariance one
(``d(d+1)/2`` numbers more per feature), whose entropy is the quantity eq. 6
needs, not an upper bound of it.

Use it with ``q.next_feature(method="lookahead")`` or
``vq.acquire(model, X, budget, strategy="lookahead")``; it is saved, loaded and
pickled with the model like every guide (``model.guides["lookahead"]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vaequery.guides.guide import Guide, register_network
from vaequery.guides.masks import MaskDistribution, as_mask_distribution
from vaequery.guides.networks import ResidualMLP
from vaequery.guides.training import (
    _attach,
    _check_positive_int,
    _fit,
    _key,
    _train_val_rows,
)

_HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)


@register_network
class LookaheadNetwork(eqx.Module):
    r"""``(x_O, b) -> N(m_i, L_i L_i^T)`` for every feature ``i``, in one pass.

    A :class:`~vaequery.guides.ResidualMLP` reads ``[x ⊙ b, b]`` (standardised
    values, unobserved entries zeroed, and the mask) and outputs, per feature,
    the mean (``d``), the raw diagonal (``d``) and the strictly-lower entries
    (``d(d-1)/2``) of a Cholesky factor; the diagonal is
    ``softplus(raw + 0.5413) + 1e-4``, so an untrained network predicts
    ``N(0, I)`` (the prior) for every feature.

    Parameters
    ----------
    num_features, latent_dim : int
    width, num_blocks : int
        The residual MLP.
    key : PRNG key
    """

    net: ResidualMLP
    num_features: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)

    def __init__(self, num_features, latent_dim, width=128, num_blocks=2, *, key):
        self.num_features = int(num_features)
        self.latent_dim = int(latent_dim)
        d = self.latent_dim
        per = 2 * d + d * (d - 1) // 2
        self.net = ResidualMLP(
            2 * self.num_features, self.num_features * per, width, num_blocks, key=key
        )

    def gaussians(self, x, observed):
        """Every feature's lookahead Gaussian for one row.

        Parameters
        ----------
        x : array ``[D]``
            Standardised values (entries outside ``observed`` are ignored, NaN allowed).
        observed : bool array ``[D]``

        Returns
        -------
        dict
            ``{"loc": [D, d], "tril": [D, d, d]}``; row ``i`` approximates the
            posterior after measuring feature ``i`` (meaningless where ``i`` is
            already observed).
        """
        D, d = self.num_features, self.latent_dim
        x = jnp.asarray(x)
        b = observed.astype(x.dtype)
        out = self.net(jnp.concatenate([jnp.where(observed, x, 0.0), b])).reshape(D, -1)
        loc, raw, off = out[:, :d], out[:, d : 2 * d], out[:, 2 * d :]
        diag = jax.nn.softplus(raw + 0.5413) + 1e-4
        rows, cols = jnp.tril_indices(d, -1)
        tril = jnp.zeros((D, d, d), out.dtype).at[:, rows, cols].set(off)
        tril = tril + jax.vmap(jnp.diag)(diag)
        return {"loc": loc, "tril": tril}

    def entropies(self, x, observed):
        """``[D]``: entropy (nats) of each feature's lookahead Gaussian for one row."""
        tril = self.gaussians(x, observed)["tril"]
        logdiag = jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1))
        return jnp.sum(logdiag, -1) + self.latent_dim * _HALF_LOG_2PIE


def _gaussian_state(guide, x, b):
    """The frozen guide's ``(loc [d], tril [d, d])`` for one row."""
    st = guide.state(x, b)
    return st["loc"], st["tril"]


class _LookaheadBatch(eqx.Module):
    """Rows, masks, candidates and the frozen guide's imagined posteriors.

    Everything the loss needs is computed here, outside the gradient: for
    ``num_candidates`` unobserved features per row, ``num_imagined`` values
    from the guide's predictive, the guide's Gaussians on the augmented rows,
    and their mean location and mean covariance (as a Cholesky factor).
    """

    guide: eqx.Module
    decode_fn: Callable
    likelihood: eqx.Module
    masks: MaskDistribution
    num_features: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    num_candidates: int = eqx.field(static=True)
    num_imagined: int = eqx.field(static=True)

    def __call__(self, key, data):
        B, D, d = self.batch_size, self.num_features, self.latent_dim
        M, K = self.num_candidates, self.num_imagined
        ki, km, kc, kz, kx = jax.random.split(key, 5)
        if data is None:  # the model's own rows: z ~ p(z), x ~ p(x | z)
            k1, k2 = jax.random.split(ki)
            z0 = jax.random.normal(k1, (B, d))
            x = self.likelihood.sample(k2, self.decode_fn(z0)).astype(z0.dtype)
            avail = jnp.ones((B, D), bool)
        else:
            xs, av = data
            idx = jax.random.randint(ki, (B,), 0, xs.shape[0])
            x, avail = xs[idx], av[idx]
        b = self.masks(km, (B, D)) & avail
        # candidates: M unobserved features per row, uniformly without replacement
        score = jnp.where(b, -1.0, jax.random.uniform(kc, (B, D)))
        _, cand = jax.lax.top_k(score, M)  # [B, M]
        weight = ~jnp.take_along_axis(b, cand, 1)  # an observed pick (too few left) counts 0

        loc, tril = jax.vmap(lambda r, m: _gaussian_state(self.guide, r, m))(x, b)
        eps = jax.random.normal(kz, (B, K, d))
        z = loc[:, None] + jnp.einsum("bkj,bij->bki", eps, tril)
        x_im = self.likelihood.sample(kx, self.decode_fn(z)).astype(x.dtype)  # [B, K, D]

        def augmented(xr, br, xim, c):
            onehot = jnp.arange(D) == c  # [D]
            xa = jnp.where(onehot, xim, xr)  # [K, D]
            ba = jnp.broadcast_to(br | onehot, (K, D))
            mu, L = jax.vmap(lambda r, m: _gaussian_state(self.guide, r, m))(xa, ba)
            cov = jnp.mean(L @ jnp.swapaxes(L, -1, -2), 0)
            cov = 0.5 * (cov + cov.T) + 1e-6 * jnp.eye(d, dtype=cov.dtype)
            return jnp.mean(mu, 0), jnp.linalg.cholesky(cov)

        per_row = jax.vmap(augmented, (None, None, None, 0))
        mu_bar, chol_bar = jax.vmap(per_row)(x, b, x_im, cand)  # [B, M, d], [B, M, d, d]
        out = (x, b, cand, weight, mu_bar, chol_bar)
        return jax.tree.map(jax.lax.stop_gradient, out)


def _lookahead_loss(net, batch, key):
    """Mean over valid (row, candidate) of ``KL(N(0, Σ̄) || N(0, LLᵀ)) + ½‖m − μ̄‖²``."""
    x, b, cand, weight, mu_bar, chol_bar = batch
    g = jax.vmap(net.gaussians)(x, b)
    m = jnp.take_along_axis(g["loc"], cand[..., None], 1)  # [B, M, d]
    L = jnp.take_along_axis(g["tril"], cand[..., None, None], 1)  # [B, M, d, d]
    d = m.shape[-1]
    sol = jax.scipy.linalg.solve_triangular(L, chol_bar, lower=True)  # L^{-1} C̄
    trace = jnp.sum(sol**2, (-2, -1))
    logdet_L = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
    logdet_C = jnp.sum(jnp.log(jnp.diagonal(chol_bar, axis1=-2, axis2=-1)), -1)
    kl = 0.5 * (trace - d) + logdet_L - logdet_C
    term = kl + 0.5 * jnp.sum((m - mu_bar) ** 2, -1)
    w = weight.astype(term.dtype)
    return jnp.sum(term * w) / jnp.maximum(jnp.sum(w), 1.0)


def _frozen_guide(model, guide):
    """``(network, label)`` of the Gaussian partial encoder to match."""
    if isinstance(guide, str):
        from vaequery.backends._base import require_guide

        label, g = guide, require_guide(model, guide)
        net = g.network
    elif isinstance(guide, Guide):
        guide.check_compatible(model)
        label, net = guide.kind, guide.network
    else:
        label, net = type(guide).__name__, guide
    head = getattr(net, "head_name", "gaussian" if hasattr(net, "state") else None)
    if head != "gaussian" or not hasattr(net, "state"):
        raise ValueError(
            f"the lookahead network matches a Gaussian partial encoder; guide {label!r} is "
            f"{'a ' + head + '-head encoder' if head else type(net).__name__}. Accepted: the name "
            "of a Gaussian-head guide in model.guides (train_posterior_matching or "
            "train_decoder_only with head='gaussian'), a Guide, or a network whose "
            "state(x, observed) returns {'loc': [d], 'tril': [d, d]}"
        )
    return net, label


def train_lookahead(
    model,
    train_data=None,
    val_data=None,
    *,
    guide="posterior_matching",
    masks="uniform",
    num_steps: int = 5_000,
    batch_size: int = 128,
    num_candidates: int = 16,
    num_imagined: int = 8,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-5,
    clip_norm: float = 10.0,
    eval_every: int = 250,
    patience: int = 8,
    width: int = 128,
    num_blocks: int = 2,
    num_val: int = 512,
    key=0,
    progress: bool = True,
    name: str = "lookahead",
    attach: bool = True,
) -> Guide:
    """Train PM's lookahead network against a frozen Gaussian partial encoder.

    Parameters
    ----------
    model : vaequery.VAE
    train_data, val_data : Table, MaskedTable or array ``[N, D]``, optional
        Rows whose observed parts the masks are drawn from (raw units; NaN
        entries are never shown as observed). Without ``train_data`` the rows
        are the model's own samples (``z ~ N(0, I)``, ``x ~ p(x | z)``), as for
        :func:`~vaequery.guides.train_decoder_only`. Without ``val_data``, 10 %
        of the training rows (or ``num_val`` model rows) decide early stopping.
    guide : str, Guide or network, default "posterior_matching"
        The frozen partial encoder whose posteriors are matched: the name of a
        Gaussian-head guide in ``model.guides``, a :class:`Guide`, or a network
        with ``state(x, observed) -> {"loc": [d], "tril": [d, d]}``.
    masks : str or MaskDistribution
        Distribution of the observed sets (see :mod:`vaequery.guides.masks`).
    num_steps, batch_size : int
        At most this many steps of ``batch_size`` rows (PM: 50,000 at 64).
    num_candidates : int
        Candidate features trained per row and step (PM: 128 of 256 pixels);
        capped at the number of features.
    num_imagined : int
        Imagined values per candidate (PM: 64; the loss is analytic in ``z``,
        so fewer suffice).
    learning_rate, weight_decay, clip_norm : float
    eval_every, patience : int
        Validation every ``eval_every`` steps; stop after ``patience``
        evaluations without improvement (the best parameters are kept).
    width, num_blocks : int
        The network's residual MLP.
    num_val : int
        Validation rows when drawn from the model (no ``train_data``).
    key : int or PRNG key
        Same key, same network.
    progress : bool
        Show a tqdm progress bar.
    name : str
        Name in ``model.guides`` (``next_feature``'s ``network=``).
    attach : bool
        Store it in ``model.guides[name]`` (saved and pickled with the model).

    Returns
    -------
    Guide
        ``kind="lookahead"``; its network is a :class:`LookaheadNetwork`.

    Examples
    --------
    >>> import vaequery as vq
    >>> vae = vq.pretrained("white_wine")
    >>> g = vq.guides.train_lookahead(vae, vq.datasets.load("white_wine"),
    ...                               num_steps=50, eval_every=50, progress=False)
    >>> g
    Guide(kind='lookahead', features=12, latent_dim=6)
    """
    net_guide, label = _frozen_guide(model, guide)
    masks = as_mask_distribution(masks)
    D, d = model.num_features, model.latent_dim
    B = _check_positive_int("batch_size", batch_size)
    M = min(_check_positive_int("num_candidates", num_candidates), D)
    K = _check_positive_int("num_imagined", num_imagined)
    k_split, k_net, k_val, k_fit = jax.random.split(_key(key), 4)

    def batcher(size):
        return _LookaheadBatch(
            net_guide, model.decode_fn, model.likelihood, masks, D, d, size, M, K
        )

    if train_data is None:
        if val_data is not None:
            raise TypeError("val_data needs train_data (rows drawn from the model need none)")
        data, n_val, num_train = None, _check_positive_int("num_val", num_val), None
        val_data_arrays = None
    else:
        (x, avail), (xv, av) = _train_val_rows(
            model, train_data, val_data, k_split, "train_lookahead"
        )
        data, n_val, num_train = (x, avail), min(4 * xv.shape[0], 4096), int(x.shape[0])
        val_data_arrays = (xv, av)
    val_batch = eqx.filter_jit(batcher(n_val))(k_val, val_data_arrays)
    arch = {
        "class": "LookaheadNetwork",
        "num_features": D,
        "latent_dim": d,
        "width": int(width),
        "num_blocks": int(num_blocks),
    }
    net = LookaheadNetwork(D, d, int(width), int(num_blocks), key=k_net)
    net, info = _fit(
        net,
        _lookahead_loss,
        batcher(B),
        data,
        val_batch,
        num_steps=num_steps,
        eval_every=eval_every,
        patience=patience,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        key=k_fit,
        progress=progress,
        desc="lookahead network",
    )
    info.update(
        objective=(
            "lookahead (PM eq. 7, centred): KL(N(0, mean Sigma_i) || q_i) + |m_i - mean mu_i|^2/2 "
            "over imagined x_i, guide frozen"
        ),
        guide=label,
        masks=masks.describe(),
        batch_size=B,
        num_candidates=M,
        num_imagined=K,
        num_train=num_train,
        key=int(key) if isinstance(key, (int, np.integer)) else None,
    )
    g = Guide("lookahead", net, list(model.feature_names), d, arch, info)
    return _attach(model, g, name, attach)
