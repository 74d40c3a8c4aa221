"""Saving and loading trained models, and the models shipped with vaequery.

On-disk format (``FORMAT_VERSION = 1``): a folder holding

``model.json``
    ``{"format": "vaequery.vae", "format_version": 1, "vaequery_version": ...,
    "latent_dim": d, "schema": Schema.to_dict() (names, kinds, loc/scale),
    "likelihood": {"name": "gaussian", "scale": ..., "min_scale": ...},
    "architecture": {"decoder": {"class": "MLPDecoder", "latent_dim", "num_features",
    "hidden", "min_scale"}, "encoder": {"class": "MLPEncoder", ...} or null},
    "dtype": "float32", "metadata": {...training recipe, ELBOs...}}``
``weights.eqx``
    The array leaves of ``(encoder, decoder)`` written with
    :func:`equinox.tree_serialise_leaves`; the architecture above rebuilds the
    skeleton they are read into.
``guides/<name>/guide.json`` and ``guides/<name>/weights.eqx`` (optional)
    Each trained guide of ``VAE.guides`` (:mod:`vaequery.guides`):
    ``{"format": "vaequery.guide", "format_version": 1, "kind", "features",
    "latent_dim", "architecture", "info"}`` and its network's array leaves.
    ``model.json`` lists them under ``"guides"``. A guide is refused on load
    unless its feature names and latent size are the model's. A guide can also
    be written and read alone (:func:`save_guide`, :func:`load_guide`).

Only models whose decoder is a :class:`vaequery.decoder.MLPDecoder` with a
Gaussian likelihood, or a :class:`~vaequery.decoder.MixedMLPDecoder` with the
mixed likelihood (``"architecture": {"decoder": {"class": "MixedMLPDecoder",
...}}``, ``"likelihood": {"name": "mixed", ...}``; its layout is rebuilt from the
schema's kinds and levels), and an encoder, if any, a
:class:`~vaequery.decoder.MLPEncoder`, can be saved this way; for other
decoders save your own weights and rebuild with :func:`vaequery.from_decoder`.
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
from vaequery.decoder import MixedMLPDecoder, MLPDecoder, MLPEncoder, skeleton
from vaequery.likelihoods import Gaussian, Mixed
from vaequery.posterior import posterior_from_arrays
from vaequery.schema import Schema

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
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


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
            "num_features": int(enc.net.in_size),
            "latent_dim": int(enc.latent_dim),
            "hidden": _hidden(enc.net),
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
    path.mkdir(parents=True, exist_ok=True)
    guides_dir = path / GUIDES_DIR
    if guides_dir.is_dir():  # guides of an earlier save must not outlive it
        import shutil

        shutil.rmtree(guides_dir)
    # model.json last: a folder interrupted mid-save has no (stale) model.json
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

    Returns
    -------
    dict of str to bytes
        ``model.json``, ``weights.eqx`` and ``guides/<name>/...`` per guide.

    Raises
    ------
    TypeError
        The model is not one this format stores (see the module docstring).
    """
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
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, data in _guide_files(guide).items():
        (path / name).write_bytes(data)
    return path


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


def load_guide(path, model=None):
    """Read a guide written by :func:`save_guide`.

    Parameters
    ----------
    path : str or Path
        The guide's folder.
    model : vaequery.VAE, optional
        If given, the guide must have been trained for its features and latent
        size (else ``ValueError``).

    Returns
    -------
    vaequery.guides.Guide
    """
    path = Path(path)
    meta = path / GUIDE_FILE
    if not meta.exists():
        raise FileNotFoundError(f"no vaequery guide at {path}: expected the file {meta}")
    return _guide_from_files(_folder_reader(path), path, model)


def _guide_from_files(read, where, model=None, name=None):
    from vaequery.guides.guide import Guide, build_network

    info = _read_json(read, GUIDE_FILE, where)
    if info.get("format") != GUIDE_FORMAT:
        raise ValueError(f"{where} is not a vaequery guide (format {info.get('format')!r})")
    if info.get("format_version") != GUIDE_FORMAT_VERSION:
        raise ValueError(
            f"{where} holds a guide in format version {info.get('format_version')} (vaequery "
            f"{info.get('vaequery_version')}); this vaequery {_version()} reads guide format "
            f"version {GUIDE_FORMAT_VERSION} only. Retrain the guide."
        )
    network = _read_weights(read(WEIGHTS_FILE), build_network(info["architecture"]), where)
    guide = Guide(
        info["kind"],
        network,
        list(info["features"]),
        int(info["latent_dim"]),
        info["architecture"],
        info.get("info", {}),
    )
    if model is not None:
        guide.check_compatible(model, name or Path(str(where)).name)
    return guide


def _json_default(o):
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    raise TypeError(f"metadata value of type {type(o).__name__} is not JSON-serialisable")


