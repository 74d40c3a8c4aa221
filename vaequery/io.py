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

Only models whose decoder is a :class:`vaequery.decoder.MLPDecoder` (and encoder,
if any, a :class:`~vaequery.decoder.MLPEncoder`) with a Gaussian likelihood can be
saved this way; for other decoders save your own weights and rebuild with
:func:`vaequery.from_decoder`.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from vaequery.decoder import MLPDecoder, MLPEncoder, skeleton
from vaequery.likelihoods import Gaussian
from vaequery.schema import Schema

FORMAT = "vaequery.vae"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.eqx"
GUIDE_FORMAT = "vaequery.guide"
GUIDE_FORMAT_VERSION = 1
GUIDE_FILE = "guide.json"
GUIDES_DIR = "guides"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def _deserialise_leaf(f, x):
    # jax.numpy.load would convert each array with a compiled op (one compile per
    # shape, ~0.25 s per model); a plain transfer gives the same jax.Array.
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        return jax.device_put(np.load(f))
    return eqx.default_deserialise_filter_spec(f, x)


def read_leaves(path_or_file, like):
    """Read array leaves written by :func:`equinox.tree_serialise_leaves` into ``like``.

    Parameters
    ----------
    path_or_file : str, Path or binary file
    like : pytree
        The skeleton: a module whose array leaves may be
        :class:`jax.ShapeDtypeStruct` (see :func:`vaequery.decoder.skeleton`).

    Returns
    -------
    pytree
        ``like`` with every array leaf read from ``path_or_file`` as a
        :class:`jax.Array`; shapes and dtypes are checked against ``like``.
    """
    return eqx.tree_deserialise_leaves(path_or_file, like, filter_spec=_deserialise_leaf)


def _version() -> str:
    import vaequery

    return getattr(vaequery, "__version__", "unknown")


def _hidden(net: eqx.nn.MLP) -> list[int]:
    return [int(net.width_size)] * int(net.depth)


def _describe(vae) -> dict:
    dec, enc = vae.decode_fn, vae.encode_fn
    if not isinstance(dec, MLPDecoder):
        raise TypeError(
            "VAE.save writes vaequery's own MLPDecoder models; this decoder is a "
            f"{type(dec).__name__}. Save its weights yourself and rebuild the model "
            "with vaequery.from_decoder."
        )
    if enc is not None and not isinstance(enc, MLPEncoder):
        raise TypeError(f"VAE.save needs an MLPEncoder (or no encoder), got {type(enc).__name__}")
    if not isinstance(vae.likelihood, Gaussian):
        raise TypeError(
            f"VAE.save supports the Gaussian likelihood, got {type(vae.likelihood).__name__}"
        )
    arch = {
        "decoder": {
            "class": "MLPDecoder",
            "latent_dim": int(dec.net.in_size),
            "num_features": int(dec.num_features),
            "hidden": _hidden(dec.net),
            "min_scale": float(dec.min_scale),
        },
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
        "likelihood": {
            "name": "gaussian",
            "scale": np.asarray(lik.scale, float).tolist(),
            "min_scale": float(lik.min_scale),
        },
        "architecture": arch,
        "dtype": str(dec.net.layers[0].weight.dtype),
        "metadata": vae.metadata,
        "guides": sorted(vae.guides),
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
    info = _describe(vae)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(path / WEIGHTS_FILE, (vae.encode_fn, vae.decode_fn))
    guides_dir = path / GUIDES_DIR
    if guides_dir.is_dir():  # guides of an earlier save must not outlive it
        import shutil

        shutil.rmtree(guides_dir)
    for name, guide in vae.guides.items():
        _check_guide_name(name)
        save_guide(guide, guides_dir / name)
    (path / MODEL_FILE).write_text(json.dumps(info, indent=2, default=_json_default) + "\n")
    return path


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
    eqx.tree_serialise_leaves(path / WEIGHTS_FILE, guide.network)
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
    (path / GUIDE_FILE).write_text(json.dumps(info, indent=2, default=_json_default) + "\n")
    return path


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
    from vaequery.guides.guide import Guide, build_network

    path = Path(path)
    meta = path / GUIDE_FILE
    if not meta.exists():
        raise FileNotFoundError(f"no vaequery guide at {path}: expected the file {meta}")
    info = json.loads(meta.read_text())
    if info.get("format") != GUIDE_FORMAT:
        raise ValueError(f"{meta} is not a vaequery guide file (format {info.get('format')!r})")
    if info.get("format_version") != GUIDE_FORMAT_VERSION:
        raise ValueError(
            f"{path} holds a guide in format version {info.get('format_version')} (vaequery "
            f"{info.get('vaequery_version')}); this vaequery {_version()} reads guide format "
            f"version {GUIDE_FORMAT_VERSION} only. Retrain the guide."
        )
    network = read_leaves(path / WEIGHTS_FILE, build_network(info["architecture"]))
    guide = Guide(
        info["kind"],
        network,
        list(info["features"]),
        int(info["latent_dim"]),
        info["architecture"],
        info.get("info", {}),
    )
    if model is not None:
        guide.check_compatible(model, path.name)
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
    vaequery.VAE

    Raises
    ------
    FileNotFoundError
        No ``model.json`` there.
    ValueError
        The folder was written in another format version.
    """
    from vaequery.vae import VAE

    path = Path(path)
    if path.name == MODEL_FILE:
        path = path.parent
    meta_file = path / MODEL_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"no vaequery model at {path}: expected the file {meta_file}")
    info = json.loads(meta_file.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(
            f"{meta_file} is not a vaequery model file (format {info.get('format')!r})"
        )
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in vaequery model format version {version} (by vaequery "
            f"{info.get('vaequery_version')}); this vaequery {_version()} reads format version "
            f"{FORMAT_VERSION} only. Load it with a matching vaequery and re-save, or retrain."
        )
    arch = info["architecture"]
    # skeletons only (no random initialisers run): every array is read from weights.eqx
    d = arch["decoder"]
    dec = skeleton(
        MLPDecoder, d["latent_dim"], d["num_features"], tuple(d["hidden"]), min_scale=d["min_scale"]
    )
    e = arch["encoder"]
    enc = (
        None
        if e is None
        else skeleton(MLPEncoder, e["num_features"], e["latent_dim"], tuple(e["hidden"]))
    )
    enc, dec = read_leaves(path / WEIGHTS_FILE, (enc, dec))
    schema = Schema.from_dict(info["schema"])
    lik_info = info["likelihood"]
    scale = lik_info["scale"]
    likelihood = Gaussian(
        scale if isinstance(scale, float) else np.asarray(scale), lik_info["min_scale"]
    )
    vae = VAE(dec, info["latent_dim"], schema, likelihood, encode_fn=enc, metadata=info["metadata"])
    for name in info.get("guides", []):
        vae.guides[name] = load_guide(path / GUIDES_DIR / name, model=vae)
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
