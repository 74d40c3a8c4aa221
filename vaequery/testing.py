r"""Correctness oracles with exact answers, for tests and for users' own checks.

:class:`LinearGaussian` is probabilistic PCA: :math:`z \sim \mathcal N(0, I_d)`,
:math:`x = Wz + b + \sigma\varepsilon`. Given observed features :math:`O`,

.. math::
    \Sigma = (I + W_O^\top W_O/\sigma^2)^{-1},\qquad
    \mu = \Sigma W_O^\top (x_O - b_O)/\sigma^2,

the mean-field optimum has variances :math:`1/\operatorname{diag}(\Sigma^{-1})`
and mean :math:`\mu`, and
:math:`p(x_U \mid x_O) = \mathcal N(W_U\mu + b_U,\; W_U\Sigma W_U^\top + \sigma^2 I)`.
Everything is computed in float64 NumPy, independently of vaequery's JAX code.
"""

from __future__ import annotations

import numpy as np


class LinearGaussian:
    """Linear-Gaussian decoder with exact posteriors and likelihoods.

    Parameters
    ----------
    W : array ``[D, d]``
    b : array ``[D]``
    sigma : float
        Observation noise standard deviation.
    """

    def __init__(self, W, b, sigma):
        self.W = np.asarray(W, float)
        self.b = np.asarray(b, float)
        self.sigma = float(sigma)
        self.num_features, self.latent_dim = self.W.shape

    @classmethod
    def random(cls, seed=0, num_features=8, latent_dim=3, sigma=0.5, weight_scale=1.0):
        """A random instance (``W`` entries ``N(0, weight_scale^2)``, ``b ~ N(0, 1)``)."""
        rng = np.random.default_rng(seed)
        W = weight_scale * rng.standard_normal((num_features, latent_dim))
        return cls(W, rng.standard_normal(num_features), sigma)

    def orthogonalised(self):
        """The same model of ``x`` with ``z`` rotated so ``W``'s columns are orthogonal.

        ``z -> V^T z`` (``W = U S V^T``) leaves ``p(x)`` unchanged; afterwards
        the posterior given *all* features has a diagonal covariance, so the
        diagonal :meth:`encoder` is exact.
        """
        _, _, Vt = np.linalg.svd(self.W, full_matrices=False)
        return LinearGaussian(self.W @ Vt.T, self.b, self.sigma)

    def encoder(self, shift=0.0, scale_factor=1.0):
        """Amortised encoder ``x[..., D] -> (loc [..., d], scale [..., d])``.

        The posterior given every feature, ``N(mu, Sigma)`` with
        ``Sigma = (I + W^T W / sigma^2)^{-1}`` and
        ``mu = Sigma W^T (x - b) / sigma^2``, reduced to its mean and the
        marginal standard deviations. It is exactly ``p(z | x)`` when ``W^T W``
        is diagonal (see :meth:`orthogonalised`). ``shift`` (added to the
        mean) and ``scale_factor`` (multiplying the standard deviations) make a
        deliberately wrong encoder, e.g. to expose pseudo-Gibbs's bias.
        """
        import jax.numpy as jnp

        cov = np.linalg.inv(np.eye(self.latent_dim) + self.W.T @ self.W / self.sigma**2)
        A = jnp.asarray(cov @ self.W.T / self.sigma**2, jnp.float32)  # [d, D]
        b = jnp.asarray(self.b, jnp.float32)
        sd = jnp.asarray(scale_factor * np.sqrt(np.diag(cov)), jnp.float32)
        shift = jnp.asarray(shift, jnp.float32)

        def encode(x):
            x = jnp.asarray(x)
            loc = (x - b) @ A.T + shift
            return loc, jnp.broadcast_to(sd, loc.shape)

        return encode

    def vae_with_encoder(self, names=None, shift=0.0, scale_factor=1.0):
        """:meth:`vae` with :meth:`encoder` attached (for encoder-based backends)."""
        from vaequery.vae import from_decoder

        names = names or [f"x{i}" for i in range(self.num_features)]
        return from_decoder(
            self.decode,
            self.latent_dim,
            names,
            "gaussian",
            scale=self.sigma,
            encode_fn=self.encoder(shift, scale_factor),
        )

    def decode(self, z):
        """``E[x | z] = W z + b`` for ``z: [..., d]`` (JAX-traceable)."""
        import jax.numpy as jnp

        return jnp.asarray(z) @ jnp.asarray(self.W.T, jnp.float32) + jnp.asarray(
            self.b, jnp.float32
        )

    def vae(self, names=None):
        """The oracle as a :class:`vaequery.VAE` (Gaussian, fixed scale ``sigma``)."""
        from vaequery.vae import from_decoder

        names = names or [f"x{i}" for i in range(self.num_features)]
        return from_decoder(self.decode, self.latent_dim, names, "gaussian", scale=self.sigma)

    def sample(self, seed, n):
        """``(z [n, d], x [n, D])`` from the generative model."""
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.latent_dim))
        x = z @ self.W.T + self.b + self.sigma * rng.standard_normal((n, self.num_features))
        return z, x

    def posterior(self, x, observed):
        """Exact ``p(z | x_O)`` per row.

        Parameters
        ----------
        x : array ``[N, D]`` (entries outside ``observed`` ignored)
        observed : bool array ``[N, D]``

        Returns
        -------
        (mean [N, d], cov [N, d, d])
        """
        x, m = _rows(x, observed)
        W, s2 = self.W, self.sigma**2
        prec = np.eye(self.latent_dim) + np.einsum("nj,ja,jb->nab", m, W, W) / s2
        cov = np.linalg.inv(prec)
        r = np.where(m > 0, x - self.b, 0.0)
        mean = np.einsum("nab,jb,nj->na", cov, W, r) / s2
        return mean, cov

    def mean_field(self, x, observed):
        """The mean-field Gaussian optimum: ``(mean [N, d], var [N, d])``."""
        mean, cov = self.posterior(x, observed)
        prec_diag = np.diagonal(np.linalg.inv(cov), axis1=1, axis2=2)
        return mean, 1.0 / prec_diag

    def log_marginal(self, x, mask):
        """Exact ``log p(x_M)`` per row for the features in ``mask``."""
        x, m = _rows(x, mask)
        C = self.W @ self.W.T + self.sigma**2 * np.eye(self.num_features)
        # Restrict to the mask without gathering: unmasked rows/cols become the
        # identity with zero residual, adding exactly -0.5 log(2 pi) each.
        Cm = m[:, :, None] * C * m[:, None, :] + np.eye(self.num_features) * (1 - m)[:, :, None]
        r = np.where(m > 0, x - self.b, 0.0)
        _, logdet = np.linalg.slogdet(Cm)
        quad = np.einsum("ni,ni->n", r, np.linalg.solve(Cm, r[..., None])[..., 0])
        D = self.num_features
        full = -0.5 * (quad + logdet + D * np.log(2 * np.pi))
        return full + 0.5 * (D - m.sum(-1)) * np.log(2 * np.pi)

    def log_likelihood(self, x, observed, target):
        """Exact ``log p(x_U | x_O)`` per row."""
        observed = np.asarray(observed, bool)
        joint = observed | np.asarray(target, bool)
        return self.log_marginal(x, joint) - self.log_marginal(x, observed)


