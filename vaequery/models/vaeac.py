r"""VAEAC: a variational autoencoder trained for arbitrary conditioning (Ivanov et al., 2019).

A VAEAC models every conditional :math:`p(x_b \mid x_{1-b}, b)` of a table at
once (``b`` the mask of unobserved features):

.. math::

    p_{\psi,\theta}(x_b \mid x_{1-b}, b) = \int p_\theta(x_b \mid z, x_{1-b}, b)\,
    p_\psi(z \mid x_{1-b}, b)\, dz,

with three MLPs (the paper, appendix A, notes that MLPs are enough):

* the **prior network** :math:`p_\psi(z \mid x_{1-b}, b) = \mathcal N(\mu_\psi,
  \sigma_\psi^2)`, input ``[x * (1 - b), b]``;
* the **proposal network** :math:`q_\phi(z \mid x, b)`, input ``[x * present,
  b, present]`` where ``present`` flags the values the table holds (section
  4.3.3: it must tell missing values from masked ones);
* the **generative network** :math:`p_\theta(x_b \mid z, x_{1-b}, b)`, input
  ``[z, x * (1 - b), b]`` (the skip connection that lets the decoder see the
  observed part), independent Gaussians per feature. Their scale is fixed at 1
  in standardised units (the paper's setting for tables, which optimises RMSE)
  unless ``scale="learned"`` (``softplus + min_scale`` per feature and row).

Training maximises, over rows and masks :math:`b \sim p(b \mid x)`, the
variational lower bound (their eq. 6) plus the prior regularisation of
section 4.3.2 (a Normal-Gamma prior on :math:`\mu_\psi, \sigma_\psi`):

.. math::

    \mathbb E_{q_\phi}\Big[\sum_{i:\,b_i = 1,\ x_i \ne \omega}
    \log p_\theta(x_i \mid z, x_{1-b}, b)\Big]
    - \mathrm{KL}(q_\phi \,\|\, p_\psi)
    - \sum_k \frac{\mu_{\psi,k}^2}{2\sigma_\mu^2}
    + \sigma_\sigma \sum_k (\log \sigma_{\psi,k} - \sigma_{\psi,k}),

with :math:`\sigma_\mu = 10^4`, :math:`\sigma_\sigma = 10^{-4}` (the paper's
values) and the paper's mask distribution for tables: a value missing in the
data (``ω``) is always unobserved and never in the loss, each other value is
unobserved with probability 0.2. A quarter of the training rows is held out
(unless ``val_data`` is given) and the epoch with the best validation IWAE
estimate of :math:`\log p(x_b \mid x_{1-b}, b)` is kept (appendix A.2).

Queries (:meth:`VAEACModel.given`) are answered by the model itself,
``infer("vaeac")``: :math:`z \sim p_\psi(z \mid x_O, b)` with ``b = 1 -
observed``, then the decoder. The IWAE estimate of
:math:`\log p(x_U \mid x_O)` uses :math:`q_\phi(z \mid x_{O \cup U}, b)` as the
importance distribution (the paper's estimator):

.. math::

    \log \frac1S \sum_s \frac{p_\theta(x_U \mid z_s, x_O, b)\,
    p_\psi(z_s \mid x_O, b)}{q_\phi(z_s \mid x_{O\cup U}, b)}.

The model is also an ordinary NumPyro model of the query
(:func:`vaequery.model.build_numpyro_model` with ``conditional=``)::

    z ~ N(p_psi(z | x_O, b))                       the prior network reads the evidence
    x_U ~ p_theta(x_U | z, x_O, b)                 (IWAE's joint term only)
    factor log P(lo <= x_k <= hi | z, x_O, b)      interval evidence on unobserved features
    factor f(E[x | z, x_O, b])                     soft constraints (Query.factor / where)

so every backend that reads the query through its log-density (``gaussian``,
``fullrank``, ``iaf``, ``mixture``, ``planar``, ``fcn``, ``pathfinder``,
``nuts``, ``hmc``, ``chees``) answers the same query with ``infer(name)`` and
returns a :class:`vaequery.Posterior`, starting from the prior network. With
point evidence alone their answer is the prior network's Gaussian itself;
interval evidence and soft constraints are what only they can add.

Only real-valued tables are supported.
"""

from __future__ import annotations

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from vaequery import io as _io
from vaequery import train as _train
from vaequery.decoder import _apply, _mlp, skeleton
from vaequery.model import EvidenceConditional, build_numpyro_model, target_functions
from vaequery.schema import Schema

