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
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from vaequery import _format
from vaequery._format import (  # noqa: F401  (the format's names, read here too)
    _FORMAT_LOADERS,
    _POSTERIOR_ARRAYS,
    FORMAT,
    FORMAT_VERSION,
    GUIDE_FILE,
    GUIDE_FORMAT,
    GUIDE_FORMAT_VERSION,
    GUIDES_DIR,
    MODEL_DIR,
    MODEL_FILE,
    POSTERIOR_FILE,
    POSTERIOR_FORMAT,
    POSTERIOR_FORMAT_VERSION,
    STATE_FILE,
    WEIGHTS_FILE,
    _check_guide_name,
    _folder_reader,
    _guide_files,
    _json_bytes,
    _leaves_bytes,
    _read_json,
    _read_weights,
    _UnsavableModel,
    _version,
    check_format_version,
    model_files,
    model_from_files,
    pickle_refusal,
    posterior_files,
    posterior_from_files,
    register_format,
    save,
    save_guide,
    save_posterior,
)
from vaequery.decoder import MixedMLPDecoder, MLPDecoder, MLPEncoder, skeleton
from vaequery.likelihoods import Gaussian, Mixed
from vaequery.posterior import posterior_from_arrays
from vaequery.schema import Schema
from vaequery.vae import VAE

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


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
    check_format_version(info, GUIDE_FORMAT_VERSION, "guide", where, "Retrain the guide.")
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


def _vae_from_files(read, info, where):
    """The loader of ``"format": "vaequery.vae"`` (see :func:`vaequery._format.register_format`)."""
    check_format_version(
        info,
        FORMAT_VERSION,
        "model",
        where,
        "Load it with a matching vaequery and re-save, or retrain.",
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
        else skeleton(
            MLPEncoder,
            e["num_features"],
            e["latent_dim"],
            tuple(e["hidden"]),
            mask_input=e.get("inputs", "values") == "values_and_mask",
        )
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


register_format(FORMAT, _vae_from_files)


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


def _posterior_from_files(files: dict, model=None, where="posterior"):
    """The posterior reader (:func:`vaequery._format.register_posterior_reader`)."""
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
    check_format_version(
        info,
        POSTERIOR_FORMAT_VERSION,
        "posterior",
        where,
        "Read it with that vaequery, or infer again.",
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


_format.register_posterior_reader(_posterior_from_files)
