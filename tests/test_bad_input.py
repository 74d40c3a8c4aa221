"""Bad input everywhere: one table of what users get wrong, and the query DSL under hypothesis.

Every case either gives a defined answer (checked) or raises a ``ValueError`` /
``TypeError`` whose message names the row or feature and what is accepted,
never an error from deep inside JAX or NumPy (a tracer, a broadcast or a
reshape error). Inference, where a case needs it, runs the cheap ``"gaussian"``
backend with the same tiny settings so one compiled program serves them all.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vaequery as vq
from vaequery.schema import Feature, UnknownFeatureError
from vaequery.testing import LinearGaussian

NAMES = ["a", "b", "c", "d"]
ORACLE = LinearGaussian.random(3, num_features=4, latent_dim=2, sigma=0.5)
REAL = ORACLE.vae(names=NAMES)
SCHEMA = vq.Schema(
    (
        Feature("r"),
        Feature("flag", "binary"),
        Feature("colour", "categorical", num_levels=3, levels=("red", "green", "blue")),
    )
)


def _mixed_decoder(z):
    # tiny: the real head is z_0, the binary logit z_1, the colour logits a fixed mix
    cat = jnp.stack([z[..., 0], z[..., 1], -z[..., 0]], -1)[..., None, :]
    return {"real": z[..., :1], "binary": z[..., 1:2], "categorical": cat}


MIXED = vq.from_decoder(_mixed_decoder, latent_dim=2, features=SCHEMA, likelihood="mixed")
HP = dict(num_steps=3, num_samples=2, num_draws=2)


def _infer(q, **kw):
    return q.infer("gaussian", **{**HP, **kw})


def _frame(**cols):
    return pd.DataFrame({k: [v] for k, v in cols.items()})


def _x_equals(expected_raw, observed=None):
    """Check: the query holds ``expected_raw`` (raw units) where observed."""

    def check(q):
        exp = np.atleast_2d(np.asarray(expected_raw, float))
        obs = ~np.isnan(exp) if observed is None else np.atleast_2d(observed)
        assert q.observed_mask.tolist() == obs.tolist()
        raw = q.model.schema.unstandardise(q.x)
        np.testing.assert_allclose(raw[obs], exp[obs], rtol=1e-6)

    return check


def _shape(*shape):
    def check(out):
        z = out.z if isinstance(out, vq.Posterior) else out.x
        assert z.shape == shape, z.shape

    return check


ROW = [1.0, np.nan, 2.0, 3.0]

# (id, model, build, expected): expected is a check of the result (a defined
# answer) or (exception type, regex the message must match).
CASES = [
    # ---- feature names
    ("unknown name", REAL, lambda m: m.given(z=1.0), (ValueError, r"unknown feature 'z'.*Known")),
    ("unknown target", REAL, lambda m: m.given(a=1.0).predict("q"), (ValueError, r"'q'.*Known")),
    ("non-str target", REAL, lambda m: m.given(a=1.0).predict(3), (TypeError, r"strings.*int 3")),
    ("numpy str name", REAL, lambda m: m.given(a=1.0).predict(np.str_("b")), _shape(1, 4)),
    # ---- shapes
    ("too few columns", REAL, lambda m: m.given(np.zeros((2, 3))), (ValueError, r"\[N, 4\].*3\)")),
    ("too many columns", REAL, lambda m: m.given(np.zeros(5)), (ValueError, r"\[N, 4\] or \[4\]")),
    ("3-d evidence", REAL, lambda m: m.given(np.zeros((2, 2, 4))), (ValueError, r"\[N, 4\]")),
    ("scalar evidence", REAL, lambda m: m.given(3.0), (ValueError, r"\[N, 4\] or \[4\]")),
    ("ragged lists", REAL, lambda m: m.given([[1, 2, 3, 4], [1]]), (ValueError, "rectangular")),
    ("one row [D]", REAL, lambda m: m.given(np.array(ROW)), _x_equals(ROW)),
    ("one row [1, D]", REAL, lambda m: m.given(np.array([ROW])), _x_equals([ROW])),
    ("many rows", REAL, lambda m: m.given(np.array([ROW] * 3)), _x_equals([ROW] * 3)),
    ("list of floats", REAL, lambda m: m.given(ROW), _x_equals(ROW)),
    ("empty batch N=0", REAL, lambda m: _infer(m.given(np.zeros((0, 4)))), _shape(0, 2, 2)),
    # ---- dtypes
    ("int evidence", REAL, lambda m: m.given(np.array([1, 2, 3, 4])), _x_equals([1, 2, 3, 4])),
    ("float32", REAL, lambda m: m.given(np.array(ROW, np.float32)), _x_equals(ROW)),
    ("float64", REAL, lambda m: m.given(np.array(ROW, np.float64)), _x_equals(ROW)),
    ("jax array", REAL, lambda m: m.given(jnp.array([1.0, 2, 3, 4])), _x_equals([1, 2, 3, 4])),
    ("None is unobserved", REAL, lambda m: m.given([1.0, None, 2, 3]), _x_equals(ROW)),
    ("bool evidence", REAL, lambda m: m.given(np.ones(4, bool)), _x_equals([1, 1, 1, 1])),
    (
        "string cell",
        REAL,
        lambda m: m.given(np.array([["1", "x", "2", "3"]])),
        (TypeError, r"feature 'b' in row 0 must be a number"),
    ),
    ("complex", REAL, lambda m: m.given(np.ones(4, complex)), (TypeError, "real numbers")),
    ("named string", REAL, lambda m: m.given(a="high"), (TypeError, "'a' must be a number")),
    ("named array", REAL, lambda m: m.given(a=np.ones(2)), (TypeError, "'a' must be a number")),
    (
        "named NaN is unobserved",
        REAL,
        lambda m: m.given(a=np.nan, b=1.0),
        _x_equals([np.nan, 1.0, np.nan, np.nan]),
    ),
    # ---- non-finite evidence
    (
        "inf observed",
        REAL,
        lambda m: m.given(np.array([[0.0, 0, 0, 0], [0, 0, np.inf, 0]])),
        (ValueError, r"feature 'c' in row 1 is inf; .*finite"),
    ),
    ("-inf named", REAL, lambda m: m.given(d=-np.inf), (ValueError, r"'d' in row 0 is -inf")),
    (
        "NaN declared observed",
        REAL,
        lambda m: m.given(np.array(ROW), observed=np.ones(4, bool)),
        (ValueError, r"'b' in row 0 is nan; .*NaN only for unobserved"),
    ),
    # ---- masks
    (
        "observed mask [D] for a batch",
        REAL,
        lambda m: m.given(np.zeros((2, 4)), observed=[True, False, True, True]),
        lambda q: q.observed_mask.tolist() == [[True, False, True, True]] * 2 or pytest.fail(),
    ),
    (
        "observed mask of 0/1",
        REAL,
        lambda m: m.given(np.zeros(4), observed=np.array([1, 0, 0, 1])),
        lambda q: q.observed_mask.tolist() == [[True, False, False, True]] or pytest.fail(),
    ),
    (
        "observed mask of 2s",
        REAL,
        lambda m: m.given(np.zeros(4), observed=np.array([2, 0, 0, 1])),
        (ValueError, r"observed mask must hold booleans \(or 0/1\)"),
    ),
    (
        "observed mask wrong shape",
        REAL,
        lambda m: m.given(np.zeros((2, 4)), observed=np.ones((2, 3), bool)),
        (ValueError, r"observed mask has shape \(2, 3\); accepted: \[2, 4\].* or \[4\]"),
    ),
    (
        "target mask wrong shape",
        REAL,
        lambda m: m.given(np.full((2, 4), np.nan)).predict(target=np.ones(3, bool)),
        (ValueError, r"target mask has shape \(3,\); accepted: \[2, 4\]"),
    ),
    (
        "observed and target",
        REAL,
        lambda m: m.given(np.array([ROW, ROW])).predict(target=np.ones(4, bool)),
        (ValueError, r"'a' is both observed and a target in row 0"),
    ),
    ("array and names", REAL, lambda m: m.given(np.zeros(4), a=1.0), (TypeError, "not both")),
    # ---- pandas
    (
        "frame, columns reordered",
        REAL,
        lambda m: m.given(_frame(d=3.0, c=2.0, b=np.nan, a=1.0)),
        _x_equals(ROW),
    ),
    (
        "frame with an extra column",
        REAL,
        lambda m: m.given(_frame(a=1.0, b=2.0, c=3.0, d=4.0, id=7)),
        (ValueError, r"unknown \['id'\]\. Accepted: exactly the columns \['a', 'b', 'c', 'd'\]"),
    ),
    (
        "frame missing columns",
        REAL,
        lambda m: m.given(_frame(a=1.0, b=2.0)),
        (ValueError, r"missing \['c', 'd'\].*add a missing one as a NaN column"),
    ),
    (
        "frame with a string cell",
        REAL,
        lambda m: m.given(_frame(a=1.0, b="x", c=3.0, d=4.0)),
        (TypeError, r"'b' in row 0 must be a number"),
    ),
    (
        "series by name",
        REAL,
        lambda m: m.given(pd.Series({"d": 3.0, "a": 1.0, "b": np.nan, "c": 2.0})),
        _x_equals(ROW),
    ),
    # ---- binary / categorical
    ("binary 2", MIXED, lambda m: m.given(flag=2), (ValueError, r"'flag' .* 2\.0; .*0 or 1")),
    (
        "binary -1 in row 1",
        MIXED,
        lambda m: m.given(np.array([[0.0, 1, 0], [0.0, -1, 0]])),
        (ValueError, r"'flag' \(binary\) in row 1 has value -1\.0; accepted values are 0 or 1"),
    ),
    (
        "categorical 1.5",
        MIXED,
        lambda m: m.given(colour=1.5),
        (ValueError, r"'colour' .* 1\.5; accepted values are integers 0\.\.2"),
    ),
    ("categorical 3", MIXED, lambda m: m.given(colour=3), (ValueError, r"integers 0\.\.2")),
    (
        "categorical unknown level",
        MIXED,
        lambda m: m.given(colour="purple"),
        (ValueError, r"'colour' .* no level 'purple'; accepted: .*\['red', 'green', 'blue'\]"),
    ),
    (
        "categorical level name",
        MIXED,
        lambda m: m.given(colour="blue"),
        _x_equals([np.nan, np.nan, 2]),
    ),
    (
        "level names in a frame",
        MIXED,
        lambda m: m.given(_frame(r=0.5, flag=1, colour="green")),
        _x_equals([0.5, 1, 1]),
    ),
    (
        "binary without level names",
        MIXED,
        lambda m: m.given(flag="yes"),
        (ValueError, r"'flag' .* no level 'yes'; accepted: integer codes 0\.\.1"),
    ),
    (
        "ints for a mixed model",
        MIXED,
        lambda m: m.given(np.array([[0, 1, 2], [1, 0, 1]])),
        _x_equals([[0, 1, 2], [1, 0, 1]]),
    ),
    # ---- keys
    (
        "key float",
        REAL,
        lambda m: _infer(m.given(a=1.0), key=1.5),
        (TypeError, r"key must be .*accepted: an int"),
    ),
    (
        "key str",
        REAL,
        lambda m: _infer(m.given(a=1.0), key="0"),
        (TypeError, "accepted: an int seed"),
    ),
    (
        "key None",
        REAL,
        lambda m: _infer(m.given(a=1.0), key=None),
        (TypeError, "accepted: an int seed"),
    ),
    (
        "key bool",
        REAL,
        lambda m: _infer(m.given(a=1.0), key=True),
        (TypeError, "accepted: an int seed"),
    ),
    ("key 2**70", REAL, lambda m: _infer(m.given(a=1.0), key=2**70), (TypeError, "64-bit")),
    (
        "several keys",
        REAL,
        lambda m: _infer(m.given(a=1.0), key=jax.random.split(jax.random.key(0), 2)),
        (TypeError, r"single PRNG key, got an array of shape \(2,\)"),
    ),
    (
        "uint32 [3]",
        REAL,
        lambda m: _infer(m.given(a=1.0), key=np.zeros(3, np.uint32)),
        (TypeError, "PRNGKey"),
    ),
    # ---- hyper-parameters of the wrong type or value
    (
        "num_steps float",
        REAL,
        lambda m: _infer(m.given(a=1.0), num_steps=2.5),
        (ValueError, r"num_steps must be an integer >= 1"),
    ),
    (
        "num_steps str",
        REAL,
        lambda m: _infer(m.given(a=1.0), num_steps="3"),
        (ValueError, "num_steps must be an integer"),
    ),
    (
        "num_samples 0",
        REAL,
        lambda m: _infer(m.given(a=1.0), num_samples=0),
        (ValueError, "num_samples must be"),
    ),
    (
        "learning_rate str",
        REAL,
        lambda m: _infer(m.given(a=1.0), learning_rate="fast"),
        (ValueError, "learning_rate must be a positive number or an optax"),
    ),
    (
        "beta negative",
        REAL,
        lambda m: _infer(m.given(a=1.0), beta=-1.0),
        (ValueError, "beta must be a positive"),
    ),
    (
        "unknown hyper-parameter",
        REAL,
        lambda m: _infer(m.given(a=1.0), num_stepz=3),
        (TypeError, r"no hyper-parameter.*accepted"),
    ),
    (
        "num_draws 0",
        REAL,
        lambda m: _infer(m.given(a=1.0), num_draws=0),
        (ValueError, r"num_draws must be an integer >= 1"),
    ),
    (
        "num_draws float",
        REAL,
        lambda m: _infer(m.given(a=1.0), num_draws=2.5),
        (TypeError, r"num_draws must be an integer >= 1 .*float"),
    ),
    (
        "chunk_size str",
        REAL,
        lambda m: _infer(m.given(a=1.0), chunk_size="2"),
        (TypeError, r"chunk_size must be an integer"),
    ),
    (
        "chunk_size 0",
        REAL,
        lambda m: _infer(m.given(a=1.0), chunk_size=0),
        (ValueError, r"chunk_size must be an integer >= 1"),
    ),
    (
        "on_error unknown",
        REAL,
        lambda m: _infer(m.given(a=1.0), on_error="skip"),
        (ValueError, r"on_error must be one of"),
    ),
    (
        "unknown backend",
        REAL,
        lambda m: m.given(a=1.0).infer("nope"),
        (ValueError, r"unknown backend 'nope'; available"),
    ),
]


@pytest.mark.parametrize(
    "model, build, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(model, build, expected):
    if isinstance(expected, tuple):
        exc, match = expected
        with pytest.raises(exc, match=match) as info:
            build(model)
        # the message is for people: no JAX tracer or NumPy broadcast wording
        assert not any(w in str(info.value) for w in ("Tracer", "broadcast", "reshape"))
    else:
        expected(build(model))


def test_unknown_feature_is_a_key_error_too():
    # existing code may catch KeyError; new code may catch ValueError
    with pytest.raises(KeyError):
        REAL.given(z=1.0)
    with pytest.raises(UnknownFeatureError, match="^unknown feature 'z'"):
        REAL.given(z=1.0)


def test_every_accepted_key_form_gives_the_same_answer():
    q = REAL.given(np.array([ROW, ROW]))
    ref = _infer(q, key=3)
    for key in (np.int64(3), jax.random.key(3), jax.random.PRNGKey(3)):
        np.testing.assert_array_equal(_infer(q, key=key).z, ref.z)


def test_one_row_and_many_rows_agree():
    one = _infer(REAL.given(np.array(ROW)), key=5)
    many = _infer(REAL.given(np.array([ROW, [0.0, 1, np.nan, np.nan]])), key=5)
    assert one.query.single and not many.query.single
    # row 0 gets the same key either way (split(key, N)[0] does not depend on N)
    np.testing.assert_allclose(one.z[0], many.z[0], rtol=1e-6, atol=1e-6)


def test_dtypes_give_one_query():
    ints = np.array([[1, 2, 3, 4], [0, -1, 2, 5]])
    qs = [REAL.given(ints.astype(t)) for t in (int, np.int32, np.float32, np.float64)]
    for q in qs[1:]:
        np.testing.assert_array_equal(q.x, qs[0].x)
        assert q.x.dtype == np.float32


# ------------------------------------------------------------------ hypothesis
@st.composite
def evidence(draw):
    """A random batch ``[N, 4]`` (or one row ``[4]``) of some dtype with NaN holes."""
    n = draw(st.integers(0, 4))
    one_row = draw(st.booleans())
    shape = (4,) if one_row else (n, 4)
    dtype = draw(st.sampled_from(["float64", "float32", "int64", "int32", "bool"]))
    flat = draw(
        st.lists(st.integers(-5, 5), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
    )
    x = np.array(flat, dtype=dtype).reshape(shape)
    holes = np.array(draw(st.lists(st.booleans(), min_size=x.size, max_size=x.size)), bool)
    if dtype.startswith("float"):
        x = np.where(holes.reshape(shape), np.nan, x).astype(dtype)
    return x, holes.reshape(shape)


FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(evidence())
def test_any_numeric_evidence_gives_a_matching_query(xh):
    x, holes = xh
    q = REAL.given(x)
    exp_obs = (
        ~np.atleast_2d(holes) if x.dtype.kind == "f" else np.ones(np.atleast_2d(x).shape, bool)
    )
    assert q.observed_mask.tolist() == exp_obs.tolist()
    assert q.single == (x.ndim == 1)
    assert (q.target_mask == ~q.observed_mask).all()
    assert np.isfinite(q.x).all() and (q.x[~q.observed_mask] == 0).all()
    raw = q.model.schema.unstandardise(q.x)
    np.testing.assert_allclose(
        raw[exp_obs], np.atleast_2d(x).astype(float)[exp_obs], rtol=1e-5, atol=1e-5
    )
    t = q.target()  # the backends' view: one row per query, no inference run
    assert t.data["x"].shape == q.x.shape and t.num_queries == q.num_queries


@FEW
@given(
    st.integers(0, 3),
    st.lists(st.booleans(), min_size=1, max_size=12),
    st.lists(st.booleans(), min_size=1, max_size=12),
    st.sampled_from([bool, int, float]),
)
def test_random_masks_give_a_query_or_a_clear_error(n, obs_bits, tgt_bits, mask_type):
    obs = np.resize(np.array(obs_bits), (n, 4) if len(obs_bits) > 4 else (4,)).astype(mask_type)
    tgt = np.resize(np.array(tgt_bits), (n, 4) if len(tgt_bits) > 4 else (4,)).astype(mask_type)
    x = np.zeros((n, 4))
    q = REAL.given(x, observed=obs)
    obs_b = np.broadcast_to(np.asarray(obs, bool), (n, 4))
    assert q.observed_mask.tolist() == obs_b.tolist()
    tgt_b = np.broadcast_to(np.asarray(tgt, bool), (n, 4))
    if (obs_b & tgt_b).any():
        r, c = np.argwhere(obs_b & tgt_b)[0]
        with pytest.raises(
            ValueError, match=f"'{NAMES[c]}' is both observed and a target in row {r}"
        ):
            q.predict(target=tgt)
    else:
        q2 = q.predict(target=tgt)
        assert q2.target_mask.tolist() == tgt_b.tolist()
        assert q2.observed_mask.tolist() == obs_b.tolist()


@FEW
@given(
    st.tuples(st.integers(0, 3), st.integers(0, 6)), st.sampled_from(["float32", "int16", "bool"])
)
def test_random_shapes_give_a_query_or_name_the_accepted_shape(shape, dtype):
    x = np.zeros(shape, dtype)
    if shape[1] == 4:
        assert REAL.given(x).x.shape == shape
    else:
        with pytest.raises(ValueError, match=r"shape \[N, 4\] or \[4\].*got shape"):
            REAL.given(x)


@FEW
@given(st.lists(st.sampled_from(NAMES + ["e", "A"]), min_size=0, max_size=3, unique=True))
def test_random_names_query_or_name_the_unknown_feature(names):
    values = {n: 1.0 for n in names}
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        with pytest.raises(ValueError, match=f"unknown feature '{unknown[0]}'"):
            REAL.given(**values)
        return
    q = REAL.given(**values)
    assert q.observed_mask[0].tolist() == [n in names for n in NAMES]
    assert q.single and q.num_queries == 1