#: Normal-Gamma prior on the prior network's outputs (section 4.3.2).
SIGMA_MU = 1e4
SIGMA_SIGMA = 1e-4
#: Floor of the latent scales (prior and proposal networks).
_LATENT_MIN_SCALE = 1e-3

FORMAT = "vaequery.vaeac"  # model.json's "format"; registered with vaequery.io below
FORMAT_VERSION = 1


# ----------------------------------------------------------------- networks
class VAEACNetworks(eqx.Module):
    """The proposal, prior and generative MLPs of a VAEAC (ReLU, equal hidden widths).

    Parameters
    ----------
    num_features, latent_dim : int
        ``D`` and ``d``.
    hidden : tuple of int
        Hidden widths of all three networks.
    scale : float or "learned"
        Fixed Gaussian scale of the features in standardised units (the paper:
        1), or ``"learned"``: the generative network outputs one per feature.
    min_scale : float
        Added to a learned scale.
    key : PRNG key
    """

    proposal: eqx.nn.MLP
    prior: eqx.nn.MLP
    decoder: eqx.nn.MLP
    num_features: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    fixed_scale: float | None = eqx.field(static=True)
    min_scale: float = eqx.field(static=True)

    def __init__(
        self, num_features, latent_dim, hidden=(128, 128), *, scale=1.0, min_scale=1e-3, key
    ):
        D, d = int(num_features), int(latent_dim)
        k1, k2, k3 = jax.random.split(key, 3)
        learned = isinstance(scale, str)
        self.proposal = _mlp(k1, (3 * D, *hidden, 2 * d), jax.nn.relu)
        self.prior = _mlp(k2, (2 * D, *hidden, 2 * d), jax.nn.relu)
        self.decoder = _mlp(k3, (d + 2 * D, *hidden, (2 if learned else 1) * D), jax.nn.relu)
        self.num_features, self.latent_dim = D, d
        self.fixed_scale = None if learned else float(scale)
        self.min_scale = float(min_scale)

    @staticmethod
    def _gaussian(out):
        loc, raw = jnp.split(out, 2, axis=-1)
        return loc, jax.nn.softplus(raw) + _LATENT_MIN_SCALE

    def prior_params(self, x, b):
        """``(loc, scale) [..., d]`` of ``p_psi(z | x_{1-b}, b)``; ``x``, ``b``: ``[..., D]``."""
        return self._gaussian(_apply(self.prior, jnp.concatenate([x * (1 - b), b], -1)))

    def proposal_params(self, x, b, present):
        """``(loc, scale) [..., d]`` of ``q_phi(z | x, b)``; ``present`` flags the known values."""
        inp = jnp.concatenate([x * present, b, present], -1)
        return self._gaussian(_apply(self.proposal, inp))

    def decode(self, z, x, b):
        """``(loc, scale) [..., D]`` of ``p_theta(x | z, x_{1-b}, b)``; leading axes broadcast."""
        lead = jnp.broadcast_shapes(z.shape[:-1], x.shape[:-1], b.shape[:-1])
        z, x, b = (jnp.broadcast_to(a, lead + a.shape[-1:]) for a in (z, x, b))
        out = _apply(self.decoder, jnp.concatenate([z, x * (1 - b), b], -1))
        if self.fixed_scale is not None:
            return out, jnp.full_like(out, self.fixed_scale)
        loc, raw = jnp.split(out, 2, axis=-1)
        return loc, jax.nn.softplus(raw) + self.min_scale


class VAEACConditional(EvidenceConditional):
    """A VAEAC's prior and generative networks as the query model's prior and decoder.

    ``cond`` (``bool [..., D]``) marks the features conditioned on; the VAEAC
    mask is ``b = 1 - cond``.

    Parameters
    ----------
    networks : VAEACNetworks
    """

    networks: VAEACNetworks

    def prior(self, x, cond):
        """``(loc, scale) [..., d]`` of ``p_psi(z | x_cond, b)``."""
        return self.networks.prior_params(x, 1 - jnp.asarray(cond, x.dtype))

    def decode(self, z, x, cond):
        """``{"loc", "scale"} [..., D]`` of ``p_theta(x | z, x_cond, b)``."""
        loc, scale = self.networks.decode(z, x, 1 - jnp.asarray(cond, x.dtype))
        return {"loc": loc, "scale": scale}


