"""The user-facing model object: a decoder, its likelihood, a schema and maybe an encoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp

from vaequery import _format
from vaequery.decoder_checks import GaussianTupleDecoder, check_decoder, check_encoder
from vaequery.likelihoods import Likelihood, make_likelihood
from vaequery.model import (
    ConstrainedDecoder,
    LatentPrior,
    build_numpyro_model,
    target_functions,
)
from vaequery.schema import Feature, Schema


class VAE:
    """A pretrained decoder ready for conditional queries.

    Build one with :func:`vaequery.from_decoder` or load one with
    :func:`vaequery.pretrained` / :func:`vaequery.load`. The object is immutable
    in use: the NumPyro model and its log-densities are built once here, so every
    query of the same shape reuses one compiled program.

    Parameters
    ----------
    decode_fn : callable
        ``z[..., d] -> params`` for ``likelihood``.
    latent_dim : int
    schema : Schema
    likelihood : Likelihood
    encode_fn : callable, optional
        ``x[..., D] -> (loc, scale)``; needed by encoder-based backends and used
        to initialise VI (QAVI).
    metadata : dict, optional
        Free-form information (training recipe, test ELBO, versions).
    guides : dict, optional
        Trained amortized guides by name (:class:`vaequery.guides.Guide`);
        the trainers in :mod:`vaequery.guides` add to it, and
        :meth:`save` writes them with the model.
    prior : callable or LatentPrior, optional
        The latent prior as a NumPyro model ``prior()`` with one or several
        real-valued sample sites (default: ``z ~ N(0, I_d)``); see
        :func:`from_decoder` and ``docs/latent_priors.md``.

    Attributes
    ----------
    prior : LatentPrior or None
        The custom latent prior, ``None`` for the standard normal.
    """

    def __init__(
        self,
        decode_fn: Callable,
        latent_dim: int,
        schema: Schema,
        likelihood: Likelihood,
        encode_fn: Callable | None = None,
        metadata: dict | None = None,
        guides: dict | None = None,
        prior=None,
    ):
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
        if prior is not None and not isinstance(prior, LatentPrior):
            prior = LatentPrior.from_fn(prior)
        if prior is not None and prior.dim != int(latent_dim):
            raise ValueError(
                f"latent_dim={latent_dim} but the latent prior's sites "
                f"{dict(zip(prior.names, prior.shapes))} hold {prior.dim} numbers; latent_dim "
                "is the length of the flat latent vector (all sites ravelled and concatenated)"
            )
        self.prior = prior
        self._prior_start = None  # computed on first use, see prior_start
        # the decoder of the sites' own values (what the NumPyro model calls) and,
        # for a prior with constrained sites, decode_fn on the unconstrained z
        self.site_decode_fn = decode_fn
        self.decode_fn = (
            ConstrainedDecoder(decode_fn, prior)
            if prior is not None and prior.constrained
            else decode_fn
        )
        self.latent_dim = int(latent_dim)
        self.schema = schema
        self.likelihood = likelihood
        self.encode_fn = encode_fn
        self.metadata = dict(metadata or {})
        self.guides = dict(guides or {})
        self._numpyro_model = build_numpyro_model(
            decode_fn, likelihood, self.latent_dim, prior=prior
        )
        self._target_fns = target_functions(self._numpyro_model, prior=prior)

    @property
    def prior_start(self):
        """``(mean [d], Cholesky factor [d, d])`` of a custom latent prior, else ``None``.

        Where variational backends start with ``init="prior"``: the moments of
        prior draws in the flat latent space (:meth:`LatentPrior.moments`),
        computed once, on first use.
        """
        if getattr(self, "prior", None) is None:
            return None
        if getattr(self, "_prior_start", None) is None:
            self._prior_start = self.prior.moments()
        return self._prior_start

    @property
    def num_features(self) -> int:
        """Number of columns ``D``."""
        return len(self.schema)

    @property
    def feature_names(self) -> list[str]:
        """Column names in order."""
        return self.schema.names

    def decode_mean(self, z):
        """Predictive mean of ``x`` in model (standardised) units, ``[..., D]``."""
        return self.likelihood.mean(self.decode_fn(jnp.asarray(z)))

    def given(self, X=None, /, *, observed=None, **values):
        """Start a query by stating the evidence.

        Parameters
        ----------
        X : array ``[N, D]`` or ``[D]``, optional
            Evidence in raw units; NaN marks an unobserved feature. A
            ``vaequery.datasets`` table is accepted too.
        observed : bool array like ``X``, optional
            Explicit observed mask (then entries outside it may hold anything).
        **values
            Evidence by feature name, e.g. ``given(alcohol=12.5, pH=3.1)``; a
            single query row. Cannot be combined with ``X``.

        Returns
        -------
        vaequery.query.Query
            Target defaults to every unobserved feature; use ``.predict``.
        """
        from vaequery.query import Query

        q = Query.from_evidence(self, X, observed=observed, values=values)
        # A masked table from vaequery.datasets carries its own target mask.
        target = getattr(X, "target_mask", None)
        return q if target is None else q.predict(target=target)

    def save(self, path):
        """Write the model to the folder ``path`` (``model.json`` + ``weights.eqx``).

        The format is documented in :mod:`vaequery.io`; read it back with
        :func:`vaequery.load`. Supported for models trained by
        :func:`vaequery.train` (MLP encoder/decoder, Gaussian likelihood).
        A model with a custom latent prior (``prior=``) is refused: the prior
        is Python code, which the format does not store.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        Path
            The folder written.
        """
        self._refuse_custom_prior("save")
        return _format.save(self, path)

    def _refuse_custom_prior(self, what):
        if getattr(self, "prior", None) is not None:
            raise TypeError(
                f"cannot {what} this VAE: its latent prior is a Python function "
                f"({self.prior.fn!r}, sites {list(self.prior.names)}), and vaequery's file format "
                "stores arrays and JSON, never code. Rebuild the model with "
                "vaequery.from_decoder(..., prior=...) where it is needed (results: "
                "Posterior.save(path) and vaequery.load_posterior(path, model=vae))"
            )

    def __reduce__(self):
        # Pickle through vaequery's own format (vaequery._format.model_files: JSON and
        # array bytes), so joblib and multiprocessing work and unpickling runs
        # only vaequery's reader, never code carried in the pickle.
        self._refuse_custom_prior("pickle")
        try:
            files = _format.model_files(self)
        except _format._UnsavableModel as e:
            raise _format.pickle_refusal(e) from None
        return (_format.model_from_files, (files, "pickled VAE"))

    def __copy__(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo):
        import copy

        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __repr__(self) -> str:
        enc = ", encoder" if self.encode_fn is not None else ""
        guides = f", guides={sorted(self.guides)}" if self.guides else ""
        p = getattr(self, "prior", None)
        prior = "" if p is None else f", prior sites={list(p.names)}"
        return (
            f"VAE(latent_dim={self.latent_dim}, features={self.num_features}, "
            f"likelihood={type(self.likelihood).__name__}{enc}{guides}{prior})"
        )


def from_decoder(
    decode_fn: Callable,
    latent_dim: int,
    features: int | Sequence[str | Feature] | Schema,
    likelihood="gaussian",
    *,
    scale: float = 1.0,
    encode_fn: Callable | None = None,
    prior: Callable | None = None,
) -> VAE:
    """Wrap any decoder function as a queryable model.

    Parameters
    ----------
    decode_fn : callable
        ``z[..., d] -> params``, mapping a batch of latent codes to the
        likelihood's parameters. Accepted outputs:

        * ``"gaussian"``: the mean ``[..., D]`` (observation scale fixed to
          ``scale``); a dict ``{"loc": [..., D], "scale": [..., D]}``; or a
          tuple ``(loc, scale)`` of two ``[..., D]`` arrays. A tuple is read
          as ``{"loc": loc, "scale": scale}``: the model then holds a
          :class:`~vaequery.decoder_checks.GaussianTupleDecoder` wrapping ``decode_fn`` (an equinox
          module, so models stay hashable and compiled queries are reused).
        * ``"bernoulli"``: logits ``[..., D]``.
        * ``"categorical"``: logits ``[..., D, K]``, ``K`` the largest
          ``num_levels`` of the features.
        * ``"mixed"``: a dict with one entry per feature kind present, see
          :mod:`vaequery.likelihoods`.

        The decoder is checked once here: it is traced with
        :func:`jax.eval_shape` on ``z = zeros([2, d])`` (structure, shapes,
        floating dtype) and called once on that batch (values finite, Gaussian
        scales positive). Anything else raises a ``TypeError`` or
        ``ValueError`` showing what was returned and the accepted forms.
    latent_dim : int
        Dimension ``d`` of ``z``; the prior is ``N(0, I_d)`` unless ``prior``
        is given, and then ``d`` is the length of its flat vector.
    features : int, list of names/Features, or Schema
        Column names (or just their number, giving ``x0, x1, ...``).
    likelihood : str or Likelihood
        ``"gaussian"``, ``"bernoulli"``, ``"categorical"``, ``"mixed"`` or an
        instance. With ``"mixed"``, ``features`` must carry kinds.
    scale : float
        Fixed Gaussian observation scale.
    encode_fn : callable, optional
        ``x[..., D] -> (loc, scale)`` amortised encoder, both ``[..., d]``.
        Checked the same way on ``x = zeros([2, D])``: a tuple of two floating
        ``[2, d]`` arrays, finite, with ``scale > 0``.
    prior : callable, optional
        The latent prior as a NumPyro model ``prior()`` (no arguments) with
        one or several continuous sample sites on the real line, e.g. a
        hierarchy ``z1 ~ N(0, I)``, ``z2 | z1 ~ N(A z1, S)``. The query's
        NumPyro model runs it unchanged (the sites keep their names). The
        decoder, the encoder and every backend see one flat vector ``z [d]``:
        the sites' values **in sampling order**, each ravelled row-major and
        concatenated (:class:`vaequery.model.LatentPrior`); ``Posterior.z``
        stays that flat array and ``Posterior.z_sites`` splits it by site.
        Backends whose algorithm assumes ``N(0, I)`` (``grid``, ``mwg``,
        ``pseudo_gibbs``, ``feature_vi``, ``numpyro``, the amortized ones) refuse
        such a model. A model with a custom prior cannot be saved or pickled.

    Returns
    -------
    VAE

    Raises
    ------
    ValueError
        The decoder or encoder raised on the dummy batch, or returned the
        wrong shapes or non-finite values (or a non-positive scale).
    TypeError
        The decoder or encoder returned the wrong structure or a non-floating
        dtype.

    Examples
    --------
    >>> import jax.numpy as jnp, vaequery as vq
    >>> W = jnp.array([[1.0], [2.0], [0.5]])
    >>> vae = vq.from_decoder(lambda z: z @ W.T, latent_dim=1,
    ...                       features=["a", "b", "c"], scale=0.5)
    >>> vae.given(a=1.0).predict("b").target_mask.tolist()
    [[False, True, False]]
    """
    if isinstance(features, Schema):
        schema = features
    elif isinstance(features, int):
        schema = Schema.from_names([f"x{i}" for i in range(features)])
    else:
        schema = Schema(tuple(features))
    if likelihood == "bernoulli" and all(f.kind == "real" for f in schema):
        # names alone were given: a Bernoulli model's columns are binary
        schema = Schema(tuple(Feature(f.name, "binary") for f in schema))
    lik = make_likelihood(likelihood, schema, scale=scale)
    if int(latent_dim) < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
    latent_prior = None if prior is None else LatentPrior.from_fn(prior)
    if latent_prior is not None and latent_prior.dim != int(latent_dim):
        raise ValueError(
            f"latent_dim={latent_dim} but the latent prior's sites "
            f"{dict(zip(latent_prior.names, latent_prior.shapes))} hold {latent_prior.dim} "
            "numbers; latent_dim is the length of the flat latent vector the decoder receives"
        )
    if latent_prior is not None and latent_prior.constrained:
        # checked where the backends call it (unconstrained z = 0: every site inside
        # its support), then kept as the decoder of the sites' own values
        checked = check_decoder(
            ConstrainedDecoder(decode_fn, latent_prior), int(latent_dim), schema, lik
        )
        if isinstance(checked, GaussianTupleDecoder):
            decode_fn = GaussianTupleDecoder(decode_fn)
    else:
        decode_fn = check_decoder(decode_fn, int(latent_dim), schema, lik)
    if encode_fn is not None:
        check_encoder(encode_fn, int(latent_dim), len(schema))
    return VAE(decode_fn, latent_dim, schema, lik, encode_fn=encode_fn, prior=latent_prior)
