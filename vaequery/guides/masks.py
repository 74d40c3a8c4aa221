r"""Mask distributions for training amortized guides, as pure JAX functions.

A mask distribution is a small :class:`equinox.Module` called as
``mask(key, shape) -> observed`` with ``observed: bool [N, D]`` (``True`` =
the feature is observed). They run inside the compiled training loop, so each
training step draws fresh masks without leaving JAX.

* :class:`MCAR` -- each feature hidden independently with probability ``rate``.
  Posterior matching's UCI runs use ``rate = 0.5`` (its appendix D.1; VAEAC too).
* :class:`UniformCount` -- the number of hidden features is uniform on
  ``0..D``, then a uniformly random subset of that size is hidden. Posterior
  matching's image and acquisition runs draw masks "from a uniform distribution"
  over how much is observed (appendix D.3: "between 0% and 20% of the features
  as observed", uniformly); this is that with the full range. Every query size is
  equally represented (MCAR(0.5) concentrates on about D/2 observed), so it is
  vaequery's default for guides that must answer arbitrary queries.
* :class:`HalfMissing` -- QAVI's test protocol: exactly ``floor(D / 2)`` hidden.
* :class:`Patches` -- square patches of an image hidden (QAVI section 5).
* :class:`MixtureOfMasks` -- pick one of several distributions per row.

These mirror the NumPy generators of :mod:`vaequery.datasets.missing`, which
make *test* queries from a table.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp


class MaskDistribution(eqx.Module):
    """Abstract mask distribution: ``__call__(key, shape) -> observed bool [N, D]``."""

    def __call__(self, key, shape):
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-friendly description (stored with a trained guide)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out = {"name": type(self).__name__}
        for k, v in fields.items():
            if isinstance(v, tuple) and v and isinstance(v[0], MaskDistribution):
                out[k] = [m.describe() for m in v]
            else:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out


def _hide_count(key, shape, num_hidden):
    """Hide ``num_hidden[n]`` features of row ``n``, a uniform random subset."""
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, shape), axis=-1), axis=-1)
    return ranks >= jnp.asarray(num_hidden)[..., None]  # observed where rank >= count


class MCAR(MaskDistribution):
    """Hide each feature independently with probability ``rate``.

    Parameters
    ----------
    rate : float
        Probability that a feature is hidden, in ``[0, 1]``.
    """

    rate: float = 0.5

    def __check_init__(self):
        if not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError(f"MCAR rate must be in [0, 1], got {self.rate!r}")

    def __call__(self, key, shape):
        return jax.random.uniform(key, shape) >= self.rate


class UniformCount(MaskDistribution):
    """Number of hidden features uniform on ``0..D``, then a uniform subset."""

    def __call__(self, key, shape):
        k1, k2 = jax.random.split(key)
        D = shape[-1]
        count = jax.random.randint(k1, shape[:-1], 0, D + 1)
        return _hide_count(k2, shape, count)


class HalfMissing(MaskDistribution):
    """Exactly ``floor(D / 2)`` features hidden per row (QAVI's test protocol)."""

    def __call__(self, key, shape):
        D = shape[-1]
        return _hide_count(key, shape, jnp.full(shape[:-1], D // 2))


class Patches(MaskDistribution):
    """Hide ``num_patches`` randomly placed square patches of an image.

    Parameters
    ----------
    image_shape : tuple of int
        ``(height, width)``; features are the pixels in row-major order.
    num_patches : int
        QAVI: 2.
    size : int, optional
        Side of each patch; default ``round(10 / 28 * min(height, width))``
        (QAVI's 10x10 on 28x28 MNIST; 3x3 on 8x8 digits).
    """

    image_shape: tuple = (8, 8)
    num_patches: int = 2
    size: int | None = None

    def __call__(self, key, shape):
        H, W = self.image_shape
        if H * W != shape[-1]:
            raise ValueError(
                f"image_shape {self.image_shape} has {H * W} pixels, rows have {shape[-1]} features"
            )
        s = self.size or max(1, round(10 / 28 * min(H, W)))
        n = math.prod(shape[:-1])
        ky, kx = jax.random.split(key)
        top = jax.random.randint(ky, (n, self.num_patches), 0, H - s + 1)
        left = jax.random.randint(kx, (n, self.num_patches), 0, W - s + 1)
        rows = jnp.arange(H)[:, None]
        cols = jnp.arange(W)[None, :]
        inside = (
            (rows >= top[..., None, None])
            & (rows < top[..., None, None] + s)
            & (cols >= left[..., None, None])
            & (cols < left[..., None, None] + s)
        )  # [n, P, H, W]
        hidden = inside.any(1).reshape(shape)
        return ~hidden


class MixtureOfMasks(MaskDistribution):
    """Each row draws its mask from one of ``components``, chosen uniformly."""

    components: tuple = ()

    def __check_init__(self):
        if not self.components:
            raise ValueError("MixtureOfMasks needs at least one component")

    def __call__(self, key, shape):
        kc, *ks = jax.random.split(key, len(self.components) + 1)
        masks = jnp.stack([m(k, shape) for m, k in zip(self.components, ks)])
        pick = jax.random.randint(kc, shape[:-1], 0, len(self.components))
        return jnp.take_along_axis(masks, pick[None, ..., None], 0)[0]


_BY_NAME = {
    "mcar": MCAR,
    "bernoulli": MCAR,
    "uniform": UniformCount,
    "half": HalfMissing,
    "patches": Patches,
}


def as_mask_distribution(spec) -> MaskDistribution:
    """A :class:`MaskDistribution` from an instance, a name, or a stored description.

    Parameters
    ----------
    spec : MaskDistribution, str or dict
        ``"uniform"``, ``"mcar"``/``"bernoulli"`` (rate 0.5), ``"half"``,
        ``"patches"`` (8x8), or a dict written by :meth:`MaskDistribution.describe`.

    Returns
    -------
    MaskDistribution
    """
    if isinstance(spec, MaskDistribution):
        return spec
    if isinstance(spec, str):
        if spec not in _BY_NAME:
            raise ValueError(
                f"unknown mask distribution {spec!r}; accepted names: {sorted(_BY_NAME)} "
                "or an instance of vaequery.guides.MCAR / UniformCount / HalfMissing / Patches"
            )
        return _BY_NAME[spec]()
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name")
        classes = {
            c.__name__: c for c in (MCAR, UniformCount, HalfMissing, Patches, MixtureOfMasks)
        }
        if name not in classes:
            raise ValueError(f"unknown stored mask distribution {name!r}")
        if "components" in spec:
            spec["components"] = tuple(as_mask_distribution(c) for c in spec["components"])
        if "image_shape" in spec:
            spec["image_shape"] = tuple(spec["image_shape"])
        return classes[name](**spec)
    raise TypeError(f"mask distribution must be a name, dict or MaskDistribution, got {spec!r}")
