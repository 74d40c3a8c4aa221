"""JAX's persistent compilation cache, switched on for vaequery in one line.

Every backend × batch shape is one XLA program. Compiling it is most of the
time a fresh process spends on its first query (about 2 s on a 2-core CPU for
``given(...).infer("gaussian")``); with JAX's persistent compilation cache the
compiled program is read back from disk on the next run instead. The command
line turns the cache on by default; API users call
:func:`enable_compilation_cache` once, before their first query. The cache
changes no result: an executable read back is the one that was compiled.

The cache directory holds executables that JAX will run, so it must be
writable by you alone (JAX's own warning); the default is in your user cache
folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Environment variable naming the cache folder; ``off`` turns the command line's cache off.
ENV_VAR = "VAEQUERY_CACHE_DIR"
_OFF = ("off", "0", "false", "no", "none")


def default_cache_dir() -> Path:
    """The folder :func:`enable_compilation_cache` uses when given none.

    Returns
    -------
    Path
        ``$VAEQUERY_CACHE_DIR`` if set, else ``<user cache folder>/vaequery/jax``:
        ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on
        macOS, ``%LOCALAPPDATA%`` on Windows.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env.lower() not in _OFF:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vaequery" / "jax"


def disabled_by_env() -> bool:
    """Whether ``$VAEQUERY_CACHE_DIR`` says ``off`` (or ``0``, ``false``, ``no``, ``none``).

    The command line then leaves the cache off (as ``vaequery --no-cache`` does).

    Returns
    -------
    bool
    """
    return os.environ.get(ENV_VAR, "").strip().lower() in _OFF


def enable_compilation_cache(path=None, *, min_compile_time_secs: float = 0.1) -> Path:
    """Keep compiled queries on disk so that a new process need not recompile them.

    Sets JAX's persistent compilation cache (``jax_compilation_cache_dir``,
    ``jax_persistent_cache_min_compile_time_secs``). Call it once, before the
    first query; it affects every JAX program of the process, not only
    vaequery's. The second process that asks a query of the same backend,
    settings and batch shape reads the program back instead of compiling it.

    Parameters
    ----------
    path : str or Path, optional
        The cache folder (created if needed). Default: ``$VAEQUERY_CACHE_DIR``
        if set, else the folder JAX was already told to use
        (``JAX_COMPILATION_CACHE_DIR``), else ``<user cache folder>/vaequery/jax``
        (:func:`default_cache_dir`). Only you should be able to write to it:
        JAX runs what it finds there.
    min_compile_time_secs : float
        Programs that compiled faster than this are not written (JAX's default,
        1 s, would skip a query that compiles in 0.9 s on a fast machine).

    Returns
    -------
    Path
        The cache folder.

    See Also
    --------
    disable_compilation_cache

    Examples
    --------
    >>> import vaequery as vq
    >>> folder = vq.enable_compilation_cache()   # doctest: +SKIP
    >>> vae = vq.pretrained("breast_cancer")     # doctest: +SKIP
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if path is None:
        current = jax.config.jax_compilation_cache_dir
        path = current if current and ENV_VAR not in os.environ else default_cache_dir()
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    changed = (
        jax.config.jax_compilation_cache_dir != str(path)
        or not jax.config.jax_enable_compilation_cache
    )
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    if changed:
        # JAX opens its cache once, at the first compilation: start it afresh
        compilation_cache.reset_cache()
    return path


def disable_compilation_cache() -> None:
    """Stop reading and writing JAX's persistent compilation cache in this process.

    Undoes :func:`enable_compilation_cache` (and a ``JAX_COMPILATION_CACHE_DIR``
    set in the environment); programs compiled from now on stay in memory only.
    The folder on disk is left as it is.

    Returns
    -------
    None
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
