r"""A small top-down hierarchical VAE (HVAE) with latent layers ``z_1, ..., z_L``.

The generative model (QAVI section 2.2, Sønderby et al. 2016) samples the
latent groups top-down and decodes them together:

.. math::

    p(z_1) = \mathcal N(0, I),\qquad
    p(z_\ell \mid z_{<\ell}) = \mathcal N\big(\mu_{\theta_\ell}(z_{<\ell}),
    \sigma_{\theta_\ell}(z_{<\ell})^2\big),\qquad
    p(x \mid z) = \prod_j \mathcal N\big(x_j \mid \mu_j(z), \sigma_j(z)^2\big),

where the decoder reads the flat vector ``z = concat(z_1, ..., z_L)`` (every
layer, as NVAE-style top-down models do, which keeps the top layer in use). The
encoder has QAVI's eq. (4) structure,

.. math::

    q(z_\ell \mid z_{<\ell}, x) = \mathcal N\big(\mu_{\phi_\ell}(f_{\phi_\ell}(x),
    z_{<\ell}),\ \sigma_{\phi_\ell}(\dots)^2\big),

with ``f_phi_l`` an MLP of the zero-filled observation (its output, ``lambda_l``,
is what the ``"hierarchical"`` backend tunes per query) and ``mu_phi_l``,
``sigma_phi_l`` an MLP of ``[lambda_l, z_<l]``. Training maximises the
masked HVAE ELBO (QAVI eq. 3, analytic conditional KLs, one reparameterised
draw per row) with Adam, early stopping on the validation ELBO.

The latent prior is the NumPyro model :class:`HierarchicalPrior` with sites
``"z1"``, ``"z2"``, ...: every backend that answers custom latent priors
(``docs/latent_priors.md``) answers queries on an HVAE over the flat vector, and
the ``"hierarchical"`` backend (QAVI eq. 10-11) reuses the networks themselves.

Models whose networks follow the *hierarchy protocol* (``sizes``,
``prior_layer``, ``posterior_layer``, ``features``; :class:`MLPHierarchy` is the
trained one, :func:`vaequery.testing.linear_hvae` a linear one with an exact
posterior) are :class:`HVAEModel`\ s. Only :class:`MLPHierarchy` models are saved
(``"format": "vaequery.hvae"``) and pickled.

Only real-valued features (Gaussian likelihood).
"""

from __future__ import annotations

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax

from vaequery import io as _io
from vaequery import train as _train
from vaequery.decoder import MLPDecoder, _apply, _mlp, skeleton
from vaequery.likelihoods import Gaussian
from vaequery.model import LatentPrior
from vaequery.schema import Schema
from vaequery.vae import VAE

FORMAT = "vaequery.hvae"  # model.json's "format"; registered with vaequery.io below
FORMAT_VERSION = 1
#: Floor of the latent scales (prior and posterior networks).
_LATENT_MIN_SCALE = 1e-3
_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------- networks
def _gaussian(out):
    loc, raw = jnp.split(out, 2, axis=-1)
    return loc, jax.nn.softplus(raw) + _LATENT_MIN_SCALE