def _normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def _row_objective(nets, key, x, present, b):
    """Regularised VAEAC lower bound of one row (eq. 6 + section 4.3.2); all ``[D]``."""
    bf, pf = b.astype(x.dtype), present.astype(x.dtype)
    q_loc, q_scale = nets.proposal_params(x, bf, pf)
    p_loc, p_scale = nets.prior_params(x, bf)
    z = q_loc + q_scale * jax.random.normal(key, q_loc.shape, x.dtype)
    loc, scale = nets.decode(z, x, bf)
    rec = jnp.sum(jnp.where(b & present, _normal_logpdf(x, loc, scale), 0.0))
    kl = jnp.sum(
        jnp.log(p_scale / q_scale) + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5
    )
    reg = -jnp.sum(p_loc**2) / (2 * SIGMA_MU**2) + SIGMA_SIGMA * jnp.sum(jnp.log(p_scale) - p_scale)
    return rec - kl + reg


def _row_iwae(nets, key, x, present, b, target, num_samples):
    r"""IWAE :math:`\log p(x_{target} \mid x_{1-b}, b)` of one row with ``q_phi`` as proposal."""
    bf, pf = b.astype(x.dtype), present.astype(x.dtype)
    q_loc, q_scale = nets.proposal_params(x, bf, pf)
    p_loc, p_scale = nets.prior_params(x, bf)
    z = q_loc + q_scale * jax.random.normal(key, (num_samples,) + q_loc.shape, x.dtype)
    loc, scale = nets.decode(z, x, bf)
    ll = jnp.sum(jnp.where(target, _normal_logpdf(x, loc, scale), 0.0), -1)
    lw = (
        ll
        + jnp.sum(_normal_logpdf(z, p_loc, p_scale), -1)
        - jnp.sum(_normal_logpdf(z, q_loc, q_scale), -1)
    )
    return logsumexp(lw) - math.log(num_samples)


def _training_mask(key, present, mask_rate):
    """``b ~ p(b | x)``: missing values always unobserved, others with ``mask_rate``."""
    return (jax.random.uniform(key, present.shape) < mask_rate) | ~present


# ----------------------------------------------------------------- training
def _optimizer(learning_rate, clip_norm):
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


@eqx.filter_jit
def _run_epoch(params, static, opt_cfg, mask_rate, opt_state, key, x, present, batch_size):
    """One pass over shuffled minibatches, a ``lax.scan`` over optimisation steps."""
    opt = _optimizer(*opt_cfg)
    n = x.shape[0]
    nb = n // batch_size
    k_perm, k_steps = jax.random.split(key)
    idx = jax.random.permutation(k_perm, n)[: nb * batch_size].reshape(nb, batch_size)

    def loss_fn(p, k, xb, pb):
        nets = eqx.combine(p, static)
        k_mask, k_z = jax.random.split(k)
        b = _training_mask(k_mask, pb, mask_rate)
        keys = jax.random.split(k_z, xb.shape[0])
        return -jnp.mean(jax.vmap(_row_objective, (None, 0, 0, 0, 0))(nets, keys, xb, pb, b))

    def step(carry, inp):
        p, s = carry
        k, i = inp
        loss, g = jax.value_and_grad(loss_fn)(p, k, x[i], present[i])
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (params, opt_state), losses = jax.lax.scan(
        step, (params, opt_state), (jax.random.split(k_steps, nb), idx)
    )
    return params, opt_state, losses.mean()


@eqx.filter_jit
def _mean_iwae(nets, key, x, present, mask_rate, num_samples):
    """Mean over rows of the IWAE ``log p(x_b | x_{1-b}, b)`` (targets: ``b & present``).

    The masks ``b`` are drawn from ``key`` with ``mask_rate``: the same key
    scores every epoch on the same conditionals.
    """
    k_mask, k_z = jax.random.split(key)
    b = _training_mask(k_mask, present, mask_rate)
    keys = jax.random.split(k_z, x.shape[0])
    f = jax.vmap(_row_iwae, (None, 0, 0, 0, 0, 0, None))
    return jnp.mean(f(nets, keys, x, present, b, b & present, num_samples))


@eqx.filter_jit
def _build(num_features, latent_dim, hidden, scale, min_scale, key):
    return VAEACNetworks(
        num_features, latent_dim, hidden, scale=scale, min_scale=min_scale, key=key
    )


def _check_real(schema):
    bad = [f"{f.name!r} ({f.kind})" for f in schema if f.kind != "real"]
    if bad:
        raise ValueError(
            "method='vaeac' models real-valued features only; these features are not real: "
            f"{', '.join(bad)}. Train them with method='vae' (mixed kinds), or pass kinds= "
            "to treat them as real"
        )


