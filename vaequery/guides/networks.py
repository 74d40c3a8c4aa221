r"""Partial encoders q_θ(z | x_O, b) and their output heads.

A :class:`PartialEncoder` reads one query row as posterior matching does: the
input is ``[x ⊙ b, b]`` (standardised values with unobserved entries zeroed, and
the observed mask ``b``), a residual MLP maps it to a context vector, and a
*head* turns the context into a distribution over ``z``:

:class:`GaussianHead`
    :math:`\mathcal N(\mu, LL^\top)` with :math:`L` lower-triangular, positive
    diagonal ``softplus + 1e-4`` (posterior matching's released configuration and
    its acquisition experiments).
:class:`ARMixtureHead`
    :math:`q(z) = \prod_i q(z_i \mid h, z_{<i})`, each factor a 1-D mixture of
    ``K`` Gaussians (posterior matching, appendix D.5). One network reads
    ``[h, z ⊙ m_i, m_i]`` with :math:`m_i = (j < i)_j` and outputs the mixture
    parameters of every coordinate; coordinate ``i`` takes its own slice. The
    log-density evaluates all ``d`` conditionals in parallel; sampling is ``d``
    sequential network calls.

Heads work on one row: ``state = head.state(h)`` is the per-row quantity a
backend keeps (Gaussian: ``loc`` and ``tril``; mixture: the context), and
``head.sample_and_log_prob(state, key, n)`` / ``head.log_prob(state, z)`` use it.
Posterior matching's objective needs only ``log_prob`` (no reparameterisation),
which is why an autoregressive mixture can be used at all.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2 * math.pi)


class ResidualMLP(eqx.Module):
    """``in -> width -> [residual blocks] -> out`` with ReLU (posterior matching's MLPs).

    Parameters
    ----------
    in_size, out_size, width, num_blocks : int
    key : PRNG key
    """

    first: eqx.nn.Linear
    blocks: tuple
    last: eqx.nn.Linear

    def __init__(self, in_size, out_size, width=128, num_blocks=2, *, key):
        keys = jax.random.split(key, 2 * num_blocks + 2)
        self.first = eqx.nn.Linear(in_size, width, key=keys[0])
        self.blocks = tuple(
            (
                eqx.nn.Linear(width, width, key=keys[1 + 2 * i]),
                eqx.nn.Linear(width, width, key=keys[2 + 2 * i]),
            )
            for i in range(num_blocks)
        )
        last = eqx.nn.Linear(width, out_size, key=keys[-1])
        # a small last layer starts every head near its neutral output
        self.last = eqx.tree_at(lambda l: l.weight, last, last.weight * 0.1)

    def __call__(self, x):
        h = jax.nn.relu(self.first(x))
        for a, b in self.blocks:
            h = h + b(jax.nn.relu(a(h)))
        return self.last(jax.nn.relu(h))


def _tril_indices(d):
    return jnp.tril_indices(d, -1)


class GaussianHead(eqx.Module):
    """Full-covariance Gaussian from the context: ``N(loc, L L^T)``.

    The context itself holds ``loc`` (``d``), the raw diagonal (``d``) and the
    strictly-lower entries (``d(d-1)/2``) of ``L``.
    """

    latent_dim: int = eqx.field(static=True)

    @property
    def context_size(self) -> int:
        """Length of the context vector the encoder must output."""
        d = self.latent_dim
        return 2 * d + d * (d - 1) // 2

    def state(self, h):
        """``{"loc": [d], "tril": [d, d]}`` from a context ``h``."""
        d = self.latent_dim
        loc, raw, off = h[:d], h[d : 2 * d], h[2 * d :]
        # softplus(raw + 0.5413) = 1 at raw = 0: an untrained head starts at N(0, I)
        diag = jax.nn.softplus(raw + 0.5413) + 1e-4
        tril = jnp.zeros((d, d), h.dtype).at[_tril_indices(d)].set(off)
        return {"loc": loc, "tril": tril + jnp.diag(diag)}

    def log_prob(self, state, z):
        """``log q(z)`` for ``z: [..., d]``."""
        loc, L = state["loc"], state["tril"]
        diff = z - loc
        flat = diff.reshape(-1, self.latent_dim)
        sol = jax.scipy.linalg.solve_triangular(L, flat.T, lower=True).T
        sol = sol.reshape(diff.shape)
        logdet = jnp.sum(jnp.log(jnp.diagonal(L)))
        return -0.5 * jnp.sum(sol**2, -1) - logdet - 0.5 * self.latent_dim * _LOG_2PI

    def sample_and_log_prob(self, state, key, n):
        """``n`` reparameterised draws ``[n, d]`` and their log-density ``[n]``."""
        d = self.latent_dim
        eps = jax.random.normal(key, (n, d))
        z = state["loc"] + eps @ state["tril"].T
        logdet = jnp.sum(jnp.log(jnp.diagonal(state["tril"])))
        return z, -0.5 * jnp.sum(eps**2, -1) - logdet - 0.5 * d * _LOG_2PI

    def moments(self, state, key=None):
        """Mean ``[d]`` and Cholesky factor ``[d, d]`` of the covariance (exact)."""
        return state["loc"], state["tril"]


class ARMixtureHead(eqx.Module):
    r"""Autoregressive mixture of Gaussians (posterior matching, appendix D.5).

    Parameters
    ----------
    latent_dim : int
    context_size : int
        Length of the context ``h`` from the encoder.
    num_components : int
        ``K`` Gaussians per coordinate (posterior matching: 10).
    width, num_blocks : int
        The autoregressive network (a :class:`ResidualMLP`).
    key : PRNG key
    """

    net: ResidualMLP
    latent_dim: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    num_components: int = eqx.field(static=True)

    def __init__(
        self, latent_dim, context_size=64, num_components=10, width=128, num_blocks=2, *, key
    ):
        self.latent_dim = latent_dim
        self.context_size = context_size
        self.num_components = num_components
        d, K = latent_dim, num_components
        self.net = ResidualMLP(context_size + 2 * d, 3 * K * d, width, num_blocks, key=key)

    def state(self, h):
        """The per-row state is the context ``{"h": [context_size]}``."""
        return {"h": h}

    def _conditionals(self, h, z, i):
        """Mixture parameters ``(logits, loc, scale) [K]`` of ``z_i | h, z_<i``."""
        d, K = self.latent_dim, self.num_components
        m = (jnp.arange(d) < i).astype(z.dtype)
        out = self.net(jnp.concatenate([h, z * m, m])).reshape(d, 3, K)[i]
        logits, loc, raw = out[0], out[1], out[2]
        # spread the initial component means so an untrained head is already multimodal
        loc = loc + jnp.linspace(-1.5, 1.5, K)
        scale = jax.nn.softplus(raw + 0.5413) + 1e-3
        return logits, loc, scale

    def _log_prob_one(self, h, z):
        d = self.latent_dim

        def coord(i):
            logits, loc, scale = self._conditionals(h, z, i)
            lp = -0.5 * ((z[i] - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * _LOG_2PI
            return jax.nn.logsumexp(jax.nn.log_softmax(logits) + lp)

        return jnp.sum(jax.vmap(coord)(jnp.arange(d)))

    def log_prob(self, state, z):
        """``log q(z)`` for ``z: [..., d]`` (all conditionals in parallel)."""
        flat = z.reshape(-1, self.latent_dim)
        lp = jax.vmap(self._log_prob_one, (None, 0))(state["h"], flat)
        return lp.reshape(z.shape[:-1])

    def _sample_one(self, h, key):
        d = self.latent_dim

        def body(z, xs):
            i, k = xs
            kc, kn = jax.random.split(k)
            logits, loc, scale = self._conditionals(h, z, i)
            c = jax.random.categorical(kc, logits)
            zi = loc[c] + scale[c] * jax.random.normal(kn)
            return z.at[i].set(zi), None

        z, _ = jax.lax.scan(body, jnp.zeros(d, h.dtype), (jnp.arange(d), jax.random.split(key, d)))
        return z

    def sample_and_log_prob(self, state, key, n):
        """``n`` ancestral draws ``[n, d]`` (not reparameterised) and ``log q`` ``[n]``."""
        z = jax.vmap(self._sample_one, (None, 0))(state["h"], jax.random.split(key, n))
        z = jax.lax.stop_gradient(z)
        return z, self.log_prob(state, z)

    def moments(self, state, key, num_samples=256):
        """Monte-Carlo mean ``[d]`` and Cholesky factor of the covariance ``[d, d]``."""
        z, _ = self.sample_and_log_prob(state, key, num_samples)
        loc = z.mean(0)
        cov = jnp.cov(z.T).reshape(self.latent_dim, self.latent_dim)
        cov = cov + 1e-6 * jnp.eye(self.latent_dim)
        return loc, jnp.linalg.cholesky(cov)


class PartialEncoder(eqx.Module):
    r"""``q_θ(z | x_O, b)``: a residual MLP on ``[x ⊙ b, b]`` and a head.

    Parameters
    ----------
    num_features, latent_dim : int
    head : {"gaussian", "mixture"}
        :class:`GaussianHead` or :class:`ARMixtureHead`.
    width, num_blocks : int
        Encoder MLP (posterior matching: 256 units, 2-3 residual blocks; vaequery
        defaults to 128 and 2 to keep shipped models small).
    num_components : int
        Mixture head only.
    context_size : int
        Mixture head only: length of the context vector.
    key : PRNG key
    """

    net: ResidualMLP
    head: eqx.Module
    num_features: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)

    def __init__(
        self,
        num_features,
        latent_dim,
        head="gaussian",
        width=128,
        num_blocks=2,
        num_components=10,
        context_size=64,
        *,
        key,
    ):
        k_net, k_head = jax.random.split(key)
        if head == "gaussian":
            self.head = GaussianHead(latent_dim)
        elif head == "mixture":
            self.head = ARMixtureHead(
                latent_dim, context_size, num_components, width, num_blocks, key=k_head
            )
        else:
            raise ValueError(f"head must be 'gaussian' or 'mixture', got {head!r}")
        self.net = ResidualMLP(
            2 * num_features, self.head.context_size, width, num_blocks, key=k_net
        )
        self.num_features = num_features
        self.latent_dim = latent_dim

    @property
    def head_name(self) -> str:
        """``"gaussian"`` or ``"mixture"``."""
        return "gaussian" if isinstance(self.head, GaussianHead) else "mixture"

    def state(self, x, observed):
        """Per-row head state from one row ``x [D]`` (standardised) and ``observed [D]``."""
        b = observed.astype(x.dtype)
        return self.head.state(self.net(jnp.concatenate([jnp.where(observed, x, 0.0), b])))

    def log_prob(self, z, x, observed):
        """``log q_θ(z | x_O)`` for one row; ``z: [..., d]``."""
        return self.head.log_prob(self.state(x, observed), z)

    def sample_and_log_prob(self, state, key, n):
        """Draws and log-density from a per-row ``state`` (see :meth:`state`)."""
        return self.head.sample_and_log_prob(state, key, n)

    def moments(self, state, key):
        """Mean and Cholesky factor of ``q`` for a per-row ``state``."""
        return self.head.moments(state, key)