class MLPHierarchy(eqx.Module):
    """The latent-layer networks of a top-down HVAE (the hierarchy protocol).

    Parameters
    ----------
    num_features : int
        ``D``.
    sizes : sequence of int
        ``(d_1, ..., d_L)``, the size of each latent layer, top first.
    hidden : tuple of int
        Hidden widths of every MLP (ReLU).
    feature_dim : int
        Size of each ``lambda_l = f_phi_l(x)``.
    key : PRNG key

    Attributes
    ----------
    features_nets : tuple of eqx.nn.MLP
        ``f_phi_l``: ``x [D] -> lambda_l [feature_dim]``.
    posterior_nets : tuple of eqx.nn.MLP
        ``[lambda_l, z_<l] -> (loc, raw scale) [2 d_l]``.
    prior_nets : tuple of eqx.nn.MLP
        For layers 2..L: ``z_<l -> (loc, raw scale) [2 d_l]``; layer 1 is ``N(0, I)``.
    """

    features_nets: tuple
    posterior_nets: tuple
    prior_nets: tuple
    num_features: int = eqx.field(static=True)
    sizes: tuple = eqx.field(static=True)
    hidden: tuple = eqx.field(static=True)
    feature_dim: int = eqx.field(static=True)

    def __init__(self, num_features, sizes, hidden=(128,), feature_dim=32, *, key):
        sizes = tuple(int(d) for d in sizes)
        hidden = tuple(int(h) for h in hidden)
        D, F, L = int(num_features), int(feature_dim), len(sizes)
        keys = jax.random.split(key, 3 * L)
        act = jax.nn.relu
        self.features_nets = tuple(_mlp(keys[i], (D, *hidden, F), act) for i in range(L))
        self.posterior_nets = tuple(
            _mlp(keys[L + i], (F + sum(sizes[:i]), *hidden, 2 * d), act)
            for i, d in enumerate(sizes)
        )
        self.prior_nets = tuple(
            _mlp(keys[2 * L + i], (sum(sizes[:i]), *hidden, 2 * sizes[i]), act) for i in range(1, L)
        )
        self.num_features, self.sizes, self.hidden, self.feature_dim = D, sizes, hidden, F

    def features(self, x):
        """``(lambda_1, ..., lambda_L)``, each ``[..., F]``, of a zero-filled ``x [..., D]``."""
        return tuple(_apply(net, x) for net in self.features_nets)

    def prior_layer(self, layer, z_prev):
        """``(loc, scale) [..., d_l]`` of ``p(z_l | z_<l)``; ``z_prev [..., d_<l]``."""
        d = self.sizes[layer]
        if layer == 0:
            shape = z_prev.shape[:-1] + (d,)
            return jnp.zeros(shape, z_prev.dtype), jnp.ones(shape, z_prev.dtype)
        return _gaussian(_apply(self.prior_nets[layer - 1], z_prev))

    def posterior_layer(self, layer, lam, z_prev):
        """``(loc, scale) [..., d_l]`` of ``q(z_l | z_<l, x)`` with features ``lam [..., F]``."""
        lead = jnp.broadcast_shapes(lam.shape[:-1], z_prev.shape[:-1])
        lam = jnp.broadcast_to(lam, lead + lam.shape[-1:])
        z_prev = jnp.broadcast_to(z_prev, lead + z_prev.shape[-1:])
        return _gaussian(_apply(self.posterior_nets[layer], jnp.concatenate([lam, z_prev], -1)))


def _split_layers(z, sizes):
    out, start = [], 0
    for d in sizes:
        out.append(z[..., start : start + d])
        start += d
    return out


def _empty(lead, dtype):
    return jnp.zeros(tuple(lead) + (0,), dtype)


class HierarchicalPrior(eqx.Module):
    """The HVAE's latent prior as a NumPyro model: sites ``"z1"``, ..., ``"zL"``.

    ``z1 ~ N(0, I)`` and ``z_l ~ p(z_l | z_<l)`` from the hierarchy's prior
    networks. Called with no arguments (a :class:`vaequery.model.LatentPrior`).

    Parameters
    ----------
    hierarchy : eqx.Module
        Follows the hierarchy protocol (see the module docstring).
    """

    hierarchy: eqx.Module

    def __call__(self):
        h = self.hierarchy
        zs = []
        for layer in range(len(h.sizes)):
            prev = jnp.concatenate(zs, -1) if zs else _empty((), jnp.result_type(float))
            loc, scale = h.prior_layer(layer, prev)
            zs.append(numpyro.sample(f"z{layer + 1}", dist.Normal(loc, scale).to_event(1)))


class HierarchyEncoder(eqx.Module):
    """``x [..., D] -> (loc, scale) [..., d]``: the encoder's means, passed down the layers.

    ``z_l`` is set to the mean of ``q(z_l | z_<l, x)`` with ``z_<l`` at theirs;
    the scale is that layer's. A Gaussian summary of the amortized posterior,
    where mean-field backends start (``init="auto"``).

    Parameters
    ----------
    hierarchy : eqx.Module
    """

    hierarchy: eqx.Module

    def __call__(self, x):
        h = self.hierarchy
        lams = h.features(x)
        locs, scales = [], []
        for layer, lam in enumerate(lams):
            prev = jnp.concatenate(locs, -1) if locs else _empty(lam.shape[:-1], lam.dtype)
            loc, scale = h.posterior_layer(layer, lam, prev)
            locs.append(loc)
            scales.append(scale)
        return jnp.concatenate(locs, -1), jnp.concatenate(scales, -1)


