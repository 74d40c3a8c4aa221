"""vaequery's file format, the writing half: models, guides and posteriors as JSON and bytes.

:mod:`vaequery.io` documents the format and holds the readers (``load``,
``load_posterior``, ``pretrained``); this module holds what writes it and the
registries through which the readers are found, so that :class:`vaequery.VAE`
and :class:`vaequery.Posterior` can save and pickle themselves without
importing :mod:`vaequery.io`, which imports them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from vaequery._leaves import read_leaves
from vaequery._version import __version__
from vaequery.backends._base import backend_record
from vaequery.decoder import MixedMLPDecoder, MLPDecoder, MLPEncoder
from vaequery.likelihoods import Gaussian, Mixed

FORMAT = "vaequery.vae"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.eqx"
GUIDE_FORMAT = "vaequery.guide"
GUIDE_FORMAT_VERSION = 1
GUIDE_FILE = "guide.json"
GUIDES_DIR = "guides"
#: ``model.json`` formats other model families read themselves: ``{format: loader}``,
#: filled by :func:`register_format` (vaequery.models.vaeac registers "vaequery.vaeac")
_FORMAT_LOADERS: dict = {}


class _UnsavableModel(TypeError):
    """The model is not one this format stores (a user decoder function, another likelihood)."""


def pickle_refusal(error, what="VAE"):
    """The ``TypeError`` raised when a ``what`` cannot be pickled because of ``error``."""
    return TypeError(
        f"cannot pickle this {what}: {error} vaequery pickles models and results through "
        "its own file format (vaequery.io: JSON and array bytes, never code), which stores "
        "vaequery's MLP networks with a Gaussian likelihood only; a model wrapping your own "
        "decoder function cannot travel by pickle. Rebuild it where it is needed: e.g. give "
        "multiprocessing a module-level function that calls vaequery.from_decoder (a Pool "
        "initializer), and send it the query arrays; or save a result with "
        "Posterior.save(path) and load it with vaequery.load_posterior(path, model=vae)."
    )


def _version() -> str:
    return __version__


def _hidden(net: eqx.nn.MLP) -> list[int]:
    return [int(net.width_size)] * int(net.depth)


def _describe(vae) -> dict:
    dec, enc = vae.decode_fn, vae.encode_fn
    mixed = isinstance(dec, MixedMLPDecoder)
    if not isinstance(dec, (MLPDecoder, MixedMLPDecoder)):
        raise _UnsavableModel(
            "VAE.save writes vaequery's own MLPDecoder / MixedMLPDecoder models; this decoder "
            f"is a {type(dec).__name__}. Save its weights yourself and rebuild the model "
            "with vaequery.from_decoder."
        )
    if enc is not None and not isinstance(enc, MLPEncoder):
        raise _UnsavableModel(
            f"VAE.save needs an MLPEncoder (or no encoder), got {type(enc).__name__}"
        )
    if not isinstance(vae.likelihood, Mixed if mixed else Gaussian):
        raise _UnsavableModel(
            "VAE.save supports an MLPDecoder with the Gaussian likelihood and a "
            "MixedMLPDecoder with the mixed one, got a "
            f"{type(dec).__name__} with {type(vae.likelihood).__name__}"
        )
    dec_arch = {
        "class": type(dec).__name__,
        "latent_dim": int(dec.net.in_size),
        "num_features": int(dec.num_features),
        "hidden": _hidden(dec.net),
        "min_scale": float(dec.min_scale),
    }
    arch = {
        "decoder": dec_arch,
        "encoder": None
        if enc is None
        else {
            "class": "MLPEncoder",
            "num_features": int(enc.net.in_size) // (2 if enc.mask_input else 1),
            "latent_dim": int(enc.latent_dim),
            "hidden": _hidden(enc.net),
            # absent in older files: the encoder reads the zero-filled values only
            **({"inputs": "values_and_mask"} if enc.mask_input else {}),
        },
    }
    lik = vae.likelihood
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vaequery_version": _version(),
        "latent_dim": vae.latent_dim,
        "schema": vae.schema.to_dict(),
        "likelihood": _likelihood_record(lik),
        "architecture": arch,
        "dtype": str(dec.net.layers[0].weight.dtype),
        "metadata": vae.metadata,
        "guides": sorted(vae.guides),
    }


def _likelihood_record(lik) -> dict:
    # a mixed likelihood is rebuilt from the schema; its real head holds the scales
    head = lik.heads.get("real", Gaussian()) if isinstance(lik, Mixed) else lik
    return {
        "name": "mixed" if isinstance(lik, Mixed) else "gaussian",
        "scale": np.asarray(head.scale, float).tolist(),
        "min_scale": float(head.min_scale),
    }


def save(vae, path) -> Path:
    """Write a model to the folder ``path`` (created if needed).

    Parameters
    ----------
    vae : vaequery.VAE
        A model trained by :func:`vaequery.train` (MLP encoder/decoder, Gaussian).
    path : str or Path
        Folder; ``model.json`` and ``weights.eqx`` inside it are overwritten.

    Returns
    -------
    Path
        The folder.
    """
    files = model_files(vae)
    path = Path(path)
    guides_dir = path / GUIDES_DIR
    if guides_dir.is_dir():  # guides of an earlier save must not outlive it
        import shutil

        shutil.rmtree(guides_dir)
    return write_folder(path, files)


def write_folder(path, files: dict) -> Path:
    """Write ``{relative path: bytes}`` into the folder ``path`` (created if needed).

    ``model.json`` is written last, so a folder interrupted mid-save has no
    (stale) ``model.json``. Used by every model family's and guide's ``save``.

    Parameters
    ----------
    path : str or Path
    files : dict of str to bytes

    Returns
    -------
    Path
        The folder.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == MODEL_FILE):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(files[name])
    return path