def load(path):
    """Read a model written by :meth:`vaequery.VAE.save`.

    Parameters
    ----------
    path : str or Path
        The folder (or its ``model.json``).

    Returns
    -------
    vaequery.VAE or vaequery.models.VAEACModel
        The latter for a model trained with ``method="vaeac"``.

    Raises
    ------
    FileNotFoundError
        No ``model.json`` there.
    ValueError
        The folder was written in another format version.
    """
    path = Path(path)
    if path.name == MODEL_FILE:
        path = path.parent
    meta_file = path / MODEL_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"no vaequery model at {path}: expected the file {meta_file}")
    return model_from_files(_folder_reader(path), where=path)


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

    Only JSON and raw array bytes are read: no code from the files runs.

    Parameters
    ----------
    files : dict of str to bytes, or callable
        ``{relative path: bytes}``, or ``read(relative path) -> bytes``.
    where : str or Path
        Named in error messages.

    Returns
    -------
    vaequery.VAE

    Raises
    ------
    ValueError
        Another format, a newer format version, or corrupted/truncated files.
    """
    from vaequery.vae import VAE

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
    if loader is not None:  # another model family (e.g. a VAEAC): its own layout
        return loader(read, info, where)
    if info.get("format") != FORMAT:
        raise ValueError(
            f"{where}: {MODEL_FILE} is not a vaequery model file (format {info.get('format')!r})"
        )
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where} was written in vaequery model format version {version} (by vaequery "
            f"{info.get('vaequery_version')}); this vaequery {_version()} reads format version "
            f"{FORMAT_VERSION} only. Load it with a matching vaequery and re-save, or retrain."
        )
    arch = info["architecture"]
    # skeletons only (no random initialisers run): every array is read from weights.eqx
    d = arch["decoder"]
    schema = Schema.from_dict(info["schema"])
    if d.get("class", "MLPDecoder") == "MixedMLPDecoder":
        dec = skeleton(
            MixedMLPDecoder,
            d["latent_dim"],
            schema.kinds,
            [f.num_levels for f in schema],
            tuple(d["hidden"]),
            min_scale=d["min_scale"],
        )
    else:
        dec = skeleton(
            MLPDecoder,
            d["latent_dim"],
            d["num_features"],
            tuple(d["hidden"]),
            min_scale=d["min_scale"],
        )
    e = arch["encoder"]
    enc = (
        None
        if e is None
        else skeleton(MLPEncoder, e["num_features"], e["latent_dim"], tuple(e["hidden"]))
    )
    enc, dec = _read_weights(read(WEIGHTS_FILE), (enc, dec), where)
    lik_info = info["likelihood"]
    scale = lik_info["scale"]
    scale = scale if isinstance(scale, float) else np.asarray(scale)
    if lik_info.get("name", "gaussian") == "mixed":
        likelihood = Mixed(schema, scale, lik_info["min_scale"])
    else:
        likelihood = Gaussian(scale, lik_info["min_scale"])
    vae = VAE(dec, info["latent_dim"], schema, likelihood, encode_fn=enc, metadata=info["metadata"])
    for name in info.get("guides", []):
        _check_guide_name(name)
        sub = f"{GUIDES_DIR}/{name}/"
        vae.guides[name] = _guide_from_files(
            lambda n, sub=sub: read(sub + n), f"{where}/{sub[:-1]}", model=vae, name=name
        )
    return vae


def available_pretrained() -> list[str]:
    """Names of the models shipped in ``vaequery/pretrained/``."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / MODEL_FILE).exists())


def pretrained(name: str):
    """Load a model shipped with vaequery (trained by ``benchmarks/train_pretrained.py``).

    Parameters
    ----------
    name : str
        A bundled dataset name: see :func:`available_pretrained`.

    Returns
    -------
    vaequery.VAE
        With encoder, schema (raw-unit scaling) and ``metadata`` (recipe, test ELBO).

    Examples
    --------
    >>> import vaequery as vq
    >>> vae = vq.pretrained("white_wine")
    >>> vae.metadata["recipe"]["dataset"]
    'white_wine'
    """
    names = available_pretrained()
    if name not in names:
        raise ValueError(f"no pretrained model {name!r}; available: {names}")
    return load(PRETRAINED_DIR / name)


# ------------------------------------------------------------------ posteriors
POSTERIOR_FORMAT = "vaequery.posterior"
POSTERIOR_FORMAT_VERSION = 1
POSTERIOR_FILE = "posterior.json"
STATE_FILE = "state.eqx"
MODEL_DIR = "model/"
_POSTERIOR_ARRAYS = ("z", "x_model", "loss", "failed", "x", "observed", "target", "key")


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