def train_vaeac(
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
    scale=1.0,
    mask_rate: float = 0.2,
    val_fraction: float = 0.25,
    num_val_samples: int = 16,
) -> VAEACModel:
    """Train a VAEAC on a real-valued table (see the module docstring for the objective).

    Usually called as ``vaequery.train(..., method="vaeac")``.

    Parameters
    ----------
    train_data, val_data, test_data : Table, MaskedTable, DataFrame or array ``[N, D]``
        Raw units; NaN = missing, never in the loss. Without ``val_data``,
        ``val_fraction`` of the training rows (chosen with ``key``) is held out
        for model selection (the paper: 25 %). ``test_data`` is only
        evaluated (``metadata["test_iwae"]``).
    latent_dim, hidden, num_epochs, batch_size, learning_rate, clip_norm
        As in :func:`vaequery.train`.
    patience : int
        Stop after this many epochs without a better validation IWAE.
    min_scale : float
        Floor of a learned feature scale.
    key : int or PRNG key
    progress : bool
    schema, names, kinds, name : see :func:`vaequery.train`
        Every feature must be real.
    scale : float or "learned"
        Gaussian scale of every feature in standardised units: the paper fixes
        1 (best for RMSE); ``"learned"`` lets the generative network output it
        (calibrated predictive variances).
    mask_rate : float
        Probability that a present value is unobserved in a training mask
        (paper: 0.2).
    val_fraction : float
        Share of training rows held out when ``val_data`` is not given.
    num_val_samples : int
        Importance samples of the validation IWAE.

    Returns
    -------
    VAEACModel
        With ``metadata["recipe"]`` and IWAE estimates
        (``val_iwae``, the selected epoch's, and ``test_iwae``: mean nats per
        row of ``log p(x_b | x_{1-b}, b)`` over masks of ``mask_rate``,
        standardised units).

    Raises
    ------
    ValueError
        A feature that is not real, or a bad setting.
    """
    from tqdm.auto import tqdm

    from vaequery.train import _as_key, _model_units, _resolve_schema

    if not (isinstance(scale, str) and scale == "learned"):
        if isinstance(scale, str) or not float(scale) > 0:
            raise ValueError(f"scale must be a positive float or 'learned', got {scale!r}")
    if not 0.0 < float(mask_rate) < 1.0:
        raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate!r}")
    if val_data is None and not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    schema = _resolve_schema(train_data, schema, names, kinds)
    _check_real(schema)
    name = name or getattr(train_data, "name", None)
    hidden = tuple(int(h) for h in hidden)
    k_split, k_init, k_train, k_eval = jax.random.split(_as_key(key), 4)

    x_all, p_all = _model_units(train_data, schema)
    if val_data is None:
        n_all = x_all.shape[0]
        n_val = max(1, int(round(val_fraction * n_all)))
        if n_all - n_val < 1:
            raise ValueError(f"{n_all} training rows are too few to hold out a validation set")
        perm = np.asarray(jax.random.permutation(k_split, n_all))
        x_tr, p_tr = x_all[perm[n_val:]], p_all[perm[n_val:]]
        x_va, p_va = x_all[perm[:n_val]], p_all[perm[:n_val]]
    else:
        x_tr, p_tr = x_all, p_all
        x_va, p_va = _model_units(val_data, schema)
    n = x_tr.shape[0]
    B = min(int(batch_size), n)
    # built under jit: one compilation instead of one per eager initialiser op
    nets = _build(len(schema), int(latent_dim), hidden, scale, float(min_scale), k_init)
    params, static = eqx.partition(nets, eqx.is_inexact_array)
    opt_cfg = (float(learning_rate), float(clip_norm))
    opt_state = _optimizer(*opt_cfg).init(params)
    k_val = jax.random.fold_in(k_eval, 1)

    t0 = time.perf_counter()
    best, best_epoch, params_best, epochs_run = -np.inf, 0, params, 0
    bar = tqdm(range(num_epochs), disable=not progress, desc=f"train vaeac {name or ''}".strip())
    for epoch in bar:
        params, opt_state, loss = _run_epoch(
            params,
            static,
            opt_cfg,
            float(mask_rate),
            opt_state,
            jax.random.fold_in(k_train, epoch),
            x_tr,
            p_tr,
            B,
        )
        epochs_run = epoch + 1
        nets = eqx.combine(params, static)
        v = float(_mean_iwae(nets, k_val, x_va, p_va, float(mask_rate), num_val_samples))
        if v > best:
            best, best_epoch, params_best = v, epoch + 1, params
        bar.set_postfix(loss=f"{float(loss):.3f}", val_iwae=f"{v:.3f}", best=f"{best:.3f}")
        if epoch + 1 - best_epoch >= patience:
            break
    bar.close()
    seconds = time.perf_counter() - t0
    nets = eqx.combine(params_best, static)

    recipe = {
        "method": "vaeac",
        "dataset": name,
        "latent_dim": int(latent_dim),
        "hidden": list(hidden),
        "scale": scale if isinstance(scale, str) else float(scale),
        "min_scale": float(min_scale),
        "mask_rate": float(mask_rate),
        "prior_regulariser": {"sigma_mu": SIGMA_MU, "sigma_sigma": SIGMA_SIGMA},
        "optimizer": f"adam(lr={learning_rate}) after clip_by_global_norm({clip_norm})",
        "batch_size": B,
        "max_epochs": int(num_epochs),
        "patience": int(patience),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "key": int(key) if isinstance(key, (int, np.integer)) else None,
        "num_train": int(n),
        "num_val": int(x_va.shape[0]),
        "validation": "given" if val_data is not None else f"{val_fraction:g} of train_data",
        "train_seconds": round(seconds, 2),
        "iwae_units": "nats per row of log p(x_b | x_(1-b), b), standardised features, "
        f"masks of rate {mask_rate:g}, {num_val_samples} importance samples",
    }
    test = None
    if test_data is not None:
        x_te, p_te = _model_units(test_data, schema)
        k_te = jax.random.fold_in(k_eval, 2)
        test = float(_mean_iwae(nets, k_te, x_te, p_te, float(mask_rate), num_val_samples))
    metadata = {"recipe": recipe, "val_iwae": float(best), "test_iwae": test}
    return VAEACModel(nets, schema, metadata)