def model_files(vae) -> dict:
    """The files :func:`save` writes, as ``{relative path: bytes}`` (nothing touches disk).

    Pickling a :class:`vaequery.VAE` carries these bytes, and
    :func:`save_posterior` stores them inside a posterior file.

    Parameters
    ----------
    vae : vaequery.VAE
        Or a model family with a ``_format_files()`` method returning its own
        files (:class:`vaequery.models.VAEACModel`, ``HVAEModel``).

    Returns
    -------
    dict of str to bytes
        ``model.json``, ``weights.eqx`` and ``guides/<name>/...`` per guide.

    Raises
    ------
    TypeError
        The model is not one this format stores (see the module docstring).
    """
    own = getattr(vae, "_format_files", None)
    if own is not None:  # a model family with its own format (VAEAC, HVAE)
        return own()
    info = _describe(vae)
    files = {WEIGHTS_FILE: _leaves_bytes((vae.encode_fn, vae.decode_fn))}
    for name, guide in vae.guides.items():
        _check_guide_name(name)
        for k, v in _guide_files(guide).items():
            files[f"{GUIDES_DIR}/{name}/{k}"] = v
    files[MODEL_FILE] = _json_bytes(info)
    return files


def _leaves_bytes(tree) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    return buf.getvalue()


def _json_bytes(info) -> bytes:
    return (json.dumps(info, indent=2, default=_json_default) + "\n").encode()


def _read_json(read, name, where) -> dict:
    try:
        info = json.loads(read(name))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: {name} is corrupted (not valid JSON: {e})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{where}: {name} is corrupted (not a JSON object)")
    return info


def _read_weights(data: bytes, like, where, name=WEIGHTS_FILE):
    try:
        return read_leaves(io.BytesIO(data), like)
    except Exception as e:  # truncated or altered bytes fail in many ways inside numpy
        raise ValueError(
            f"{where}: {name} is truncated or corrupted and cannot be read "
            f"({type(e).__name__}: {e}); save the model again"
        ) from None


def _folder_reader(path: Path):
    def read(name):
        f = path / name
        if not f.exists():
            raise FileNotFoundError(f"{path} is incomplete: the file {f} is missing")
        return f.read_bytes()

    return read


def _check_guide_name(name):
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(
            f"guide names must be letters, digits and '_' (a folder name), got {name!r}"
        )


def save_guide(guide, path) -> Path:
    """Write one trained guide to the folder ``path`` (``guide.json`` + ``weights.eqx``).

    Parameters
    ----------
    guide : vaequery.guides.Guide
    path : str or Path

    Returns
    -------
    Path
    """
    return write_folder(path, _guide_files(guide))


def _guide_files(guide) -> dict:
    info = {
        "format": GUIDE_FORMAT,
        "format_version": GUIDE_FORMAT_VERSION,
        "vaequery_version": _version(),
        "kind": guide.kind,
        "features": list(guide.features),
        "latent_dim": int(guide.latent_dim),
        "architecture": guide.architecture,
        "info": guide.info,
    }
    return {WEIGHTS_FILE: _leaves_bytes(guide.network), GUIDE_FILE: _json_bytes(info)}