def _rows(x, mask):
    x = np.atleast_2d(np.asarray(x, float))
    m = np.atleast_2d(np.asarray(mask, bool)).astype(float)
    return np.where(m > 0, x, 0.0), m


def importance_relative_variance(p_mean, p_cov, q_mean, q_cov):
    r"""Exact relative variance ``Var_q[w] / E_q[w]^2`` of ``w = p/q`` for Gaussians.

    With :math:`A = 2P^{-1} - Q^{-1}` (must be positive definite, else the
    variance is infinite and ``inf`` is returned),

    .. math::
        \mathbb E_q[(p/q)^2] = \frac{|Q|^{1/2}}{|P|\,|A|^{1/2}}
        \exp\!\big(\tfrac12 b^\top A^{-1} b - \mu_p^\top P^{-1}\mu_p
        + \tfrac12 \mu_q^\top Q^{-1} \mu_q\big),\quad b = 2P^{-1}\mu_p - Q^{-1}\mu_q.

    The IWAE estimate ``log mean_s w_s`` with ``S`` draws then has standard error
    about ``sqrt(r / S)`` and bias about ``-r / (2 S)``, which is how the tests
    set Monte-Carlo tolerances for likelihood estimates.

    Parameters
    ----------
    p_mean, q_mean : array ``[..., d]``
    p_cov, q_cov : array ``[..., d, d]``

    Returns
    -------
    array ``[...]``
    """
    Pi = np.linalg.inv(p_cov)
    Qi = np.linalg.inv(q_cov)
    A = 2 * Pi - Qi
    eig = np.linalg.eigvalsh(A)
    ok = (eig > 1e-12).all(-1)
    A_safe = np.where(ok[..., None, None], A, np.eye(A.shape[-1]))
    b = 2 * np.einsum("...ab,...b->...a", Pi, p_mean) - np.einsum("...ab,...b->...a", Qi, q_mean)
    quad = np.einsum("...a,...a->...", b, np.linalg.solve(A_safe, b[..., None])[..., 0])
    log_e = (
        0.5 * np.linalg.slogdet(q_cov)[1]
        - np.linalg.slogdet(p_cov)[1]
        - 0.5 * np.linalg.slogdet(A_safe)[1]
        + 0.5 * quad
        - np.einsum("...a,...ab,...b->...", p_mean, Pi, p_mean)
        + 0.5 * np.einsum("...a,...ab,...b->...", q_mean, Qi, q_mean)
    )
    return np.where(ok, np.expm1(log_e), np.inf)


