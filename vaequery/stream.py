"""Streaming inference: many queries in bounded memory, checkpointed and resumable.

:func:`infer_stream` answers a query block by block: the rows are cut on the
host into blocks of ``block_size`` rows and every block runs through the same
compiled program as :meth:`vaequery.Query.infer` (the last block is padded to
full width, so one program serves them all). After each block

- ``keep="summary"`` keeps only per-query summaries (mean, sd and HDI of every
  feature, latent mean and sd, final loss, ``failed`` flag and, given
  ``X_true``, the IWAE log-likelihood): memory grows as ``N x D``, not
  ``N x draws x D``, so 100,000 queries fit where their draws would not;
- ``keep="posterior"`` keeps everything and returns an ordinary
  :class:`~vaequery.Posterior` at the end;
- with ``checkpoint=path`` the finished block is written to the folder
  ``path``; a later call with the same arguments skips the blocks found there,
  so an interrupted run resumes where it stopped.

Determinism
    Row ``i`` is fitted with the ``i``-th of ``jax.random.split(key, N)`` (the
    same key as in :meth:`~vaequery.Query.infer`) inside a ``chunk_size``-wide
    vectorised program whichever block it falls in. A streamed answer is
    therefore bit-identical whether the run was interrupted or not, and equal
    to ``query.infer(..., chunk_size=chunk_size)`` whenever ``chunk_size`` is
    smaller than the number of rows. (XLA may round differently for another
    vectorisation width: compare runs with the same ``chunk_size``.)

Checkpoint format (``FORMAT_VERSION = 1``), a folder holding
``checkpoint.json``
    ``{"format": "vaequery.checkpoint", "format_version": 1, "vaequery_version",
    "run": {...}, "num_blocks"}``; ``run`` identifies the run: backend name and
    hyper-parameters, key, ``num_draws``, ``block_size``, ``chunk_size``,
    ``keep``, number of queries, SHA-256 digests of the query arrays, of the
    model's weights and of ``X_true``. A call whose ``run`` differs is refused.
``block_<index>.zip``
    One finished block, written to a temporary name and renamed, so a crash
    never leaves half a block under the real name: ``block.json`` (index, rows,
    the run's digest) and ``arrays/<name>.npy`` (``allow_pickle=False``), plus
    ``state.eqx`` (:func:`equinox.tree_serialise_leaves`) for
    ``keep="posterior"``. Reading checks every CRC; nothing in the folder is
    ever executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vaequery import fit as _fit
from vaequery import metrics
from vaequery._leaves import read_leaves
from vaequery._version import __version__
from vaequery.backends._base import backend_record
from vaequery.posterior import Posterior, posterior_from_arrays

FORMAT = "vaequery.checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.json"
BLOCK_FORMAT = "vaequery.checkpoint.block"
KEEP = ("summary", "posterior")
_SUMMARY_ARRAYS = ("mean", "sd", "hdi_low", "hdi_high", "z_mean", "z_sd", "loss", "failed")


class BlockInfo(NamedTuple):
    """What ``callback`` receives after each block computed (not skipped) by :func:`infer_stream`.

    Attributes
    ----------
    index : int
        Block number, from 0.
    num_blocks : int
    start, stop : int
        The block's rows ``start:stop`` of the query.
    seconds : float
        Wall time of the block (inference, summaries and writing).
    num_failed : int
        Rows of the block flagged in ``failed``.
    """

    index: int
    num_blocks: int
    start: int
    stop: int
    seconds: float
    num_failed: int


class StreamSummary:
    """Per-query summaries of a streamed run (``infer_stream(..., keep="summary")``).

    Arrays have one row per query; features are in raw units, observed
    features carry their evidence (sd 0).

    Attributes
    ----------
    mean, sd : ndarray ``[N, D]``
        Mean and standard deviation (``ddof=1``) over draws of the imputations,
        as in :meth:`vaequery.Posterior.summary`.
    hdi_low, hdi_high : ndarray ``[N, D]``
        Highest-density interval of mass ``prob`` over draws.
    z_mean, z_sd : ndarray ``[N, d]``
        Mean and standard deviation of the latent draws.
    loss : ndarray ``[N]``
        Last value of the loss trace (negative ELBO; NaN for MCMC backends).
    failed : bool ndarray ``[N]``
        Rows with a non-finite loss or draws (see :attr:`vaequery.Posterior.failed`).
    log_likelihood : ndarray ``[N]`` or None
        IWAE estimate of ``log p(x_U | x_O)`` (model units) when ``X_true`` was
        given, as :meth:`vaequery.Posterior.log_likelihood`.
    prob : float
    query : vaequery.Query
    backend : vaequery.backends.Backend
    """

    def __init__(self, query, backend, prob, arrays, log_likelihood=None):
        self.query = query
        self.backend = backend
        self.prob = prob
        for name in _SUMMARY_ARRAYS:
            setattr(self, name, arrays[name])
        self.log_likelihood = log_likelihood

    @property
    def num_queries(self) -> int:
        """Number of query rows ``N``."""
        return self.mean.shape[0]

    @property
    def converged(self):
        """``bool [N]``: rows answered with finite losses and draws (``~failed``)."""
        return ~self.failed

    def __repr__(self) -> str:
        return (
            f"StreamSummary(backend={self.backend.name!r}, queries={self.num_queries}, "
            f"failed={int(self.failed.sum())})"
        )

    def summary(self):
        """The target features as a table, laid out as :meth:`vaequery.Posterior.summary`.

        Returns
        -------
        pandas.DataFrame
            Columns ``mean, sd, hdi_<lo>%, hdi_<hi>%``, indexed by
            ``(query, feature)`` (by feature for a one-row query).
        """
        import pandas as pd

        names = np.asarray(self.query.model.schema.names, dtype=object)
        i, j = np.nonzero(self.query.target_mask)
        pct = (1 - self.prob) / 2 * 100
        df = pd.DataFrame(
            {
                "query": i,
                "feature": names[j],
                "mean": self.mean[i, j],
                "sd": self.sd[i, j],
                f"hdi_{pct:g}%": self.hdi_low[i, j],
                f"hdi_{100 - pct:g}%": self.hdi_high[i, j],
            }
        )
        if self.num_queries == 1:
            return df.drop(columns="query").set_index("feature")
        return df.set_index(["query", "feature"])


def infer_stream(
    query,
    backend="gaussian",
    key=0,
    *,
    checkpoint=None,
    block_size=10_000,
    chunk_size=None,
    keep="summary",
    num_draws=None,
    X_true=None,
    iwae_samples=1000,
    prob=0.94,
    on_error="warn",
    callback=None,
    **hyperparameters,
):
    """Answer a large query block by block, in bounded memory, optionally resumable.

    Parameters
    ----------
    query : vaequery.Query
    backend : str or backend object
        As in :meth:`vaequery.Query.infer`.
    key : int or jax PRNG key
        Same key, same answer, however the run was cut into blocks or resumed.
    checkpoint : str or Path, optional
        A folder (created if needed). Every finished block is written there;
        calling again with the same arguments skips the finished blocks (and,
        when all are finished, only reads them).
    block_size : int
        Rows per block: what is held on the device and computed between two
        checkpoint writes. Rounded up to a multiple of ``chunk_size``.
    chunk_size : int, optional
        Rows vectorised together inside a block (default ``block_size``).
        Results equal ``query.infer(..., chunk_size=chunk_size)`` when
        ``chunk_size`` is smaller than the number of rows.
    keep : {"summary", "posterior"}
        Per-query summaries only (memory ``O(N x D)``; a
        :class:`StreamSummary`), or every draw (a :class:`vaequery.Posterior`
        as from :meth:`~vaequery.Query.infer`).
    num_draws : int, optional
        Draws per query (default: the backend's).
    X_true : array ``[N, D]``, optional
        True values (raw units) of the targets: with ``keep="summary"``, the
        summary gets the IWAE ``log_likelihood`` of every query.
    iwae_samples : int
        Importance samples of that estimate (``num_samples`` of
        :meth:`vaequery.Posterior.log_likelihood`; ``num_samples`` here is the
        backend's hyper-parameter).
    prob : float
        HDI mass of the summaries.
    on_error : {"warn", "raise", "ignore"}
        Rows with a non-finite loss or draws, as in :meth:`~vaequery.Query.infer`:
        flagged and warned about once at the end; ``"raise"`` raises at the
        first block that has one (after its checkpoint is written).
    callback : callable, optional
        Called as ``callback(BlockInfo)`` after each computed block (progress
        bars, logging). An exception raised there stops the run; the blocks
        written so far stay in the checkpoint.
    **hyperparameters
        Passed to the backend's constructor (``init=`` included).

    Returns
    -------
    StreamSummary or vaequery.Posterior

    Raises
    ------
    ValueError
        A checkpoint written by another run (other query, model, backend,
        hyper-parameters, key, sizes or ``keep``), or a truncated or
        corrupted checkpoint file (the message names it).

    Examples
    --------
    >>> import vaequery as vq
    >>> vae = vq.pretrained("breast_cancer")
    >>> X = vq.datasets.load("breast_cancer", split="test").with_missing(rate=0.5, key=1)
    >>> s = vq.stream.infer_stream(vae.given(X), "gaussian", key=0, block_size=64,
    ...                            chunk_size=32, num_steps=20, num_samples=8)
    >>> s.mean.shape == (len(X.X), vae.num_features)
    True
    """
    if "devices" in hyperparameters:
        raise TypeError(
            "infer_stream does not shard rows over devices; use Query.infer(..., devices=...) "
            "(with chunk_size= to bound memory per device), or stream on one device"
        )
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {list(KEEP)}, got {keep!r}")
    if on_error not in _fit.ON_ERROR:
        raise ValueError(f"on_error must be one of {list(_fit.ON_ERROR)}, got {on_error!r}")
    if X_true is not None and keep != "summary":
        raise ValueError(
            "X_true= adds log-likelihoods to keep='summary'; with keep='posterior' call "
            "Posterior.log_likelihood(X_true, chunk_size=...) on the result"
        )
    if not 0 < prob < 1:
        raise ValueError(f"prob must be in (0, 1), got {prob!r}")
    block_size = _fit._positive_int("block_size", block_size)
    chunk_size = block_size if chunk_size is None else _fit._positive_int("chunk_size", chunk_size)
    iwae_samples = _fit._positive_int("iwae_samples", iwae_samples)
    N = query.num_queries
    if N == 0:
        raise ValueError("the query has no rows (N = 0); nothing to stream")
    backend, target, keys, key, num_draws, _ = _fit.prepare(
        query, backend, key, num_draws, None, dict(hyperparameters)
    )
    model = query.model
    # A block is a whole number of chunks, so every row meets the chunk_size-wide
    # program that Query.infer(chunk_size=...) runs on it; a query that fits in one
    # block runs exactly as Query.infer would (one vmap when chunk_size >= N).
    block_size = -(-block_size // chunk_size) * chunk_size
    if N <= block_size:
        block_size = N
        chunk = chunk_size if chunk_size < N else None
    else:
        chunk = chunk_size
    num_blocks = -(-N // block_size)
    xt_model = None
    if X_true is not None:
        xt_model = _true_model_units(query, X_true)
        ll_keys = jax.random.split(jax.random.fold_in(key, 1), N)  # Posterior.log_likelihood's
    run_record = _run_record(
        query,
        backend,
        key,
        num_draws,
        block_size,
        chunk_size,
        keep,
        target,
        X_true,
        iwae_samples,
        prob,
    )
    ckpt = None if checkpoint is None else _Checkpoint(Path(checkpoint), run_record, num_blocks)
    host = jax.tree.map(np.asarray, target.data)
    state_like = None
    parts = {}  # keep="posterior": block -> arrays
    summ = None
    if keep == "summary":
        D, d = len(model.schema), model.latent_dim
        summ = {
            "mean": np.empty((N, D)),
            "sd": np.empty((N, D)),
            "hdi_low": np.empty((N, D)),
            "hdi_high": np.empty((N, D)),
            "z_mean": np.empty((N, d), np.float32),
            "z_sd": np.empty((N, d), np.float32),
            "loss": np.empty(N, np.float32),
            "failed": np.empty(N, bool),
        }
        ll_all = np.empty(N, np.float32) if X_true is not None else None
    for b in range(num_blocks):
        start, stop = b * block_size, min(N, (b + 1) * block_size)
        n = stop - start
        stored = ckpt.read(b, start, stop) if ckpt is not None else None
        if stored is None:
            t0 = time.perf_counter()
            idx = np.arange(start, start + block_size)
            idx[n:] = start  # pad the last block with copies of its first row
            data_b = jax.tree.map(lambda v, idx=idx: jnp.asarray(v[idx]), host)
            target_b = target._replace(data=data_b)
            fit_b, x_model = _fit._run_batch(
                backend, target_b, model.likelihood, keys[idx], num_draws, chunk
            )
            state = jax.tree.map(lambda a: np.asarray(a)[:n], fit_b.state)
            z = np.asarray(fit_b.z)[:n]
            loss = np.asarray(fit_b.loss)[:n]
            info = {k: np.asarray(v)[:n] for k, v in fit_b.info.items()}
            failed = _fit.failed_rows(loss, z)
            sub = query._rows(start, stop)
            post = Posterior(
                sub, backend, state, z, np.asarray(x_model)[:n], loss, info, key, failed
            )
            if keep == "summary":
                arrays = _summarise(post, prob)
                if xt_model is not None:
                    x_joint = np.where(query.observed_mask, query.x, xt_model)[idx]
                    joint = (query.observed_mask | query.target_mask)[idx]
                    arrays["log_likelihood"] = _block_log_likelihood(
                        backend,
                        target_b,
                        fit_b.state,
                        ll_keys[idx],
                        x_joint,
                        joint,
                        iwae_samples,
                        chunk,
                    )[:n]
                state_bytes = None
            else:
                arrays = {
                    "z": z,
                    "x_model": post._x_model,
                    "loss": loss,
                    "failed": failed,
                    **{f"info/{k}": v for k, v in info.items()},
                }
                state_bytes = _leaves_bytes(state) if ckpt is not None else None
            if ckpt is not None:
                ckpt.write(b, start, stop, arrays, state_bytes)
            rows = np.flatnonzero(failed)
            if on_error == "raise":
                _fit.report_failed(backend, rows + start, N, "raise")
            if callback is not None:
                callback(
                    BlockInfo(b, num_blocks, start, stop, time.perf_counter() - t0, int(rows.size))
                )
        else:
            arrays, state_bytes = stored
            state = None
            if on_error == "raise":
                _fit.report_failed(backend, np.flatnonzero(arrays["failed"]) + start, N, "raise")
        if keep == "summary":
            for name in _SUMMARY_ARRAYS:
                summ[name][start:stop] = arrays[name]
            if ll_all is not None:
                ll_all[start:stop] = arrays["log_likelihood"]
        else:
            if state is not None:  # computed now: the state is in memory
                parts[b] = (arrays, state)
            else:
                if state_like is None:
                    state_like = _state_skeleton(
                        backend, target, model, keys, num_draws, block_size
                    )
                like = jax.tree.map(
                    lambda s, n=n: jax.ShapeDtypeStruct((n,) + s.shape[1:], s.dtype), state_like
                )
                parts[b] = (arrays, _read_state(state_bytes, like, ckpt.block_path(b)))
    if keep == "summary":
        failed = summ["failed"]
    else:
        failed = np.concatenate([parts[b][0]["failed"] for b in range(num_blocks)])
    if on_error == "warn":
        _fit.report_failed(backend, np.flatnonzero(failed), N, "warn", stacklevel=3)
    if keep == "summary":
        return StreamSummary(query, backend, prob, summ, ll_all)
    cat = {
        name: np.concatenate([parts[b][0][name] for b in range(num_blocks)]) for name in parts[0][0]
    }
    state = jax.tree.map(lambda *a: np.concatenate(a), *[parts[b][1] for b in range(num_blocks)])
    return posterior_from_arrays(query, backend, state, cat, key)


# ----------------------------------------------------------------- helpers
def _summarise(post, prob):
    """The :class:`StreamSummary` arrays of one block's Posterior (same maths as its summary)."""
    x = post._flat(post.x)
    lo, hi = metrics.hdi(np.moveaxis(x, 1, -1), prob)
    sd = x.std(1, ddof=1) if x.shape[1] > 1 else np.zeros_like(x[:, 0])
    z = post._flat(post.z)
    loss = (
        post.loss[:, -1]
        if post.loss.ndim == 2 and post.loss.shape[1]
        else (np.full(post.num_queries, np.nan, np.float32))
    )
    return {
        "mean": x.mean(1),
        "sd": sd,
        "hdi_low": lo,
        "hdi_high": hi,
        "z_mean": z.mean(1),
        "z_sd": z.std(1, ddof=1) if z.shape[1] > 1 else np.zeros_like(z[:, 0]),
        "loss": loss,
        "failed": post.failed,
    }


def _block_log_likelihood(backend, target, state, keys, x_joint, joint, num_samples, chunk):
    """IWAE ``log p(x_U | x_O)`` of one (padded) block, as :func:`metrics.iwae_log_likelihood`."""
    data_joint = {
        # the model's other arguments (interval evidence) are evidence in both terms
        **{k: v for k, v in target.data.items() if k not in ("x", "observed", "start")},
        "x": jnp.asarray(x_joint, jnp.result_type(float)),
        "observed": jnp.asarray(joint, bool),
    }
    exact = getattr(backend, "exact_log_likelihood", None)
    if exact is not None:
        return np.asarray(exact(target, state, data_joint, chunk))
    ll, _ = metrics._iwae(backend, target, state, keys, target.data, data_joint, num_samples, chunk)
    return np.asarray(ll)


def _true_model_units(query, X_true):
    """``X_true`` in model units on the targets (the checks of ``Posterior.log_likelihood``)."""
    shell = Posterior.__new__(Posterior)
    shell.query = query
    return shell._true_model_units(X_true)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _model_digest(model) -> str:
    leaves = jax.tree.leaves(
        eqx.filter((model.decode_fn, model.encode_fn, model.likelihood), eqx.is_array)
    )
    return _digest(
        np.asarray(model.feature_names, dtype=str),
        np.asarray(model.latent_dim),
        *[np.asarray(a) for a in leaves],
    )


def _run_record(
    query, backend, key, num_draws, block_size, chunk_size, keep, target, X_true, iwae_samples, prob
):
    """What identifies a streamed run: a checkpoint of another run is refused."""
    data = [target.data[k] for k in sorted(target.data) if k != "start"]
    start = jax.tree.leaves(target.data.get("start", {}))
    rec = backend_record(backend)
    return {
        "backend": rec["name"],
        **{f"hyperparameter {k}": v for k, v in rec["hyperparameters"].items()},
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "num_queries": int(query.num_queries),
        "num_draws": int(num_draws),
        "block_size": int(block_size),
        "chunk_size": int(chunk_size),
        "keep": keep,
        "query_sha256": _digest(*[np.asarray(a) for a in data], query.target_mask),
        "start_sha256": _digest(*[np.asarray(a) for a in start]) if start else None,
        "model_sha256": _model_digest(query.model),
        "X_true_sha256": None if X_true is None else _digest(np.asarray(X_true, float)),
        "iwae_samples": int(iwae_samples) if X_true is not None else None,
        "prob": float(prob),
    }


def _leaves_bytes(tree) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    return buf.getvalue()


def _state_skeleton(backend, target, model, keys, num_draws, block_size):
    """Shapes of one block's fitted state (traced, not run)."""
    idx = np.zeros(block_size, int)
    data = jax.tree.map(lambda a: a[idx], target.data)
    fit_shape, _ = eqx.filter_eval_shape(
        _fit._run_batch,
        backend,
        target._replace(data=data),
        model.likelihood,
        keys[idx],
        num_draws,
        None,
    )
    return fit_shape.state


def _read_state(data, like, where):
    try:
        return jax.tree.map(np.asarray, read_leaves(io.BytesIO(data), like))
    except Exception as e:  # altered bytes fail in many ways inside numpy
        raise ValueError(
            f"checkpoint block {where}: state.eqx is truncated or corrupted ({type(e).__name__}: "
            f"{e}); delete {where} and run again to recompute that block"
        ) from None


class _Checkpoint:
    """The checkpoint folder of one run: checks its record, reads and writes blocks."""

    def __init__(self, path: Path, run: dict, num_blocks: int):
        self.path = path
        self.run = run
        self.digest = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
        meta = path / CHECKPOINT_FILE
        if path.exists() and not path.is_dir():
            raise ValueError(f"checkpoint {path} exists and is not a folder")
        if meta.exists():
            self._check(meta)
        else:
            path.mkdir(parents=True, exist_ok=True)
            if any(path.glob("block_*.zip")):
                raise ValueError(
                    f"checkpoint {path} holds block files but no {CHECKPOINT_FILE}: it is "
                    "incomplete or not a vaequery checkpoint; delete the folder or use a new path"
                )
            info = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "vaequery_version": __version__,
                "run": run,
                "num_blocks": num_blocks,
            }
            _atomic_write(meta, (json.dumps(info, indent=2) + "\n").encode())

    def _check(self, meta: Path):
        where = str(meta)
        try:
            info = json.loads(meta.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"checkpoint {where} is corrupted (not valid JSON: {e}); delete the folder "
                f"{self.path} and run again"
            ) from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ValueError(f"{where} is not a vaequery checkpoint")
        if info.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint {where} has format version {info.get('format_version')} (written "
                f"by vaequery {info.get('vaequery_version')}); this vaequery reads version "
                f"{FORMAT_VERSION} only: resume with that vaequery, or use a new checkpoint path"
            )
        old = info.get("run")
        if old != self.run:
            if not isinstance(old, dict):
                raise ValueError(f"checkpoint {where} is corrupted (no run record)")
            diff = [k for k in sorted(set(old) | set(self.run)) if old.get(k) != self.run.get(k)]
            shown = "; ".join(
                f"{k}: checkpoint {_short(old.get(k))}, now {_short(self.run.get(k))}" for k in diff
            )
            raise ValueError(
                f"checkpoint {self.path} was written by a different run ({shown}). Resume "
                "with the same query, model, backend, hyper-parameters, key, block_size, "
                "chunk_size and keep, or pass a new checkpoint path (or delete this one)"
            )

    def block_path(self, b: int) -> Path:
        return self.path / f"block_{b:06d}.zip"

    def read(self, b, start, stop):
        """``(arrays, state bytes or None)`` of a finished block, or None if not written."""
        path = self.block_path(b)
        if not path.exists():
            return None
        try:
            with zipfile.ZipFile(path) as zf:
                files = {n: zf.read(n) for n in zf.namelist()}  # checks every CRC
            meta = json.loads(files["block.json"])
            arrays = {
                n[len("arrays/") : -len(".npy")]: np.load(io.BytesIO(v), allow_pickle=False)
                for n, v in files.items()
                if n.startswith("arrays/")
            }
        except Exception as e:  # truncated or altered bytes fail in many ways
            raise ValueError(
                f"checkpoint block {path} is truncated or corrupted ({type(e).__name__}: {e}); "
                "delete that file and run again to recompute the block"
            ) from None
        if meta.get("format") != BLOCK_FORMAT or meta.get("run_sha256") != self.digest:
            raise ValueError(
                f"checkpoint block {path} belongs to another run than {self.path / CHECKPOINT_FILE}"
                "; delete the folder or use a new checkpoint path"
            )
        n = stop - start
        if (meta.get("start"), meta.get("stop")) != (start, stop) or any(
            a.shape[:1] != (n,) for a in arrays.values()
        ):
            raise ValueError(
                f"checkpoint block {path} is corrupted: it does not hold rows {start}:{stop}; "
                "delete that file and run again to recompute the block"
            )
        return arrays, files.get("state.eqx")

    def write(self, b, start, stop, arrays, state_bytes):
        files = {}
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(a), allow_pickle=False)
            files[f"arrays/{name}.npy"] = buf.getvalue()
        if state_bytes is not None:
            files["state.eqx"] = state_bytes
        meta = {
            "format": BLOCK_FORMAT,
            "index": b,
            "start": start,
            "stop": stop,
            "run_sha256": self.digest,
        }
        files["block.json"] = json.dumps(meta).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, v in files.items():
                zf.writestr(name, v)
        _atomic_write(self.block_path(b), buf.getvalue())


def _atomic_write(path: Path, data: bytes):
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)  # a crash mid-write never leaves a half file under the name


def _short(v):
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:16] + "..."