# ------------------------------------------------------------------ queries
@eqx.filter_jit
def _sample_rows(nets, keys, x, observed, num_draws, batch_size):
    """Draws from the model's conditional for every row: ``z [N,S,d]``, ``loc, scale [N,S,D]``."""

    def one(args):
        k, xr, o = args
        b = 1.0 - o.astype(xr.dtype)
        p_loc, p_scale = nets.prior_params(xr, b)
        z = p_loc + p_scale * jax.random.normal(k, (num_draws,) + p_loc.shape, xr.dtype)
        loc, scale = nets.decode(z, xr, b)
        return z, loc, scale

    return jax.lax.map(one, (keys, x, observed), batch_size=batch_size)


@eqx.filter_jit
def _iwae_rows(nets, keys, x, observed, target, num_samples, batch_size):
    def one(args):
        k, xr, o, t = args
        return _row_iwae(nets, k, xr, o | t, ~o, t, num_samples)

    return jax.lax.map(one, (keys, x, observed, target), batch_size=batch_size)


class VAEACModel:
    """A trained VAEAC, queried like a :class:`vaequery.VAE`.

    Built by ``vaequery.train(..., method="vaeac")``; saved with :meth:`save`,
    read back with :func:`vaequery.load`, and pickled through the same format.
    Queries (:meth:`given`) are answered by ``infer("vaeac")``, the model's
    own prior network conditioned on the evidence, or by any backend that
    reads the query's NumPyro model through its density (module docstring).
    Backends that assume the prior ``N(0, I)`` and a decoder of ``z`` alone
    (``grid``, the Gibbs samplers, ``feature_vi``, the amortized guides) are
    refused.

    Parameters
    ----------
    networks : VAEACNetworks
    schema : Schema
        Real features only.
    metadata : dict, optional
    """

    def __init__(self, networks: VAEACNetworks, schema: Schema, metadata: dict | None = None):
        from vaequery.likelihoods import Gaussian

        _check_real(schema)
        if networks.num_features != len(schema):
            raise ValueError(
                f"the networks model {networks.num_features} features, the schema has {len(schema)}"
            )
        self.networks = networks
        self.schema = schema
        self.latent_dim = networks.latent_dim
        self.metadata = dict(metadata or {})
        # the decoder returns its scale (min_scale included): nothing is added here
        self.likelihood = Gaussian(networks.fixed_scale or 1.0)
        # the query model (vaequery.model): prior and decoder read the evidence
        self.conditional = VAEACConditional(networks)
        self.decode_fn = self.encode_fn = self.conditional
        self.prior = None
        self.guides = {}
        self._numpyro_model = build_numpyro_model(
            None, self.likelihood, self.latent_dim, conditional=self.conditional
        )
        self._target_fns = target_functions(self._numpyro_model)

    @property
    def num_features(self) -> int:
        """Number of columns ``D``."""
        return len(self.schema)

    @property
    def feature_names(self) -> list[str]:
        """Column names in order."""
        return self.schema.names

    def given(self, X=None, /, *, observed=None, **values) -> VAEACQuery:
        """Start a query by stating the evidence (as :meth:`vaequery.VAE.given`).

        Parameters
        ----------
        X : array ``[N, D]`` or ``[D]``, optional
            Evidence in raw units, NaN = unobserved; a ``vaequery.datasets``
            table is accepted too (a masked table brings its target mask).
        observed : bool array like ``X``, optional
        **values
            Evidence by feature name (one row).

        Returns
        -------
        VAEACQuery
        """
        from vaequery.query import Query

        q = Query.from_evidence(self, X, observed=observed, values=values)
        target = getattr(X, "target_mask", None)
        return VAEACQuery(q if target is None else q.predict(target=target))

    def save(self, path):
        """Write the model to the folder ``path`` (``model.json`` + ``weights.eqx``).

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        Path
            The folder written; read it back with :func:`vaequery.load`.
        """
        from vaequery._format import write_folder

        return write_folder(path, vaeac_files(self))

    def _format_files(self) -> dict:
        # what vaequery._format.model_files stores for this model (posteriors included)
        return vaeac_files(self)

    def __reduce__(self):
        # through vaequery's own format (JSON and array bytes), as VAE does
        from vaequery.io import model_from_files

        return (model_from_files, (vaeac_files(self), "pickled VAEACModel"))

    def __repr__(self) -> str:
        s = self.networks.fixed_scale
        return (
            f"VAEACModel(latent_dim={self.latent_dim}, features={self.num_features}, "
            f"scale={'learned' if s is None else s})"
        )