def _json_default(o):
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    raise TypeError(f"metadata value of type {type(o).__name__} is not JSON-serialisable")


def check_format_version(info: dict, expected: int, what: str, where, remedy: str) -> None:
    """Refuse a file written in another version of one of vaequery's formats.

    Parameters
    ----------
    info : dict
        The file's parsed JSON record (``"format_version"``, ``"vaequery_version"``).
    expected : int
        The version this vaequery reads.
    what : str
        What the file holds (``"model"``, ``"guide"``, ``"posterior"``, ``"HVAE"``, ...).
    where : str or Path
        Named in the error message.
    remedy : str
        What the user can do, appended to the message.

    Raises
    ------
    ValueError
        The versions differ.
    """
    version = info.get("format_version")
    if version != expected:
        raise ValueError(
            f"{where} was written in vaequery {what} format version {version} (by vaequery "
            f"{info.get('vaequery_version')}); this vaequery {_version()} reads version "
            f"{expected} only. {remedy}"
        )


def register_format(fmt: str, loader) -> None:
    """Let a model family load its own ``model.json`` format.

    Parameters
    ----------
    fmt : str
        The ``"format"`` entry of its ``model.json``.
    loader : callable
        ``loader(read, info, where) -> model``: ``read(name) -> bytes`` reads a
        file of the folder, ``info`` is the parsed ``model.json``, ``where``
        names the folder in error messages. Like :func:`model_from_files`, it
        must not run code from the files.
    """
    _FORMAT_LOADERS[fmt] = loader


def model_from_files(files, where="model"):
    """Rebuild a model from the files :func:`model_files` gives (or a reader of them).

    Only JSON and raw array bytes are read: no code from the files runs. The
    ``"format"`` entry of ``model.json`` picks the loader registered for it
    (:func:`register_format`; :mod:`vaequery.io` registers vaequery's VAE,
    the model families their own).

    Parameters
    ----------
    files : dict of str to bytes, or callable
        ``{relative path: bytes}``, or ``read(relative path) -> bytes``.
    where : str or Path
        Named in error messages.

    Returns
    -------
    vaequery.VAE or another registered model family

    Raises
    ------
    ValueError
        Another format, a newer format version, or corrupted/truncated files.
    """
    if isinstance(files, dict):
        table = files

        def read(name):
            if name not in table:
                raise ValueError(f"{where} is incomplete: {name} is missing")
            return table[name]

    else:
        read = files
    info = _read_json(read, MODEL_FILE, where)
    loader = _FORMAT_LOADERS.get(info.get("format"))
    if loader is None:
        raise ValueError(
            f"{where}: {MODEL_FILE} is not a vaequery model file (format {info.get('format')!r}; "
            f"known: {sorted(_FORMAT_LOADERS)})"
        )
    return loader(read, info, where)


# ------------------------------------------------------------------ posteriors
POSTERIOR_FORMAT = "vaequery.posterior"
POSTERIOR_FORMAT_VERSION = 1
POSTERIOR_FILE = "posterior.json"
STATE_FILE = "state.eqx"
MODEL_DIR = "model/"
_POSTERIOR_ARRAYS = ("z", "x_model", "loss", "failed", "x", "observed", "target", "key")
#: Set by :mod:`vaequery.io` (:func:`register_posterior_reader`).
_POSTERIOR_READER = None