def normal_kl(q_loc, q_scale, p_loc, p_scale):
    """``KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2))`` per entry."""
    return jnp.log(p_scale / q_scale) + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5


def _row_elbo(hierarchy, decoder, key, x, observed):
    """Masked HVAE ELBO of one row (QAVI eq. 3) and its per-layer KLs ``[L]``."""
    lams = hierarchy.features(x)
    keys = jax.random.split(key, len(lams))
    zs, kls = [], []
    for layer, lam in enumerate(lams):
        prev = jnp.concatenate(zs, -1) if zs else _empty((), x.dtype)
        q_loc, q_scale = hierarchy.posterior_layer(layer, lam, prev)
        p_loc, p_scale = hierarchy.prior_layer(layer, prev)
        zs.append(q_loc + q_scale * jax.random.normal(keys[layer], q_loc.shape, x.dtype))
        kls.append(jnp.sum(normal_kl(q_loc, q_scale, p_loc, p_scale)))
    params = decoder(jnp.concatenate(zs, -1))
    loc, scale = params["loc"], params["scale"]
    lp = -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * _LOG_2PI
    rec = jnp.sum(jnp.where(observed, lp, 0.0))
    kl = jnp.stack(kls)
    return rec - jnp.sum(kl), kl


# ------------------------------------------------------------------ model
class HVAEModel(VAE):
    """A hierarchical VAE, queried like any :class:`vaequery.VAE`.

    Its latent prior is :class:`HierarchicalPrior` (sites ``"z1"``, ...,
    ``"zL"``), so the backends that answer custom latent priors answer it over
    the flat latent ``concat(z1, ..., zL)``, and ``Posterior.z_sites`` /
    ``to_arviz()`` report the layers by site. ``infer("hierarchical")`` uses
    the networks themselves (QAVI eq. 10-11, :mod:`vaequery.backends.hierarchical`).

    Parameters
    ----------
    hierarchy : eqx.Module
        The latent-layer networks (hierarchy protocol: ``sizes``,
        ``prior_layer``, ``posterior_layer``, ``features``).
    decoder : callable
        ``z [..., d] -> {"loc", "scale"} [..., D]`` with ``d = sum(sizes)``.
    schema : Schema
        Real features only.
    likelihood : Likelihood, optional
        Default: Gaussian, the scale from the decoder.
    metadata : dict, optional

    Attributes
    ----------
    hierarchy : eqx.Module
    sizes : tuple of int
        ``(d_1, ..., d_L)``.
    """

    def __init__(self, hierarchy, decoder, schema: Schema, likelihood=None, metadata=None):
        sizes = tuple(int(d) for d in getattr(hierarchy, "sizes", ()))
        if len(sizes) < 1 or min(sizes) < 1:
            raise ValueError(
                f"hierarchy.sizes must list at least one positive layer size, got {sizes}"
            )
        _check_real(schema)
        prior = LatentPrior.from_fn(HierarchicalPrior(hierarchy))
        super().__init__(
            decoder,
            sum(sizes),
            schema,
            Gaussian() if likelihood is None else likelihood,
            encode_fn=HierarchyEncoder(hierarchy),
            metadata=metadata,
            prior=prior,
        )
        self.hierarchy = hierarchy
        self.sizes = sizes

    def save(self, path):
        """Write the model to the folder ``path`` (``model.json`` + ``weights.eqx``).

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        Path
            The folder written; read it back with :func:`vaequery.load`.

        Raises
        ------
        TypeError
            The networks are not vaequery's :class:`MLPHierarchy` and
            :class:`~vaequery.decoder.MLPDecoder` (e.g. a linear test model).
        """
        from vaequery._format import write_folder

        return write_folder(path, hvae_files(self))

    def _format_files(self) -> dict:
        # what vaequery._format.model_files stores for this model
        return hvae_files(self)

    def __reduce__(self):
        # through vaequery's own format (JSON and array bytes), as VAE does
        from vaequery.io import model_from_files

        return (model_from_files, (hvae_files(self), "pickled HVAEModel"))

    def __repr__(self) -> str:
        return (
            f"HVAEModel(layers={list(self.sizes)}, latent_dim={self.latent_dim}, "
            f"features={self.num_features}, prior sites={list(self.prior.names)})"
        )