_BACKENDS = ("vaeac",)


class VAEACQuery:
    """A query on a :class:`VAEACModel`: evidence, targets, and :meth:`infer`.

    Wraps a :class:`vaequery.Query` (same validation, same ``predict`` and
    ``given``); only point evidence is accepted.

    Parameters
    ----------
    query : vaequery.Query
        Built on the VAEAC model.
    """

    def __init__(self, query):
        self._query = query

    model = property(lambda self: self._query.model, doc="The :class:`VAEACModel`.")
    x = property(lambda self: self._query.x, doc="Evidence, standardised ``[N, D]``.")
    observed_mask = property(lambda self: self._query.observed_mask, doc="``bool [N, D]``.")
    target_mask = property(lambda self: self._query.target_mask, doc="``bool [N, D]``.")
    targets = property(lambda self: self._query.targets, doc="Target names per row.")
    observed = property(lambda self: self._query.observed, doc="Evidence per row, raw units.")

    @property
    def num_queries(self) -> int:
        """Number of rows ``N``."""
        return self._query.num_queries

    def __len__(self) -> int:
        return self.num_queries

    def given(self, **values) -> VAEACQuery:
        """More evidence by feature name; a new query (see :meth:`vaequery.Query.given`)."""
        return VAEACQuery(self._query.given(**values))

    def predict(self, *names, target=None) -> VAEACQuery:
        """Choose the target features; a new query (see :meth:`vaequery.Query.predict`).

        Parameters
        ----------
        *names : str
        target : bool array ``[N, D]``, optional

        Returns
        -------
        VAEACQuery
        """
        return VAEACQuery(self._query.predict(*names, target=target))

    def factor(self, fn) -> VAEACQuery:
        """Add a soft constraint; a new query (see :meth:`vaequery.Query.factor`)."""
        return VAEACQuery(self._query.factor(fn))

    def where(self, fn, **kwargs) -> VAEACQuery:
        """Add a soft condition; a new query (see :meth:`vaequery.Query.where`)."""
        return VAEACQuery(self._query.where(fn, **kwargs))

    def numpyro_model(self, row: int | None = None):
        """The query as a NumPyro model (see :meth:`vaequery.Query.numpyro_model`).

        Parameters
        ----------
        row : int, optional

        Returns
        -------
        (model_fn, kwargs)
        """
        return self._query.numpyro_model(row)

    def _check_own(self):
        q = self._query
        others = "; infer('fullrank') or infer('nuts') answer it through the model's density"
        if q.has_intervals:
            r, c = np.argwhere(q.interval_mask)[0]
            raise ValueError(
                f"infer('vaeac') samples the prior network, which reads only point evidence; "
                f"feature {self.model.schema.names[c]!r} has interval evidence in row {r}{others}"
            )
        if q.factors or q.derived:
            raise ValueError(
                "infer('vaeac') samples the prior network and answers neither soft constraints "
                f"nor derived targets{others}"
            )

    def infer(
        self,
        backend="vaeac",
        key=0,
        *,
        num_draws: int | None = None,
        chunk_size: int | None = None,
        **hyperparameters,
    ):
        """Answer every row at once: the prior network, or any density-based backend.

        Parameters
        ----------
        backend : str or Backend
            ``"vaeac"`` (default): draw ``z ~ p_psi(z | x_O, b)`` and decode.
            Any other name runs that backend on the query's NumPyro model
            (:meth:`vaequery.Query.infer`), started from the prior network;
            backends that assume the prior ``N(0, I)`` are refused.
        key : int or PRNG key
            Same key, same answer.
        num_draws : int, optional
            Draws per query (``"vaeac"``: default 100; others: their default).
        chunk_size : int, optional
            Rows computed together (bounds memory).
        **hyperparameters
            The backend's settings (not for ``"vaeac"``).

        Returns
        -------
        VAEACPosterior or vaequery.Posterior
        """
        from vaequery.train import _as_key

        if not (isinstance(backend, str) and backend in _BACKENDS):
            return self._query.infer(
                backend, key, num_draws=num_draws, chunk_size=chunk_size, **hyperparameters
            )
        if hyperparameters:
            raise TypeError(
                f"infer('vaeac') has no settings; got {sorted(hyperparameters)}. Accepted: "
                "key, num_draws, chunk_size"
            )
        self._check_own()
        num_draws = _positive(100 if num_draws is None else num_draws, "num_draws")
        key = _as_key(key)
        keys = jax.random.split(key, self.num_queries)
        z, loc, scale = _sample_rows(
            self.model.networks,
            keys,
            jnp.asarray(self.x),
            jnp.asarray(self.observed_mask),
            num_draws,
            _chunk(chunk_size, self.num_queries),
        )
        return VAEACPosterior(self, np.asarray(z), np.asarray(loc), np.asarray(scale), key)

    def __repr__(self) -> str:
        return "VAEAC" + repr(self._query)


