r"""Exact posterior by quadrature on an adaptive grid (latent dimension 1 or 2).

For a model with a small latent space the posterior needs no approximation:

.. math::
    p(z\mid x_O) = \frac{p(z)\,p(x_O\mid z)}{p(x_O)},\qquad
    p(x_O) = \int p(z)\,p(x_O\mid z)\,dz \approx \sum_i h^d\, p(z_i)\,p(x_O\mid z_i),

the midpoint rule on a regular grid of cells of side :math:`h` centred at
:math:`z_i`. For a smooth integrand that is negligible at the border of the box
the midpoint rule converges faster than any power of :math:`h` (it is the
trapezoid rule of a periodic function, up to the vanishing border), so a grid
that *covers the mass* and resolves it with a few cells per posterior standard
deviation is exact to float32 precision. The grid therefore adapts per query:

1. **Locate.** A ``coarse_points``-per-axis grid over the box
   :math:`[-\text{half\_width}, \text{half\_width}]^d` (the prior
   :math:`\mathcal N(0, I)` puts less than :math:`10^{-11}` outside the default
   7) evaluates :math:`\log p(z, x_O)`; the box shrinks to the bounding box of
   the cells within ``mass_threshold`` nats of the largest, padded by one
   cell. ``num_zoom`` further passes repeat this inside the new box, so a
   posterior much narrower than a coarse cell is still found (each pass can
   zoom by about ``coarse_points / 3``).
2. **Integrate.** A ``fine_points``-per-axis grid over the final box gives
   :math:`\log p(x_O)` (``Fit.info["log_evidence"]``) and the normalised cell
   masses :math:`w_i`.
3. **Sample.** A draw picks a cell with probability :math:`w_i` (multinomial)
   and a uniform point inside it, i.e. it samples the piecewise-constant
   density :math:`q(z) = w_i / h^d` on cell :math:`i`, whose mean is the
   quadrature mean exactly and whose covariance is the quadrature covariance
   plus :math:`h^2/12` per axis (the jitter). ``sample_and_log_prob`` returns
   these draws with their exact :math:`\log q`, so PSIS diagnostics and
   importance resampling work as for any backend.

Everything has fixed shapes: the passes are a ``lax.scan``, node blocks a
``lax.map`` (``block_size`` nodes at a time bounds memory), and
:func:`vaequery.fit.run` vmaps queries (``chunk_size`` rows at a time).

Query-marginal likelihood
    :meth:`Grid.exact_log_likelihood` gives
    :math:`\log p(x_U\mid x_O) = \log p(x_U, x_O) - \log p(x_O)`, *both* by
    adaptive quadrature (the joint evidence gets its own grid, since observing
    :math:`x_U` may concentrate the posterior far more).
    :func:`vaequery.metrics.iwae_log_likelihood`, and so
    :meth:`vaequery.Posterior.log_likelihood`, return this value for a grid
    posterior instead of an importance-sampling estimate.

Limits
    Only ``latent_dim <= 2``: the cost is ``coarse_points^d (1 + num_zoom) +
    fine_points^d`` log-density evaluations per query (28,672 with the 2-D
    defaults, 5,632 in 1-D). Mass the locating passes cannot see (a mode
    thinner than a coarse cell *and* more than ``mass_threshold`` nats below
    the highest node) is missed; ``Fit.info["edge_mass"]`` (the posterior mass
    in the border cells of the fine grid) flags a box that cut mass off.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from vaequery.backends._base import Backend, Fit, _check_int, register

#: Largest latent dimension the grid backend accepts.
MAX_LATENT_DIM = 2
#: Default points per axis: ``{latent_dim: (coarse_points, fine_points)}``.
DEFAULT_POINTS = {1: (512, 4096), 2: (64, 128)}


def _check_latent_dim(d):
    if d > MAX_LATENT_DIM:
        raise ValueError(
            f"backend 'grid' integrates on a grid and needs latent_dim <= {MAX_LATENT_DIM}; "
            f"this model has latent_dim {d}. Use an approximate backend (e.g. 'nuts', "
            "'mixture' or 'gaussian') for larger latent spaces"
        )


def _axes(lo, hi, n):
    """Cell centres ``[d, n]`` and widths ``[d]`` of ``n`` cells per axis on ``[lo, hi]``."""
    h = (hi - lo) / n
    t = jnp.arange(n, dtype=lo.dtype) + 0.5
    return lo[:, None] + t[None, :] * h[:, None], h


def _nodes(axes):
    """The tensor grid ``[n^d, d]`` of ``d`` axes ``[d, n]`` (row-major, last axis fastest)."""
    d = axes.shape[0]
    mesh = jnp.meshgrid(*[axes[k] for k in range(d)], indexing="ij")
    return jnp.stack(mesh, -1).reshape(-1, d)


def _unravel(idx, n, d):
    """Flat cell indices ``[S]`` -> per-axis indices ``[S, d]`` (row-major)."""
    out = []
    for k in range(d):
        out.append((idx // n ** (d - 1 - k)) % n)
    return jnp.stack(out, -1)


@register("grid")
class Grid(Backend):
    """Exact posterior and likelihood by adaptive grid quadrature (``latent_dim <= 2``).

    See the module docstring for the method. The draws are independent (a
    "vi"-family result: ``z [num_draws, d]`` per query) and the loss trace is
    empty.

    Parameters
    ----------
    coarse_points : int, optional
        Cells per axis of each locating pass (default 64 in 2-D, 512 in 1-D).
    fine_points : int, optional
        Cells per axis of the final grid (default 128 in 2-D, 4096 in 1-D).
    num_zoom : int, default 2
        Locating passes after the first, each inside the box found by the
        previous one.
    half_width : float, default 7.0
        The first box is ``[-half_width, half_width]^d`` (latent units; the
        prior is standard normal).
    mass_threshold : float, default 20.0
        Cells whose log-density is within this many nats of the largest are
        taken to hold mass (20 nats: ``+-6.3`` standard deviations of a
        Gaussian, a relative density of ``2e-9``).
    block_size : int, default 4096
        Grid nodes evaluated together per query (``lax.map``), bounding memory.

    Notes
    -----
    ``Fit.info`` holds ``log_evidence`` (``log p(x_O)`` by quadrature),
    ``edge_mass`` (posterior mass in the fine grid's border cells; above
    ~1e-6 the box cut mass off), and ``box_lo``/``box_hi`` ``[d]`` (the fine
    grid's box). :meth:`exact_log_likelihood` gives ``log p(x_U | x_O)``.
    """

    coarse_points: int | None = None
    fine_points: int | None = None
    num_zoom: int = 2
    half_width: float = 7.0
    mass_threshold: float = 20.0
    block_size: int = 4096

    family: ClassVar[str] = "vi"

    def __check_init__(self):
        for name in ("coarse_points", "fine_points"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 4)
        _check_int("num_zoom", self.num_zoom, 0)
        _check_int("block_size", self.block_size, 1)
        for name in ("half_width", "mass_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")

    def bind(self, model):
        _check_latent_dim(int(model.latent_dim))
        return self

    def points(self, d):
        """``(coarse_points, fine_points)`` used for latent dimension ``d``."""
        _check_latent_dim(d)
        coarse, fine = DEFAULT_POINTS[d]
        return (
            coarse if self.coarse_points is None else int(self.coarse_points),
            fine if self.fine_points is None else int(self.fine_points),
        )

    # ------------------------------------------------------------ quadrature
    def _log_density(self, target, row, nodes):
        """``log p(z, x_O)`` at ``nodes [G, d]`` -> ``[G]``, non-finite as ``-inf``."""

        def f(z):
            return target.logdensity_fn(z, row)

        block = min(int(self.block_size), nodes.shape[0])
        lp = jax.lax.map(f, nodes, batch_size=block)
        return jnp.where(jnp.isnan(lp), -jnp.inf, lp)

    def _locate(self, target, row, d):
        """Where one row's posterior mass lies, as an affine frame and a box.

        Returns ``(loc [d], tril [d, d], lo [d], hi [d], occupied bool [d,
        coarse_points])``: the fine grid lives in coordinates ``u`` with
        ``z = loc + tril @ u``, over the box ``[lo, hi]``; ``occupied`` marks,
        per axis, which of ``coarse_points`` equal bins of the box hold mass.

        Each pass evaluates a ``coarse_points^d`` grid in the current frame,
        keeps the nodes within ``mass_threshold`` nats of the largest, and
        moves to the frame of the nodes' weighted mean and covariance (the
        covariance of a grid cell added, so a posterior narrower than a cell
        gives a cell-sized frame): a thin, tilted posterior gets a grid along
        its axes instead of a box around it. The box is the kept nodes'
        bounding box in the new frame, padded by 1.5 of their cells.
        """
        coarse, _ = self.points(d)
        thr = float(self.mass_threshold)
        eye = jnp.eye(d, dtype=jnp.float32)

        def one_pass(frame, _):
            loc, tril, lo, hi = frame
            axes, h = _axes(lo, hi, coarse)
            z = loc + _nodes(axes) @ tril.T
            lp = self._log_density(target, row, z)
            top = jnp.max(lp)
            ok = jnp.isfinite(top)  # nothing finite seen: keep the frame
            keep = (lp >= top - thr) | ~ok
            w = jax.nn.softmax(jnp.where(ok, lp, 0.0))
            mean = w @ z
            c = z - mean
            cell = (tril * h) @ (tril * h).T / 12.0
            cov = (w[:, None] * c).T @ c + cell
            cov = 0.5 * (cov + cov.T)
            kept = keep[:, None]

            def candidate(new_tril):
                B = jax.scipy.linalg.solve_triangular(new_tril, tril, lower=True)
                u = jax.scipy.linalg.solve_triangular(new_tril, c.T, lower=True).T  # [G, d]
                pad = 1.5 * jnp.abs(B) @ h  # 1.5 old cells, in new units
                new_lo = jnp.min(jnp.where(kept, u, jnp.inf), 0) - pad
                new_hi = jnp.max(jnp.where(kept, u, -jnp.inf), 0) + pad
                # per-axis occupancy of coarse bins of the new box by the kept cells
                hb = (new_hi - new_lo) / coarse
                first = jnp.floor((u - pad - new_lo) / hb)  # [G, d]
                last = jnp.floor((u + pad - new_lo) / hb)
                b = jnp.arange(coarse, dtype=u.dtype)
                covered = (b >= first[:, :, None]) & (b <= last[:, :, None]) & kept[:, :, None]
                occ = jnp.any(covered, 0)  # [d, coarse]
                log_vol = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(new_tril)))) + jnp.sum(
                    jnp.log(jnp.sum(occ, 1) * hb)
                )
                return new_tril, new_lo, new_hi, occ, log_vol

            # the whitened frame suits a tilted ellipse, the axis-aligned one
            # a posterior along the axes (a hyperbola z1 z2 = c): keep the
            # one whose occupied region is smaller, so the fine cells are too
            full = candidate(jnp.linalg.cholesky(cov))
            diag = candidate(jnp.diag(jnp.sqrt(jnp.diagonal(cov))))
            pick = jnp.isfinite(full[-1]) & (full[-1] <= diag[-1])
            new_tril, new_lo, new_hi, occ, _ = jax.tree.map(
                lambda a, b: jnp.where(pick, a, b), full, diag
            )
            good = ok & jnp.all(jnp.isfinite(new_tril)) & jnp.all(jnp.isfinite(new_lo + new_hi))
            out = (
                jnp.where(good, mean, loc),
                jnp.where(good, new_tril, tril),
                jnp.where(good, new_lo, lo),
                jnp.where(good, new_hi, hi),
            )
            return out, jnp.where(good, occ, True)

        w = jnp.full((d,), float(self.half_width), jnp.float32)
        frame = (jnp.zeros(d, jnp.float32), eye, -w, w)
        frame, occ = jax.lax.scan(one_pass, frame, None, length=1 + int(self.num_zoom))
        return (*frame, occ[-1])

    def _fine_edges(self, lo, hi, occ, fine):
        """Cell edges ``[d, fine + 1]`` spread evenly over each axis's occupied cells.

        Empty stretches between occupied coarse cells are skipped (a fine cell
        that spans one is wide, its midpoint in the gap and its mass below the
        threshold), so separated narrow modes share the fine cells between
        them instead of spending most on the space between.
        """
        coarse = occ.shape[-1]
        hc = (hi - lo) / coarse  # [d]

        def axis(lo_k, hc_k, occ_k):
            length = jnp.where(occ_k, hc_k, 0.0)
            cum = jnp.cumsum(length)
            t = jnp.arange(fine, dtype=lo_k.dtype) / fine * cum[-1]
            j = jnp.clip(jnp.searchsorted(cum, t, side="right"), 0, coarse - 1)
            inner = lo_k + j * hc_k + (t - (cum[j] - length[j]))
            last = jnp.max(jnp.where(occ_k, jnp.arange(coarse), -1))
            return jnp.append(inner, lo_k + (last + 1) * hc_k)

        return jax.vmap(axis)(lo, hc, occ)

    def quadrature(self, target, row):
        """Adaptive quadrature of one row.

        Parameters
        ----------
        target : vaequery.model.Target
        row : dict
            One row of ``target.data`` (or any evidence of the same form).

        Returns
        -------
        dict
            ``loc`` ``[d]`` and ``tril`` ``[d, d]`` (the grid's frame:
            ``z = loc + tril @ u``), ``edges`` ``[d, fine_points + 1]``
            (per-axis cell edges of the fine grid in ``u``), ``log_w``
            ``[fine_points^d]`` (normalised log cell masses, row-major),
            ``log_evidence`` (the log of the integral of
            ``p(z, x_O)``) and ``edge_mass`` (mass of the border cells).
        """
        d = int(target.latent_dim)
        _, fine = self.points(d)
        loc, tril, lo, hi, occ = self._locate(target, row, d)
        edges = self._fine_edges(lo, hi, occ, fine)
        centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
        log_width = jnp.log(jnp.maximum(jnp.diff(edges, axis=1), 1e-30))  # [d, fine]
        log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(tril))))
        z = loc + _nodes(centres) @ tril.T
        lp = self._log_density(target, row, z) + _nodes(log_width).sum(-1) + log_det
        total = logsumexp(lp)
        log_w = lp - total
        idx = _unravel(jnp.arange(lp.shape[0]), fine, d)
        edge = jnp.any((idx == 0) | (idx == fine - 1), -1)
        return {
            "loc": loc,
            "tril": tril,
            "edges": edges,
            "log_w": log_w,
            "log_evidence": total,
            "edge_mass": jnp.sum(jnp.where(edge, jnp.exp(log_w), 0.0)),
        }

    # --------------------------------------------------------------- contract
    def sample_and_log_prob(self, state, key, n):
        """``n`` draws ``[n, d]`` of the piecewise-constant grid density and its log ``[n]``."""
        edges, log_w = state["edges"], state["log_w"]
        d, fine = edges.shape[0], edges.shape[1] - 1
        width = jnp.diff(edges, axis=1)  # [d, fine]
        k_cell, k_jit = jax.random.split(key)
        # inverse CDF: O(G + n log G), where categorical's Gumbel trick is O(n G)
        cdf = jnp.cumsum(jnp.exp(log_w))
        v = jax.random.uniform(k_cell, (n,), cdf.dtype) * cdf[-1]
        cell = jnp.clip(jnp.searchsorted(cdf, v, side="right"), 0, log_w.shape[-1] - 1)
        ij = _unravel(cell, fine, d)  # [n, d]
        axis = jnp.arange(d)
        left, w = edges[axis, ij], width[axis, ij]  # [n, d]
        u = left + jax.random.uniform(k_jit, (n, d), edges.dtype) * w
        tril = state["tril"]
        log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(tril))))
        z = state["loc"] + u @ tril.T
        return z, log_w[cell] - jnp.sum(jnp.log(jnp.maximum(w, 1e-30)), -1) - log_det

    def run_one(self, key, target, row, num_draws):
        _check_latent_dim(int(target.latent_dim))
        res = self.quadrature(target, row)
        state = {k: res[k] for k in ("loc", "tril", "edges", "log_w", "log_evidence")}
        z, _ = self.sample_and_log_prob(state, key, num_draws)
        info = {
            "log_evidence": res["log_evidence"],
            "edge_mass": res["edge_mass"],
            "grid_loc": res["loc"],
            "grid_tril": res["tril"],
        }
        return Fit(state, z, jnp.zeros((0,), z.dtype), info)

    def exact_log_likelihood(self, target, state, data_joint, chunk_size=None):
        """``log p(x_U | x_O)`` per query, by quadrature of both evidences.

        Parameters
        ----------
        target : vaequery.model.Target
            The query's target (observed evidence in ``target.data``).
        state : dict
            The fitted grid states (``Posterior.state``), leading axis ``N``;
            their ``log_evidence`` is ``log p(x_O)``.
        data_joint : dict
            ``{"x": [N, D], "observed": bool [N, D]}`` with the observed and
            the true target values (model units) marked observed.
        chunk_size : int, optional
            Rows integrated together.

        Returns
        -------
        ndarray ``[N]``
            ``log p(x_U, x_O) - log p(x_O)``.
        """
        n = target.num_queries
        if chunk_size is not None and chunk_size >= n:
            chunk_size = None
        data = {k: jnp.asarray(v) for k, v in data_joint.items()}
        log_joint = _log_evidence_batch(self, target, data, chunk_size)
        return np.asarray(log_joint) - np.asarray(state["log_evidence"])


@eqx.filter_jit
def _log_evidence_batch(backend, target, data, chunk_size):
    from vaequery.fit import map_rows

    def one(row):
        return backend.quadrature(target, row)["log_evidence"]

    return map_rows(one, (data,), chunk_size)