def posterior_files(post, include_model=True) -> dict:
    """A :class:`vaequery.Posterior` as ``{name: bytes}`` (see :func:`save_posterior`).

    Parameters
    ----------
    post : vaequery.Posterior
    include_model : bool
        Add the model's files under ``model/`` (required for pickling).

    Returns
    -------
    dict of str to bytes

    Raises
    ------
    TypeError
        ``include_model`` and a model this format cannot store, or a backend
        with a non-numeric hyper-parameter (an optax schedule), or a query
        with soft constraints or a model with a custom latent prior (functions,
        which this format never stores).
    """
    q = post.query
    if getattr(q, "factors", ()):
        raise TypeError(
            f"cannot save this Posterior: its query has soft constraints "
            f"({', '.join(f.describe() for f in q.factors)}), which are code, and vaequery's "
            "format stores no code; a reloaded result would drop them from its "
            "log-likelihoods. Keep the arrays (post.z, post.x, post.derived) instead"
        )
    if getattr(q.model, "prior", None) is not None:
        raise TypeError(
            "cannot save this Posterior: its model has a custom latent prior (a NumPyro "
            "function), which is code, and vaequery's format stores no code; a reloaded "
            "result would assume N(0, I). Keep the arrays (post.z, post.x) instead"
        )
    arrays = {
        "z": np.asarray(post.z),
        "x_model": np.asarray(post._x_model),
        "loss": np.asarray(post.loss),
        "failed": np.asarray(post.failed, bool),
        "x": np.asarray(q.x),
        "observed": np.asarray(q.observed_mask),
        "target": np.asarray(q.target_mask),
        "key": np.asarray(jax.random.key_data(post._key)),
    }
    if q.has_intervals:  # interval evidence: written only when there is some
        arrays.update(lo=np.asarray(q.lo), hi=np.asarray(q.hi), interval=q.interval_mask)
    info_arrays = {f"info/{k}": np.asarray(v) for k, v in post.info.items()}
    files = {}
    for name, a in {**arrays, **info_arrays}.items():
        if a.dtype == object:
            raise TypeError(f"posterior array {name!r} holds Python objects; it cannot be stored")
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        files[f"arrays/{name}.npy"] = buf.getvalue()
    files[STATE_FILE] = _leaves_bytes(post.state)
    model = q.model
    model_included = False
    if include_model:
        for k, v in model_files(model).items():
            files[MODEL_DIR + k] = v
        model_included = True
    info = {
        "format": POSTERIOR_FORMAT,
        "format_version": POSTERIOR_FORMAT_VERSION,
        "vaequery_version": _version(),
        "backend": backend_record(post.backend),
        "num_draws": int(post.z.shape[-2]),
        "single": bool(q.single),
        "features": list(model.feature_names),
        "latent_dim": int(model.latent_dim),
        "info": sorted(post.info),
        "model_included": model_included,
        "intervals": bool(q.has_intervals),
    }
    files[POSTERIOR_FILE] = _json_bytes(info)
    return files


def save_posterior(post, path, include_model=None) -> Path:
    """Write a :class:`vaequery.Posterior` to one file (a zip archive).

    The archive holds ``posterior.json`` (format, version, backend name and
    hyper-parameters, feature names), ``arrays/<name>.npy`` (draws,
    imputations, losses, ``failed``, the query's evidence and masks, the key,
    ``info/...``; written with ``allow_pickle=False``), ``state.eqx`` (the
    fitted per-row backend state, :func:`equinox.tree_serialise_leaves`) and,
    when the model can be saved (:func:`save`), the model under ``model/``.
    Read it back with :func:`load_posterior`: no code is ever loaded.

    Parameters
    ----------
    post : vaequery.Posterior
    path : str or Path
        The file (overwritten).
    include_model : bool, optional
        Default: include the model when it can be saved. ``True`` makes a
        model that cannot be saved an error.

    Returns
    -------
    Path
    """
    import zipfile

    if include_model is None:
        try:
            files = posterior_files(post, include_model=True)
        except _UnsavableModel:
            files = posterior_files(post, include_model=False)
    else:
        files = posterior_files(post, include_model=include_model)
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files, key=lambda n: n == POSTERIOR_FILE):
            zf.writestr(name, files[name])
    tmp.replace(path)  # a crash mid-write never leaves a half file under the name
    return path


def posterior_from_files(files: dict, model=None, where="posterior"):
    """Rebuild a :class:`vaequery.Posterior` from :func:`posterior_files` output.

    Parameters
    ----------
    files : dict of str to bytes
    model : vaequery.VAE, optional
        See :func:`load_posterior`.
    where : str
        Named in error messages.

    Returns
    -------
    vaequery.Posterior
    """
    if _POSTERIOR_READER is None:
        raise RuntimeError("vaequery.io is not imported: it reads posteriors")
    return _POSTERIOR_READER(files, model=model, where=where)


def register_posterior_reader(reader) -> None:
    """Set the function that rebuilds a :class:`vaequery.Posterior` from its files.

    :mod:`vaequery.io` sets it: rebuilding needs the query, fit and backend
    machinery, which sit above this module.

    Parameters
    ----------
    reader : callable
        ``reader(files, model=None, where="posterior") -> Posterior``.
    """
    global _POSTERIOR_READER
    _POSTERIOR_READER = reader