def _positive(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _chunk(chunk_size, n):
    return None if chunk_size is None else min(_positive(chunk_size, "chunk_size"), n)


class VAEACPosterior:
    """Answer of a VAEAC model to a batch of queries.

    Attributes
    ----------
    query : VAEACQuery
    z : ndarray ``[N, S, d]``
        Draws from the prior network given each row's evidence.
    x : ndarray ``[N, S, D]``
        Imputations in raw units: the decoder's mean for each draw, observed
        entries copied from the evidence.
    x_scale : ndarray ``[N, S, D]``
        The decoder's standard deviation per draw, raw units (0 where observed).
    """

    def __init__(self, query, z, loc, scale, key):
        schema = query.model.schema
        obs = query.observed_mask[:, None, :]
        self.query = query
        self.z = z
        self._x_model = np.where(obs, query.x[:, None, :], loc)
        self.x = schema.unstandardise(self._x_model)
        self.x_scale = np.where(obs, 0.0, scale * schema.scale)
        self._key_data = np.asarray(jax.random.key_data(key))

    @property
    def num_queries(self) -> int:
        """Number of rows ``N``."""
        return self.z.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """Predictive mean ``E[x | x_O]`` per row, raw units ``[N, D]``."""
        return self.x.mean(1)

    @property
    def var(self) -> np.ndarray:
        """Predictive variance per row, raw units ``[N, D]`` (0 where observed).

        ``E_z[scale^2] + Var_z[loc]`` over the draws (total variance).
        """
        var = (self.x_scale**2).mean(1) + self.x.var(1)
        return np.where(self.query.observed_mask, 0.0, var)

    def _true_model_units(self, X_true):
        from vaequery.report.metrics import true_model_units

        return true_model_units(self.query, X_true)

    def nrmse(self, X_true, reduce="mean"):
        """Normalised RMSE over each row's targets (standardised units).

        Parameters
        ----------
        X_true : array ``[N, D]``
            True values in raw units (at least at the targets).
        reduce : {"mean", "min"}
            Error of the mean imputation (VAEAC's reading, default) or the
            minimum over draws of the per-draw error (QAVI's).

        Returns
        -------
        ndarray ``[N]``
            NaN for a row without targets.
        """
        if reduce not in ("mean", "min"):
            raise ValueError(f"reduce must be 'mean' or 'min', got {reduce!r}")
        x = self._true_model_units(X_true)
        tgt = self.query.target_mask
        k = tgt.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if reduce == "mean":
                err = np.where(tgt, self._x_model.mean(1) - x, 0.0)
                return np.sqrt((err**2).sum(1) / k)
            err = np.where(tgt[:, None], self._x_model - x[:, None], 0.0)
            return np.sqrt((err**2).sum(-1) / k[:, None]).min(1)

    def log_likelihood(self, X_true, num_samples: int = 1000, key=None, chunk_size=None):
        """IWAE estimate of ``log p(x_U | x_O)`` per query (the paper's estimator).

        Parameters
        ----------
        X_true : array ``[N, D]``
            True values in raw units (at least at the targets).
        num_samples : int
            Importance samples from the proposal network ``q(z | x_O, x_U, b)``.
        key : int or PRNG key, optional
            Default: derived from the inference key.
        chunk_size : int, optional

        Returns
        -------
        ndarray ``[N]``
            Nats, standardised units (add ``-sum log scale_j`` over the
            targets for raw units), not divided by the number of targets.
        """
        from vaequery.train import _as_key

        x = self._true_model_units(X_true)
        q = self.query
        x = np.where(q.observed_mask, q.x, x)
        if key is None:
            key = jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(self._key_data)), 1)
        keys = jax.random.split(_as_key(key), self.num_queries)
        out = _iwae_rows(
            q.model.networks,
            keys,
            jnp.asarray(x, q.x.dtype),
            jnp.asarray(q.observed_mask),
            jnp.asarray(q.target_mask),
            _positive(num_samples, "num_samples"),
            _chunk(chunk_size, self.num_queries),
        )
        return np.asarray(out)

    def __repr__(self) -> str:
        return f"VAEACPosterior(queries={self.num_queries}, z{list(self.z.shape)})"


