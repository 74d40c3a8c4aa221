"""``from_decoder`` checks the decoder and encoder once, and reads ``(loc, scale)`` tuples.

A Gaussian decoder returning a ``(loc, scale)`` tuple used to be stacked by the
likelihood into one ``[2, D]`` "mean" with the default scale 1: every posterior
was silently wrong. It is now wrapped so the likelihood sees
``{"loc": loc, "scale": scale}``; anything else that does not fit the likelihood
is refused with a message showing what came back and the accepted forms.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import vaequery as vq
from vaequery.backends.fullrank import FullRank
from vaequery.decoder_checks import GaussianTupleDecoder
from vaequery.schema import Feature
from vaequery.testing import LinearGaussian

D, d = 8, 3


def _tuple_decoder(oracle):
    def decode(z):
        loc = oracle.decode(z)
        return loc, oracle.sigma * jnp.ones_like(loc)

    return decode


@pytest.mark.parametrize("seed, sigma", [(0, 0.5), (1, 0.3)])
def test_tuple_decoder_gives_the_exact_posterior(seed, sigma):
    # Before the fix the tuple was stacked into a [2, D] "loc" with scale 1:
    # the observation noise was read as 1 instead of sigma, so the posterior
    # precision I + W_O^T W_O / sigma^2 lost a factor 1/sigma^2 (4x and 11x
    # here). Measured on the old reading: fitted variances up to 3.3x (sigma 0.5)
    # and 8.5x (sigma 0.3) too large, means off by up to 1.4 and 2.9 posterior
    # sds, far outside the tolerances below.
    oracle = LinearGaussian.random(seed, num_features=D, latent_dim=d, sigma=sigma)
    vae = vq.from_decoder(_tuple_decoder(oracle), d, D)
    assert isinstance(vae.decode_fn, GaussianTupleDecoder)
    hash(vae.decode_fn)  # a module, not a closure: models stay hashable

    _, x = oracle.sample(seed + 10, 16)
    observed = np.random.default_rng(seed).random(x.shape) < 0.5
    post = vae.given(np.where(observed, x, np.nan)).infer("fullrank", num_steps=300, key=0)
    mu, cov = oracle.posterior(x, observed)
    var = np.diagonal(cov, axis1=1, axis2=2)

    L = np.asarray(FullRank.cholesky(post.state), float)
    fitted_var = np.diagonal(L @ np.swapaxes(L, -1, -2), axis1=1, axis2=2)
    loc = np.asarray(post.state["loc"], float)
    # means: as accurate as the average of 1000 exact draws (4 sd / sqrt(1000))
    assert (np.abs(loc - mu) / np.sqrt(var)).max() < 4 / np.sqrt(1000)
    assert np.abs(fitted_var / var - 1).max() < 0.15
    # the draws agree too (100 draws per row: 4 standard errors)
    z_err = (post.z.mean(1) - mu) / np.sqrt(var / post.z.shape[1])
    assert np.abs(z_err).max() < 4.5


def test_tuple_decoder_matches_the_dict_form():
    oracle = LinearGaussian.random(0, num_features=D, latent_dim=d, sigma=0.5)
    tup = vq.from_decoder(_tuple_decoder(oracle), d, D)
    z = jnp.linspace(-1, 1, 2 * d).reshape(2, d)
    loc, scale = _tuple_decoder(oracle)(z)
    params = tup.decode_fn(z)
    assert set(params) == {"loc", "scale"}
    np.testing.assert_allclose(params["loc"], loc)
    np.testing.assert_allclose(params["scale"], scale)
    x = np.asarray(loc)
    mask = np.ones((2, D), bool)
    np.testing.assert_allclose(
        tup.likelihood.log_prob(x, params, mask),
        oracle.vae().likelihood.log_prob(x, loc, mask),
        rtol=1e-5,
    )


def _W():
    return jnp.asarray(np.random.default_rng(0).standard_normal((d, D)), jnp.float32)


def _ones(z, n=D):
    return jnp.ones(z.shape[:-1] + (n,))


GAUSSIAN_FORMS = (
    r"Accepted forms: the mean \[\.\.\., 8\]; a dict .*'loc'.*'scale'.*\(loc, scale\) tuple"
)

BAD_DECODERS = {
    "wrong D": (lambda z: z @ _W()[:, :5], "gaussian", r"mean has D = 5 .*expected D = 8"),
    "three-tuple": (
        lambda z: (z @ _W(), _ones(z), _ones(z)),
        "gaussian",
        r"must be \(loc, scale\), got 3 elements.*\(float32\[2, 8\], float32\[2, 8\], float32",
    ),
    "tuple wrong D": (
        lambda z: (z @ _W(), _ones(z, 7)),
        "gaussian",
        r"scale \(tuple element 1\) has D = 7",
    ),
    "dict keys": (
        lambda z: {"mean": z @ _W(), "std": _ones(z)},
        "gaussian",
        r"dict has keys \['mean', 'std'\]; expected exactly 'loc' and 'scale'",
    ),
    "integer dtype": (
        lambda z: (z @ _W()).astype(jnp.int32),
        "gaussian",
        r"mean has dtype int32; it must be floating point.*returned int32\[2, 8\]",
    ),
    "no batch axis": (
        lambda z: jnp.ones(D),
        "gaussian",
        r"mean has 1 axis, shape \[8\]; expected \[\.\.\., D\] = \[2, 8\]",
    ),
    "nan at z=0": (
        lambda z: z @ _W() * jnp.nan,
        "gaussian",
        r"not finite at z = 0 \(16 of 16 entries",
    ),
    "log-scale": (
        lambda z: (z @ _W(), -_ones(z)),
        "gaussian",
        r"scale must be > 0, got min -1 at z = 0 \(if it is a log-scale",
    ),
    "bernoulli wrong D": (
        lambda z: z[..., :2],
        "bernoulli",
        r"Bernoulli likelihood.*logits has D = 2 .*Accepted forms: logits \[\.\.\., 8\]",
    ),
    "bernoulli tuple": (
        lambda z: (z @ _W(), _ones(z)),
        "bernoulli",
        r"logits is a tuple, not an array.*Accepted forms: logits \[\.\.\., 8\]",
    ),
}


@pytest.mark.parametrize("name", list(BAD_DECODERS))
def test_bad_decoders_are_refused(name):
    fn, lik, match = BAD_DECODERS[name]
    with pytest.raises((ValueError, TypeError), match=match) as err:
        vq.from_decoder(fn, d, D, lik)
    msg = str(err.value)
    assert "On z of shape [2, 3] it returned" in msg
    assert "Accepted forms:" in msg
    if lik == "gaussian":
        assert err.match(GAUSSIAN_FORMS)


def test_decoder_that_raises_is_reported_with_the_cause():
    oracle = LinearGaussian.random(0, num_features=D, latent_dim=d)
    with pytest.raises(ValueError, match=r"decoder failed on z of shape \[2, 5\]") as err:
        vq.from_decoder(oracle.decode, 5, D)  # latent_dim 5, but W is [8, 3]
    assert err.value.__cause__ is not None


CAT_SCHEMA = vq.Schema(tuple(Feature(f"c{i}", "categorical", num_levels=3) for i in range(2)))
MIXED_SCHEMA = vq.Schema(
    (Feature("r"), Feature("flag", "binary"), Feature("colour", "categorical", num_levels=3))
)


@pytest.mark.parametrize(
    "fn, schema, lik, match",
    [
        (
            lambda z: jnp.stack([z @ jnp.ones((d, 4)), -z @ jnp.ones((d, 4))], -2),
            CAT_SCHEMA,
            "categorical",
            r"logits has K = 4 .*expected K = 3"
            r".*Accepted forms: logits \[\.\.\., 2, K\] with K = 3",
        ),
        (
            lambda z: z[..., :2],
            CAT_SCHEMA,
            "categorical",
            r"logits has 2 axes, shape \[2, 2\]; expected \[\.\.\., D, K\] = \[2, 2, 3\]",
        ),
        (
            lambda z: {"real": z[..., :2], "binary": z[..., :1], "categorical": z[..., None, :]},
            MIXED_SCHEMA,
            "mixed",
            r"'real' mean has D = 2 .*expected D = 1.*Accepted forms: a dict \{'real'",
        ),
        (
            lambda z: {"real": z[..., :1]},
            MIXED_SCHEMA,
            "mixed",
            r"expected a dict with keys \['binary', 'categorical', 'real'\], got \['real'\]",
        ),
    ],
)
def test_bad_categorical_and_mixed_decoders(fn, schema, lik, match):
    with pytest.raises((ValueError, TypeError), match=match):
        vq.from_decoder(fn, d, schema, lik)


def _oracle_decode(z):
    return LinearGaussian.random(0, num_features=D, latent_dim=d).decode(z)


BAD_ENCODERS = {
    "dict": (
        lambda x: {"loc": x[..., :3], "scale": _ones(x, 3)},
        TypeError,
        r"expected a \(loc, scale\) tuple, got dict.*returned \{'loc': float32\[2, 3\]",
    ),
    "single array": (lambda x: x[..., :3], TypeError, r"got a single array"),
    "wrong d": (
        lambda x: (x[..., :2], _ones(x, 2)),
        ValueError,
        r"loc has d = 2 \(shape \[2, 2\]\); expected d = 3",
    ),
    "no batch": (
        lambda x: (jnp.zeros(3), jnp.ones(3)),
        ValueError,
        r"loc has 1 axis, shape \[3\]; expected \[\.\.\., d\] = \[2, 3\]",
    ),
    "negative scale": (
        lambda x: (x[..., :3], -_ones(x, 3)),
        ValueError,
        r"scale must be > 0, got min -1 at x = 0",
    ),
    "nan": (
        lambda x: (x[..., :3] * jnp.nan, _ones(x, 3)),
        ValueError,
        r"\[0\] is not finite at x = 0",
    ),
    "integer": (
        lambda x: (x[..., :3].astype(jnp.int32), _ones(x, 3)),
        TypeError,
        r"loc has dtype int32; it must be floating point",
    ),
    "raises": (
        lambda x: x @ jnp.ones((5, 3)),
        ValueError,
        r"encoder failed on x of shape \[2, 8\]",
    ),
}


@pytest.mark.parametrize("name", list(BAD_ENCODERS))
def test_bad_encoders_are_refused(name):
    fn, exc, match = BAD_ENCODERS[name]
    with pytest.raises(exc, match=match) as err:
        vq.from_decoder(_oracle_decode, d, D, encode_fn=fn)
    if name != "raises":
        assert err.match(r"Accepted forms: a \(loc, scale\) tuple of two arrays \[\.\.\., 3\]")
    else:
        assert err.value.__cause__ is not None


def test_good_forms_are_accepted():
    oracle = LinearGaussian.random(0, num_features=D, latent_dim=d, sigma=0.5)
    z = jnp.zeros((4, d))
    mean = vq.from_decoder(oracle.decode, d, D, scale=0.5, encode_fn=oracle.encoder())
    assert mean.decode_fn == oracle.decode  # not wrapped
    assert mean.encode_fn is not None
    as_dict = vq.from_decoder(lambda z: {"loc": oracle.decode(z), "scale": jnp.full(D, 0.5)}, d, D)
    tup = vq.from_decoder(_tuple_decoder(oracle), d, D)
    for vae in (mean, as_dict, tup):
        np.testing.assert_allclose(vae.decode_mean(z), oracle.decode(z), rtol=1e-6)

    bern = vq.from_decoder(lambda z: z @ _W(), d, D, "bernoulli")
    assert bern.decode_mean(z).shape == (4, D)

    # categorical: K must be the features' num_levels (-inf on unused levels is fine)
    schema = vq.Schema(
        (Feature("a", "categorical", num_levels=3), Feature("b", "categorical", num_levels=2))
    )

    def cat(z):
        b = jnp.concatenate([z[..., :2], jnp.full(z.shape[:-1] + (1,), -jnp.inf)], -1)
        return jnp.stack([z[..., :3], b], -2)

    catvae = vq.from_decoder(cat, d, schema, "categorical")
    assert catvae.decode_mean(z).shape == (4, 2)

    mixed = vq.from_decoder(
        lambda z: {
            "real": {"loc": z[..., :1], "scale": _ones(z, 1)},
            "binary": z[..., 1:2],
            "categorical": z[..., None, :3],
        },
        d,
        MIXED_SCHEMA,
        "mixed",
    )
    assert mixed.decode_mean(z).shape == (4, 3)


def test_equal_tuple_models_share_a_hashable_decoder():
    oracle = LinearGaussian.random(0, num_features=D, latent_dim=d)
    fn = _tuple_decoder(oracle)
    a, b = vq.from_decoder(fn, d, D), vq.from_decoder(fn, d, D)
    assert a.decode_fn == b.decode_fn and hash(a.decode_fn) == hash(b.decode_fn)
