"""Time to first answer: loading builds skeletons only; the compilation cache switch.

Wall time is measured in ``benchmarks/startup.py``, never here.
"""

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaequery as vq
from vaequery.cache import default_cache_dir, disabled_by_env
from vaequery.cli import _setup_cache
from vaequery.decoder import MLPDecoder, skeleton
from vaequery.guides.guide import build_network

_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_enable_compilation_cache",
    "jax_persistent_cache_min_compile_time_secs",
)


@pytest.fixture
def jax_cache_config():
    """Give the test process back the cache settings it had (other tests share it)."""
    from jax.experimental.compilation_cache import compilation_cache

    saved = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def _arrays(tree):
    """Array leaves (real or placeholders) of a pytree of modules."""
    kinds = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    return [x for x in leaves if isinstance(x, kinds)]


def test_skeleton_has_the_structure_and_no_values():
    skel = skeleton(MLPDecoder, 3, 5, (8, 8), min_scale=0.01)
    assert isinstance(skel, MLPDecoder) and skel.min_scale == 0.01 and skel.num_features == 5
    shapes = [(a.shape, a.dtype) for a in _arrays(skel)]
    f32 = np.dtype("float32")
    assert shapes == [((8, 3), f32), ((8,), f32), ((8, 8), f32), ((8,), f32), ((10, 8), f32),
                      ((10,), f32)]  # fmt: skip
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in _arrays(skel))


@pytest.mark.parametrize(
    "arch",
    [
        {"class": "PartialEncoder", "num_features": 4, "latent_dim": 2, "head": "mixture",
         "width": 8, "num_blocks": 1, "num_components": 3, "context_size": 6},
        {"class": "MLPEncoder", "num_features": 4, "latent_dim": 2, "hidden": [8]},
    ],
)  # fmt: skip
def test_guide_networks_are_rebuilt_as_skeletons(arch):
    skel = build_network(arch)
    assert _arrays(skel) and all(isinstance(a, jax.ShapeDtypeStruct) for a in _arrays(skel))


def test_loading_runs_no_random_initialiser(monkeypatch):
    # equinox initialises every Linear layer with jax.random.uniform: on load it
    # may be traced (shapes only), never run on a concrete key
    real = jax.random.uniform

    def traced_only(key, *args, **kwargs):
        assert isinstance(key, jax.core.Tracer), "a random initialiser ran while loading"
        return real(key, *args, **kwargs)

    monkeypatch.setattr(jax.random, "uniform", traced_only)
    vae = vq.pretrained("banknote")  # decoder, encoder and two guides
    assert set(vae.guides) == {"posterior_matching", "retuned_encoder"}
    nets = (vae.encode_fn, vae.decode_fn, [g.network for g in vae.guides.values()])
    assert _arrays(nets) and all(isinstance(a, jax.Array) for a in _arrays(nets))


def test_a_saved_model_loads_bit_identically(tmp_path):
    vae = vq.pretrained("banknote")
    back = vq.load(vae.save(tmp_path / "m"))
    nets = lambda m: (m.encode_fn, m.decode_fn, {k: g.network for k, g in m.guides.items()})  # noqa: E731
    a, b = _arrays(nets(vae)), _arrays(nets(back))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_enable_compilation_cache_sets_jax_and_can_be_turned_off(tmp_path, jax_cache_config):
    folder = vq.enable_compilation_cache(tmp_path / "c", min_compile_time_secs=0)
    assert folder == tmp_path / "c" and folder.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert jax.config.jax_enable_compilation_cache
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0

    # a program compiled now is written there
    # (a program no other test compiles, so it is not in memory already)
    jax.jit(lambda x: jnp.sin(x) + 17.25)(jnp.arange(3.0)).block_until_ready()
    assert any(folder.iterdir())

    vq.disable_compilation_cache()
    assert not jax.config.jax_enable_compilation_cache


def test_cache_folder_defaults(monkeypatch, tmp_path, jax_cache_config):
    monkeypatch.delenv("VAEQUERY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "xdg" / "vaequery" / "jax"
    monkeypatch.setenv("VAEQUERY_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert vq.enable_compilation_cache() == tmp_path / "env"


def test_command_line_turns_the_cache_on_unless_told_not_to(
    monkeypatch, tmp_path, jax_cache_config
):
    monkeypatch.setenv("VAEQUERY_CACHE_DIR", str(tmp_path / "cli"))
    assert _setup_cache(off=True) is None
    assert _setup_cache(off=False) == tmp_path / "cli"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cli")
    monkeypatch.setenv("VAEQUERY_CACHE_DIR", "off")
    assert disabled_by_env() and _setup_cache(off=False) is None


def test_performance_page_example_runs(monkeypatch, tmp_path, capsys, jax_cache_config):
    page = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
    monkeypatch.setenv("VAEQUERY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the page writes its stream checkpoint to run.vqckpt
    namespace: dict = {}
    for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        exec(compile(code, str(page), "exec"), namespace)
    assert namespace["folder"] == tmp_path / "cache"
    assert "mean_texture     19.74   1.86" in capsys.readouterr().out