# ------------------------------------------------------------------- format
def vaeac_files(model: VAEACModel) -> dict:
    """The files of a saved VAEAC, ``{relative path: bytes}`` (JSON and array bytes).

    Parameters
    ----------
    model : VAEACModel

    Returns
    -------
    dict of str to bytes
        ``model.json`` (``"format": "vaequery.vaeac"``) and ``weights.eqx``.
    """
    from vaequery.io import MODEL_FILE, WEIGHTS_FILE, _json_bytes, _leaves_bytes, _version

    n = model.networks
    hidden = [int(n.prior.width_size)] * int(n.prior.depth)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vaequery_version": _version(),
        "latent_dim": n.latent_dim,
        "schema": model.schema.to_dict(),
        "architecture": {
            "class": "VAEACNetworks",
            "num_features": n.num_features,
            "latent_dim": n.latent_dim,
            "hidden": hidden,
            "scale": "learned" if n.fixed_scale is None else n.fixed_scale,
            "min_scale": n.min_scale,
        },
        "dtype": str(n.prior.layers[0].weight.dtype),
        "metadata": model.metadata,
    }
    return {WEIGHTS_FILE: _leaves_bytes(n), MODEL_FILE: _json_bytes(info)}


def vaeac_from_files(read, info, where) -> VAEACModel:
    """Rebuild a VAEAC from its ``model.json`` contents ``info`` and a file reader.

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
    VAEACModel

    Raises
    ------
    ValueError
        Another format version, or corrupted files.
    """
    from vaequery._format import WEIGHTS_FILE, _read_weights, check_format_version

    check_format_version(
        info, FORMAT_VERSION, "VAEAC", where, "Retrain it or load it with a matching vaequery."
    )
    a = info["architecture"]
    like = skeleton(
        VAEACNetworks,
        a["num_features"],
        a["latent_dim"],
        tuple(a["hidden"]),
        scale=a["scale"],
        min_scale=a["min_scale"],
    )
    nets = _read_weights(read(WEIGHTS_FILE), like, where)
    return VAEACModel(nets, Schema.from_dict(info["schema"]), info.get("metadata"))


_io.register_format(FORMAT, vaeac_from_files)
_train.register_method("vaeac", train_vaeac)