class GridOracle2D:
    r"""Exact answers for a 2-D latent model with any decoder, by grid quadrature.

    :math:`z \sim \mathcal N(0, I_2)`, :math:`x_j = g_j(z) + \sigma\varepsilon_j`
    with a (nonlinear) decoder ``g``. On a regular ``num_points`` × ``num_points``
    grid over ``[-lim, lim]^2`` (cell area :math:`h^2`),

    .. math::
        \log p(x_M) \approx \log \sum_{i} h^2\, p(z_i)\prod_{j\in M}
        \mathcal N(x_j; g_j(z_i), \sigma^2),

    which converges geometrically fast for smooth integrands that vanish at the
    border (a 401-point grid over ``[-6, 6]^2`` is exact to ~1e-8 for
    :meth:`bimodal`). The log-likelihood :math:`\log p(x_U\mid x_O)`, the
    posterior moments and :math:`\log p(z\mid x_O)` at any point follow.
    Everything is float64 NumPy apart from the decoder call.

    Parameters
    ----------
    decode : callable
        ``z [..., 2] -> mean [..., D]`` (JAX- or NumPy-traceable).
    num_features : int
    sigma : float
    lim : float
    num_points : int
    """

    latent_dim = 2

    def __init__(self, decode, num_features, sigma, lim=6.0, num_points=401):
        self.decode = decode
        self.num_features = int(num_features)
        self.sigma = float(sigma)
        g = np.linspace(-lim, lim, int(num_points))
        self.cell_log_area = 2 * np.log(g[1] - g[0])
        self.grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # [G, 2]
        self._mean = self._decode(self.grid)  # [G, D]

    @classmethod
    def bimodal(cls, sigma=0.2, **kwargs):
        r"""``g(z) = (z_1 z_2,\ z_1 + z_2,\ z_1^2 - z_2^2)``.

        Observing only ``x_0 = z_1 z_2 = c`` gives a posterior on both branches
        of a hyperbola (symmetric under ``z -> -z``, two modes); ``x_1``
        tells the branches apart, so imputing it is bimodal too.
        """

        def decode(z):
            import jax.numpy as jnp

            z = jnp.asarray(z)
            z1, z2 = z[..., 0], z[..., 1]
            return jnp.stack([z1 * z2, z1 + z2, z1**2 - z2**2], -1)

        return cls(decode, 3, sigma, **kwargs)

    #: Which features of :meth:`multimodal` to observe for each posterior shape.
    MULTIMODAL_QUERIES = {
        "even": (0,),  # x0 = z1^2: z1 = +-sqrt(x0), two narrow mirror modes
        "abs": (1,),  # x1 = 2|z1|: two modes with kinks
        "product": (2,),  # x2 = z1 z2: both branches of a hyperbola
        "ring": (3,),  # x3 = 0.3 (z1^2 + z2^2): a ring
        "four": (0, 4),  # z1^2 and z2^2: four modes, one per quadrant
        "skewed": (0, 5),  # z1^2 and weak evidence on z1: two modes of unequal mass
    }

    @classmethod
    def multimodal(cls, sigma=0.1, **kwargs):
        r"""One decoder whose observed features select a multimodal posterior.

        ``g(z) = (z_1^2,\ 2|z_1|,\ z_1 z_2,\ 0.3(z_1^2+z_2^2),\ z_2^2,\
        0.15 z_1,\ z_1,\ z_2)``; :attr:`MULTIMODAL_QUERIES` says which
        features to observe for each shape (two mirror modes, kinked modes, a
        hyperbola, a ring, four modes, unequal modes). The last two features
        are the latent itself, to be imputed. One model serves the whole
        family, so a backend compiles once for all of it.
        """

        def decode(z):
            import jax.numpy as jnp

            z = jnp.asarray(z)
            z1, z2 = z[..., 0], z[..., 1]
            return jnp.stack(
                [z1**2, 2 * jnp.abs(z1), z1 * z2, 0.3 * (z1**2 + z2**2), z2**2, 0.15 * z1, z1, z2],
                -1,
            )

        return cls(decode, 8, sigma, **kwargs)

    def quadrant_masses(self, x, observed):
        """Exact posterior mass of ``z1 < 0`` / ``z1 > 0`` and of the quadrants.

        Returns ``(half [N, 2], quadrant [N, 4])``; quadrants are numbered
        ``2 [z1 > 0] + [z2 > 0]`` (as :func:`quadrant`).
        """
        w = self.posterior_weights(x, observed)
        q = quadrant(self.grid)
        quad = np.stack([w[:, q == k].sum(-1) for k in range(4)], -1)
        return np.stack([quad[:, :2].sum(-1), quad[:, 2:].sum(-1)], -1), quad

    def _decode(self, z):
        return np.asarray(self.decode(np.asarray(z, np.float32)), float)

    def vae(self, names=None):
        """The oracle as a :class:`vaequery.VAE` (Gaussian, fixed scale ``sigma``)."""
        from vaequery.vae import from_decoder

        names = names or [f"x{i}" for i in range(self.num_features)]
        return from_decoder(self.decode, 2, names, "gaussian", scale=self.sigma)

    def _log_lik(self, mean, x, mask):
        # mean [..., M, D]; x, mask [N, D] -> [N, M]
        x, m = _rows(x, mask)
        r = (x[:, None, :] - mean) / self.sigma
        ll = -0.5 * r**2 - np.log(self.sigma) - 0.5 * np.log(2 * np.pi)
        return np.sum(ll * m[:, None, :], -1)

    def _log_joint_grid(self, x, mask):
        log_prior = -0.5 * np.sum(self.grid**2, -1) - np.log(2 * np.pi)
        return log_prior + self._log_lik(self._mean[None], x, mask)  # [N, G]

    def log_marginal(self, x, mask):
        """``log p(x_M)`` per row for the features in ``mask``."""
        lj = self._log_joint_grid(x, mask)
        mx = lj.max(-1, keepdims=True)
        return mx[:, 0] + np.log(np.exp(lj - mx).sum(-1)) + self.cell_log_area

    def log_likelihood(self, x, observed, target):
        """Exact ``log p(x_U | x_O)`` per row."""
        observed = np.asarray(observed, bool)
        joint = observed | np.asarray(target, bool)
        return self.log_marginal(x, joint) - self.log_marginal(x, observed)

    def posterior_weights(self, x, observed):
        """Normalised posterior masses on :attr:`grid`, ``[N, G]``."""
        lj = self._log_joint_grid(x, observed)
        w = np.exp(lj - lj.max(-1, keepdims=True))
        return w / w.sum(-1, keepdims=True)

    def posterior(self, x, observed):
        """Posterior ``(mean [N, 2], cov [N, 2, 2])`` by quadrature."""
        w = self.posterior_weights(x, observed)
        mean = w @ self.grid
        c = self.grid[None] - mean[:, None]
        return mean, np.einsum("ng,nga,ngb->nab", w, c, c)

    def log_posterior(self, z, x, observed):
        """``log p(z | x_O)`` at points ``z [N, M, 2]`` -> ``[N, M]``."""
        z = np.asarray(z, float)
        log_prior = -0.5 * np.sum(z**2, -1) - np.log(2 * np.pi)
        ll = self._log_lik(self._decode(z), x, observed)
        return log_prior + ll - self.log_marginal(x, observed)[:, None]

    def reverse_kl(self, z, log_q, x, observed):
        r"""Monte-Carlo :math:`\mathrm{KL}(q\,\|\,p(z\mid x_O))` from draws of ``q``.

        Parameters
        ----------
        z : array ``[N, M, 2]``
            Draws from ``q`` (one approximation per row).
        log_q : array ``[N, M]``
        x, observed : arrays ``[N, D]``

        Returns
        -------
        (kl [N], standard_error [N])
        """
        r = np.asarray(log_q, float) - self.log_posterior(z, x, observed)
        return r.mean(-1), r.std(-1, ddof=1) / np.sqrt(r.shape[-1])