def load_posterior(path, model=None):
    """Read a posterior written by :func:`save_posterior` (or :meth:`Posterior.save`).

    Parameters
    ----------
    path : str, Path or bytes
        The file, or its content.
    model : vaequery.VAE, optional
        The model the posterior belongs to. Required when the file holds none
        (a :func:`vaequery.from_decoder` model); checked against the file's
        feature names and latent size otherwise.

    Returns
    -------
    vaequery.Posterior
        Equal to the one saved: same draws, imputations, losses, flags, state
        and key (so :meth:`~vaequery.Posterior.log_likelihood` and friends give
        the same numbers).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a posterior file, a newer format version, a truncated or corrupted
        file, or a model that does not match.
    """
    import zipfile

    where = "posterior bytes" if isinstance(path, bytes) else str(path)
    if not isinstance(path, bytes) and not Path(path).exists():
        raise FileNotFoundError(f"no vaequery posterior at {path}")
    src = io.BytesIO(path) if isinstance(path, bytes) else path
    try:
        with zipfile.ZipFile(src) as zf:
            files = {n: zf.read(n) for n in zf.namelist()}  # reading checks every CRC
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(
            f"{where} is not a readable vaequery posterior file: it is truncated or corrupted "
            f"({type(e).__name__}: {e}); save the posterior again"
        ) from None
    return posterior_from_files(files, model=model, where=where)


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
    from vaequery.backends import _base
    from vaequery.fit import _run_batch
    from vaequery.query import Query

    def read(name):
        if name not in files:
            raise ValueError(f"{where} is incomplete or corrupted: {name} is missing")
        return files[name]

    info = _read_json(read, POSTERIOR_FILE, where)
    if info.get("format") != POSTERIOR_FORMAT:
        raise ValueError(f"{where} is not a vaequery posterior (format {info.get('format')!r})")
    version = info.get("format_version")
    if version != POSTERIOR_FORMAT_VERSION:
        raise ValueError(
            f"{where} was written in vaequery posterior format version {version} (by vaequery "
            f"{info.get('vaequery_version')}); this vaequery {_version()} reads version "
            f"{POSTERIOR_FORMAT_VERSION} only. Read it with that vaequery, or infer again."
        )
    if model is None:
        if not info.get("model_included"):
            raise ValueError(
                f"{where} was saved without its model (vaequery's format cannot store a "
                "vaequery.from_decoder model): pass it, load_posterior(path, model=vae)"
            )
        sub = {k[len(MODEL_DIR) :]: v for k, v in files.items() if k.startswith(MODEL_DIR)}
        model = model_from_files(sub, where=f"{where}/model")
    if list(model.feature_names) != info["features"] or model.latent_dim != info["latent_dim"]:
        raise ValueError(
            f"{where} answers queries on a model with features {info['features']} and "
            f"latent_dim {info['latent_dim']}; the model given has {model.feature_names} and "
            f"{model.latent_dim}"
        )
    arrays = {}
    intervals = ["lo", "hi", "interval"] if info.get("intervals") else []
    for name in list(_POSTERIOR_ARRAYS) + intervals + [f"info/{k}" for k in info["info"]]:
        try:
            arrays[name] = np.load(io.BytesIO(read(f"arrays/{name}.npy")), allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{where}: arrays/{name}.npy is corrupted or unsafe ({e})") from None
    N = arrays["z"].shape[0]
    query = Query(
        model,
        arrays["x"],
        arrays["observed"],
        arrays["target"],
        info["single"],
        **{k: arrays[k] for k in intervals},
    )
    if not (query.x.shape == (N, len(model.schema)) == arrays["target"].shape):
        raise ValueError(f"{where} is corrupted: its arrays do not have matching shapes")
    rec = info["backend"]
    backend = _base.get(rec["name"], **rec["hyperparameters"]).bind(model)
    key = jax.random.wrap_key_data(jax.numpy.asarray(arrays["key"], jax.numpy.uint32))
    # the state's structure is the backend's: trace (not run) one batch to get it
    target = query.target()
    if getattr(backend, "init", None) == "given" or getattr(backend, "init", None) in (
        _base.GUIDE_INITS
    ):
        d = model.latent_dim
        start = {
            "loc": np.zeros((N, d), np.float32),
            "tril": np.tile(np.eye(d, dtype=np.float32), (N, 1, 1)),
        }
        target = target._replace(
            data={**target.data, "start": jax.tree.map(jax.numpy.asarray, start)}
        )
    keys = jax.random.split(key, N)
    fit_shape, _ = eqx.filter_eval_shape(
        _run_batch, backend, target, model.likelihood, keys, info["num_draws"], None
    )
    state = _read_weights(read(STATE_FILE), fit_shape.state, where, STATE_FILE)
    return posterior_from_arrays(query, backend, state, arrays, key)