def _check_real(schema):
    bad = [f"{f.name!r} ({f.kind})" for f in schema if f.kind != "real"]
    if bad:
        raise ValueError(
            "method='hvae' models real-valued features only (Gaussian likelihood); these "
            f"features are not real: {', '.join(bad)}. Train them with method='vae', or pass "
            "kinds= to treat them as real"
        )


# ----------------------------------------------------------------- training
def _optimizer(learning_rate, clip_norm):
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


@eqx.filter_jit
def _run_epoch(params, static, opt_cfg, opt_state, key, x, mask, batch_size):
    """One pass over shuffled minibatches, a ``lax.scan`` over optimisation steps."""
    opt = _optimizer(*opt_cfg)
    n = x.shape[0]
    nb = n // batch_size
    k_perm, k_steps = jax.random.split(key)
    idx = jax.random.permutation(k_perm, n)[: nb * batch_size].reshape(nb, batch_size)

    def loss_fn(p, k, xb, mb):
        h, dec = eqx.combine(p, static)
        keys = jax.random.split(k, xb.shape[0])
        elbo, _ = jax.vmap(_row_elbo, (None, None, 0, 0, 0))(h, dec, keys, xb, mb)
        return -jnp.mean(elbo)

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


@eqx.filter_jit
def _mean_elbo(hierarchy, decoder, key, x, mask, num_samples):
    """Mean ELBO over rows and ``num_samples`` draws, and the mean per-layer KL ``[L]``."""
    keys = jax.random.split(key, (x.shape[0], num_samples))
    f = jax.vmap(jax.vmap(_row_elbo, (None, None, 0, None, None)), (None, None, 0, 0, 0))
    elbo, kl = f(hierarchy, decoder, keys, x, mask)
    return jnp.mean(elbo), jnp.mean(kl, (0, 1))


@eqx.filter_jit
def _build(num_features, sizes, hidden, feature_dim, min_scale, key):
    k1, k2 = jax.random.split(key)
    return (
        MLPHierarchy(num_features, sizes, hidden, feature_dim, key=k1),
        MLPDecoder(sum(sizes), num_features, hidden, min_scale=min_scale, key=k2),
    )


def _check_hierarchy(hierarchy, latent_dim):
    if hierarchy is None:
        d = int(latent_dim)
        if d < 2:
            raise ValueError(f"method='hvae' needs latent_dim >= 2 to split in two layers, got {d}")
        return (d // 2, d - d // 2)
    try:
        sizes = tuple(hierarchy)
    except TypeError:
        sizes = None
    if (
        not sizes
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes)
        or min(sizes) < 1
    ):
        raise ValueError(
            "hierarchy must be a non-empty list of positive integers, the latent size of "
            f"each stochastic layer from the top, e.g. hierarchy=[4, 8]; got {hierarchy!r}"
        )
    return tuple(int(s) for s in sizes)