def quadrant(z):
    """Quadrant index ``2 [z1 > 0] + [z2 > 0]`` of points ``z [..., 2]``."""
    z = np.asarray(z)
    return 2 * (z[..., 0] > 0) + (z[..., 1] > 0)


def linear_hvae(A, s, W, b, sigma, B=None, names=None, feature_scale=0.1, seed=0):
    r"""A two-layer linear-Gaussian hierarchical VAE, for checking hierarchical inference.

    The model is :math:`z_1 \sim \mathcal N(0, I_{d_1})`,
    :math:`z_2 \mid z_1 \sim \mathcal N(A z_1, \operatorname{diag}(s^2))`,
    :math:`x \mid z \sim \mathcal N(W z_2 + b, \sigma^2 I)`, an
    :class:`~vaequery.models.HVAEModel` whose networks are linear, so that
    the ``"hierarchical"`` backend (QAVI eq. 10) runs on it:

    * posterior layer 1: ``loc = lambda_1[:d1]``, ``scale = softplus(lambda_1[d1:])``;
    * posterior layer 2: ``loc = lambda_2[:d2] + B z_1``, ``scale = softplus(lambda_2[d2:])``;
    * features ``lambda_l = F_l x + c_l`` with small random ``F_l`` (the start
      only; ``c_l`` makes the start scales 1).

    The flat latent is ``u = (z_1, z_2)``, jointly Gaussian, so ``p(u | x_O)``
    follows by Gaussian conditioning (compute it independently of vaequery).
    With a diagonal ``A`` and a ``W`` whose rows each load on one entry of
    ``z_2``, the exact posterior lies inside QAVI's family (its conditionals
    are diagonal and ``E[z_2 | z_1, x_O] = diag(k) A z_1 + c`` with ``k`` in
    ``(0, 1]``, reachable with ``B = -A / 2``, the default).

    Parameters
    ----------
    A : array ``[d2, d1]``
    s : array ``[d2]``
        Conditional prior standard deviations of ``z_2``.
    W : array ``[D, d2]``
    b : array ``[D]``
    sigma : float
        Observation noise.
    B : array ``[d2, d1]``, optional
        The posterior network's coefficient of ``z_1``; default ``-A / 2``.
    names : list of str, optional
        Feature names (default ``x0, x1, ...``).
    feature_scale : float
        Size of the random feature maps ``F_l``.
    seed : int

    Returns
    -------
    vaequery.models.HVAEModel
        With ``sizes == (d1, d2)`` and prior sites ``"z1"``, ``"z2"``.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from vaequery.models.hvae import HVAEModel
    from vaequery.schema import Schema

    dt = jnp.result_type(float)
    A = jnp.atleast_2d(jnp.asarray(A, dt))
    d2, d1 = A.shape
    W = jnp.asarray(W, dt).reshape(-1, d2)
    D = W.shape[0]
    B = -0.5 * A if B is None else jnp.asarray(B, dt)
    rng = np.random.default_rng(seed)
    inv_softplus_1 = float(np.log(np.e - 1.0))

    def fmap(d):
        F = jnp.asarray(feature_scale * rng.normal(size=(2 * d, D)), dt)
        c = jnp.concatenate([jnp.zeros(d, dt), jnp.full(d, inv_softplus_1, dt)])
        return F, c

    class _LinearHierarchy(eqx.Module):
        A: jax.Array
        s: jax.Array
        B: jax.Array
        F: tuple
        sizes: tuple = eqx.field(static=True)

        def features(self, x):
            return tuple(x @ F.T + c for F, c in self.F)

        def prior_layer(self, layer, z_prev):
            if layer == 0:
                shape = z_prev.shape[:-1] + (self.sizes[0],)
                return jnp.zeros(shape, z_prev.dtype), jnp.ones(shape, z_prev.dtype)
            loc = z_prev @ self.A.T
            return loc, jnp.broadcast_to(self.s, loc.shape)

        def posterior_layer(self, layer, lam, z_prev):
            d = self.sizes[layer]
            loc, scale = lam[..., :d], jax.nn.softplus(lam[..., d:]) + 1e-3
            if layer == 1:
                loc = loc + z_prev @ self.B.T
            return loc, scale

    class _LinearDecoder(eqx.Module):
        W: jax.Array
        b: jax.Array
        sigma: float = eqx.field(static=True)
        d1: int = eqx.field(static=True)

        def __call__(self, z):
            loc = z[..., self.d1 :] @ self.W.T + self.b
            return {"loc": loc, "scale": jnp.full_like(loc, self.sigma)}

    h = _LinearHierarchy(A, jnp.asarray(s, dt).reshape(d2), B, (fmap(d1), fmap(d2)), (d1, d2))
    dec = _LinearDecoder(W, jnp.asarray(b, dt).reshape(D), float(sigma), int(d1))
    names = list(names) if names is not None else [f"x{j}" for j in range(D)]
    return HVAEModel(h, dec, Schema.from_names(names))