def train_hvae(
    train_data,
    val_data=None,
    test_data=None,
    *,
    hierarchy=None,
    latent_dim: int = 16,
    hidden=(128,),
    feature_dim: int = 32,
    num_epochs: int = 300,
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
) -> HVAEModel:
    """Train a top-down hierarchical VAE on a real-valued table (module docstring).

    Usually called as ``vaequery.train(..., method="hvae", hierarchy=[d1, d2])``.

    Parameters
    ----------
    train_data, val_data, test_data : Table, MaskedTable, DataFrame or array ``[N, D]``
        Raw units; NaN = unobserved, left out of the likelihood. ``val_data``
        drives early stopping (the best epoch is kept); ``test_data`` is only
        evaluated (``metadata["test_elbo"]``).
    hierarchy : sequence of int, optional
        Latent size of each stochastic layer, top first (``[d1, d2]``: two
        layers). Default: ``latent_dim`` split in two halves.
    latent_dim : int
        Used only when ``hierarchy`` is not given.
    hidden : tuple of int
        Hidden widths of every MLP (features, posterior, prior networks and
        the decoder).
    feature_dim : int
        Size of the features ``lambda_l = f_phi_l(x)`` of each layer.
    num_epochs, batch_size, learning_rate, clip_norm, patience, min_scale, key, progress
        As in :func:`vaequery.train` (Adam after global-norm clipping;
        ``min_scale`` floors the decoder's pixel scales).
    schema, names, kinds, name
        As in :func:`vaequery.train`; every feature must be real.

    Returns
    -------
    HVAEModel
        ``metadata`` holds the recipe, the train/val/test ELBOs (nats per row,
        model units, 16 draws) and the per-layer KLs on the validation (or
        training) rows, ``kl_per_layer``.

    Raises
    ------
    ValueError
        A bad ``hierarchy`` or a feature that is not real.

    Examples
    --------
    >>> import vaequery as vq
    >>> t = vq.datasets.load("banknote", "train")
    >>> m = vq.train(t, method="hvae", hierarchy=[1, 2], hidden=(8,), num_epochs=2,
    ...              progress=False)
    >>> m.sizes, m.prior.names
    ((1, 2), ('z1', 'z2'))
    """
    from tqdm.auto import tqdm

    from vaequery.train import _as_key, _model_units, _resolve_schema

    sizes = _check_hierarchy(hierarchy, latent_dim)
    schema = _resolve_schema(train_data, schema, names, kinds)
    _check_real(schema)
    name = name or getattr(train_data, "name", None)
    hidden = tuple(int(h) for h in hidden)
    x_tr, m_tr = _model_units(train_data, schema)
    n = x_tr.shape[0]
    B = min(int(batch_size), n)
    k_init, k_train, k_eval = jax.random.split(_as_key(key), 3)
    nets = _build(len(schema), sizes, hidden, int(feature_dim), float(min_scale), k_init)
    params, static = eqx.partition(nets, eqx.is_inexact_array)
    opt_cfg = (float(learning_rate), float(clip_norm))
    opt_state = _optimizer(*opt_cfg).init(params)
    if val_data is not None:
        x_va, m_va = _model_units(val_data, schema)

    t0 = time.perf_counter()
    best, best_epoch, params_best, epochs_run = -np.inf, 0, params, 0
    bar = tqdm(range(num_epochs), disable=not progress, desc=f"train hvae {name or ''}".strip())
    for epoch in bar:
        params, opt_state, loss = _run_epoch(
            params, static, opt_cfg, opt_state, jax.random.fold_in(k_train, epoch), x_tr, m_tr, B
        )
        epochs_run = epoch + 1
        if val_data is None:
            params_best, best_epoch = params, epoch + 1
            bar.set_postfix(loss=f"{float(loss):.3f}")
            continue
        h, dec = eqx.combine(params, static)
        v = float(_mean_elbo(h, dec, k_eval, x_va, m_va, 4)[0])
        if v > best:
            best, best_epoch, params_best = v, epoch + 1, params
        bar.set_postfix(loss=f"{float(loss):.3f}", val_elbo=f"{v:.3f}", best=f"{best:.3f}")
        if epoch + 1 - best_epoch >= patience:
            break
    bar.close()
    seconds = time.perf_counter() - t0
    h, dec = eqx.combine(params_best, static)
    k_report = jax.random.fold_in(k_eval, 1)

    def elbo_of(data):
        if data is None:
            return None, None
        x, m = _model_units(data, schema)
        e, kl = _mean_elbo(h, dec, k_report, x, m, 16)
        return float(e), [float(v) for v in kl]

    train_elbo, kl_train = elbo_of(train_data)
    val_elbo, kl_val = elbo_of(val_data)
    recipe = {
        "method": "hvae",
        "dataset": name,
        "hierarchy": list(sizes),
        "hidden": list(hidden),
        "feature_dim": int(feature_dim),
        "likelihood": "gaussian",
        "min_scale": float(min_scale),
        "optimizer": f"adam(lr={learning_rate}) after clip_by_global_norm({clip_norm})",
        "batch_size": B,
        "max_epochs": int(num_epochs),
        "patience": int(patience) if val_data is not None else None,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "key": int(key) if isinstance(key, (int, np.integer)) else None,
        "num_train": int(n),
        "train_seconds": round(seconds, 2),
        "elbo_units": "nats per row, standardised features, 16 draws of z per row",
    }
    metadata = {
        "recipe": recipe,
        "train_elbo": train_elbo,
        "val_elbo": val_elbo,
        "test_elbo": elbo_of(test_data)[0],
        "kl_per_layer": kl_val if kl_val is not None else kl_train,
    }
    return HVAEModel(h, dec, schema, Gaussian(), metadata)


# ------------------------------------------------------------------- format
def hvae_files(model: HVAEModel) -> dict:
    """The files of a saved HVAE, ``{relative path: bytes}`` (JSON and array bytes).

    Parameters
    ----------
    model : HVAEModel
        With vaequery's :class:`MLPHierarchy` and :class:`~vaequery.decoder.MLPDecoder`.

    Returns
    -------
    dict of str to bytes
        ``model.json`` (``"format": "vaequery.hvae"``) and ``weights.eqx``.

    Raises
    ------
    TypeError
        Other networks (they are code, which the format does not store).
    """
    from vaequery.io import MODEL_FILE, WEIGHTS_FILE, _json_bytes, _leaves_bytes, _version

    h, dec, lik = model.hierarchy, model.decode_fn, model.likelihood
    if not (isinstance(h, MLPHierarchy) and isinstance(dec, MLPDecoder)):
        raise TypeError(
            "cannot save or pickle this HVAEModel: vaequery's format stores the networks "
            "trained by vaequery.train(..., method='hvae') (MLPHierarchy + MLPDecoder), and "
            f"this model has a {type(h).__name__} hierarchy and a {type(dec).__name__} "
            "decoder. Rebuild it where it is needed (e.g. vaequery.testing.linear_hvae)"
        )
    if not (isinstance(lik, Gaussian) and lik.min_scale == 0.0 and np.ndim(lik.scale) == 0):
        raise TypeError(
            "cannot save this HVAEModel: only the default Gaussian likelihood is stored"
        )
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vaequery_version": _version(),
        "latent_dim": int(model.latent_dim),
        "schema": model.schema.to_dict(),
        "architecture": {
            "class": "MLPHierarchy",
            "num_features": h.num_features,
            "sizes": list(h.sizes),
            "hidden": list(h.hidden),
            "feature_dim": h.feature_dim,
            "decoder": {
                "class": "MLPDecoder",
                "hidden": [int(dec.net.width_size)] * int(dec.net.depth),
                "min_scale": float(dec.min_scale),
            },
        },
        "dtype": str(dec.net.layers[0].weight.dtype),
        "metadata": model.metadata,
    }
    return {WEIGHTS_FILE: _leaves_bytes((h, dec)), MODEL_FILE: _json_bytes(info)}


def hvae_from_files(read, info, where) -> HVAEModel:
    """Rebuild an HVAE from its ``model.json`` contents ``info`` and a file reader.

    Parameters
    ----------
    read : callable
        ``read(relative path) -> bytes``.
    info : dict
        The parsed ``model.json``.
    where : str or Path
        Named in error messages.

    Returns
    -------
    HVAEModel

    Raises
    ------
    ValueError
        Another format version, or corrupted files.
    """
    from vaequery._format import WEIGHTS_FILE, _read_weights, check_format_version

    check_format_version(
        info, FORMAT_VERSION, "HVAE", where, "Retrain it or load it with a matching vaequery."
    )
    a = info["architecture"]
    d = a["decoder"]
    like = (
        skeleton(
            MLPHierarchy, a["num_features"], tuple(a["sizes"]), tuple(a["hidden"]), a["feature_dim"]
        ),
        skeleton(
            MLPDecoder,
            sum(a["sizes"]),
            a["num_features"],
            tuple(d["hidden"]),
            min_scale=d["min_scale"],
        ),
    )
    h, dec = _read_weights(read(WEIGHTS_FILE), like, where)
    return HVAEModel(h, dec, Schema.from_dict(info["schema"]), Gaussian(), info.get("metadata"))


_io.register_format(FORMAT, hvae_from_files)
_train.register_method("hvae", train_hvae)
