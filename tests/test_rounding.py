"""Tests for ``adamspec.oracles.rounding``: correct rounding of exact rationals.

References used, all independent of the code under test:

* NumPy's ``astype`` from float64 to float32 / float16 (correctly rounded, ties to even,
  straight from binary64);
* ``ml_dtypes`` float32 -> bfloat16 (round to nearest even).  Its float64 -> bfloat16
  path goes through float32 and so double-rounds; it is *not* used as a reference for
  float64 inputs: those use round-to-odd into float32 followed by ml_dtypes (exact,
  because 24 >= 8 + 2);
* ``Fraction.__float__`` (CPython's correctly rounded integer true division) for float64;
* the format's own definition (``finfo`` limits, midpoints and the even-significand rule).
"""

from __future__ import annotations

import math
from fractions import Fraction

import gmpy2
import ml_dtypes
import numpy as np
import pytest
from float_helpers import ALL, FINFO, from_bits, to_bits
from hypothesis import assume, given
from hypothesis import strategies as st

from adamspec.oracles.rounding import (
    exact_of_float,
    format_of_dtype,
    hex_float,
    numpy_dtype,
    round_exact,
    round_to_numpy,
    rounding_is_certain,
    ulp_of_exact,
)
from adamspec.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FloatFormat

NARROW = [FLOAT32, FLOAT16, BFLOAT16]


# ----------------------------------------------------------------- test helpers


def same_bits(a: object, b: object, fmt: FloatFormat) -> bool:
    return to_bits(a, fmt) == to_bits(b, fmt)


def next_up(v: np.generic, fmt: FloatFormat) -> np.generic:
    """The next representable value towards +inf, by sign-magnitude bit arithmetic."""
    bits = to_bits(v, fmt)
    sign = 1 << (fmt.bits - 1)
    if bits in (0, sign):  # +0 or -0
        return from_bits(1, fmt)
    return from_bits(bits + 1 if bits < sign else bits - 1, fmt)


def finite_values(fmt: FloatFormat) -> st.SearchStrategy[np.generic]:
    """Any finite value of ``fmt``, drawn from its bit patterns."""
    return (
        st.integers(0, 2**fmt.bits - 1)
        .map(lambda b: from_bits(b, fmt))
        .filter(lambda v: math.isfinite(float(v)))
    )


def float64_near(fmt: FloatFormat) -> st.SearchStrategy[float]:
    """float64 values whose magnitude lies around ``fmt``'s range (subnormals to overflow)."""
    return st.builds(
        lambda neg, e, m: math.ldexp(-m if neg else m, e - 52),
        st.booleans(),
        st.integers(fmt.quantum_exponent_min - 3, fmt.emax + 2),
        st.integers(2**52, 2**53 - 1),
    )


def any_float64(fmt: FloatFormat) -> st.SearchStrategy[float]:
    return st.one_of(st.floats(allow_nan=False, allow_infinity=False), float64_near(fmt))


def even_significand(v: np.generic, fmt: FloatFormat) -> bool:
    return to_bits(v, fmt) & 1 == 0


def round_to_odd_float32(x: float) -> np.float32:
    """float64 -> float32 rounded to odd (the odd neighbour unless exact); no overflow to inf."""
    y = np.float32(x) if abs(x) <= float(FINFO["float32"].max) else None
    if y is None or not math.isfinite(float(y)):
        return np.float32(math.copysign(float(FINFO["float32"].max), x))
    if float(y) == x or to_bits(y, FLOAT32) & 1:
        return y
    return np.nextafter(y, np.float32(math.copysign(math.inf, x - float(y))))


# ----------------------------------------------------------------- agreement with references


@pytest.mark.parametrize("fmt", [FLOAT32, FLOAT16], ids=lambda f: f.name)
@given(data=st.data())
def test_matches_numpy_cast_from_float64(fmt: FloatFormat, data: st.DataObject) -> None:
    x = data.draw(any_float64(fmt))
    assume(x != 0)  # exact zero is +0.0 by definition; numpy keeps the sign of -0.0
    with np.errstate(over="ignore"):
        expected = np.float64(x).astype(numpy_dtype(fmt))
    got = round_to_numpy(Fraction(x), fmt)
    assert same_bits(got, expected, fmt), (x.hex(), hex_float(got), hex_float(expected))


@given(x=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_bfloat16_matches_ml_dtypes_from_float32(x: float) -> None:
    assume(x != 0)
    expected = np.float32(x).astype(ml_dtypes.bfloat16)
    got = round_to_numpy(Fraction(x), BFLOAT16)
    assert same_bits(got, expected, BFLOAT16), (x.hex(), hex_float(got), hex_float(expected))


@given(x=any_float64(BFLOAT16))
def test_bfloat16_from_float64_via_round_to_odd(x: float) -> None:
    assume(x != 0)
    expected = round_to_odd_float32(x).astype(ml_dtypes.bfloat16)
    got = round_to_numpy(Fraction(x), BFLOAT16)
    assert same_bits(got, expected, BFLOAT16), (x.hex(), hex_float(got), hex_float(expected))


def test_bfloat16_no_double_rounding() -> None:
    # Just above the midpoint 1 + 2**-8 of 1 and 1 + 2**-7, but float32 rounding would
    # first collapse it onto the midpoint (and then to 1.0, the even neighbour).
    x = 1 + Fraction(1, 2**8) + Fraction(1, 2**30)
    assert round_exact(x, BFLOAT16) == 1 + 2**-7
    assert round_exact(x - Fraction(1, 2**29), BFLOAT16) == 1.0


@given(
    n=st.integers(-(2**1100), 2**1100),
    d=st.integers(1, 2**1100),
    e=st.integers(-1200, 1100),
)
def test_float64_matches_fraction_float(n: int, d: int, e: int) -> None:
    x = Fraction(n, d) * Fraction(2) ** e
    try:
        expected = float(x)
    except OverflowError:
        expected = math.inf if x > 0 else -math.inf
    got = round_exact(x, FLOAT64)
    assert same_bits(got, expected, FLOAT64), (x, got.hex(), expected.hex())


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(n=st.integers(-(2**300), 2**300), d=st.integers(1, 2**300))
def test_mpq_and_fraction_agree(fmt: FloatFormat, n: int, d: int) -> None:
    expected = round_exact(Fraction(n, d), fmt)
    assert same_bits(round_exact(gmpy2.mpq(n, d), fmt), expected, fmt)


def test_floats_are_refused_as_exact_values() -> None:
    with pytest.raises(TypeError, match="exact_of_float"):
        round_exact(0.1, FLOAT32)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        round_exact(np.float32(0.1), FLOAT32)  # type: ignore[arg-type]


# ----------------------------------------------------------------- midpoints and ties


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(data=st.data())
def test_midpoints_round_to_even(fmt: FloatFormat, data: st.DataObject) -> None:
    a = data.draw(finite_values(fmt))
    b = next_up(a, fmt)
    assume(math.isfinite(float(b)))
    lo, hi = exact_of_float(a), exact_of_float(b)
    mid = (lo + hi) / 2
    even = a if even_significand(a, fmt) else b
    assert even_significand(a, fmt) != even_significand(b, fmt)
    expected = float(even)
    if expected == 0:
        expected = math.copysign(0.0, mid) if mid != 0 else 0.0
    assert same_bits(round_exact(mid, fmt), expected, fmt), (hex_float(a), hex_float(b))
    if fmt is not FLOAT64:  # the midpoint is a float64, so numpy must agree too
        with np.errstate(over="ignore"):
            assert float(np.float64(float(mid)).astype(numpy_dtype(fmt))) == float(even)
    # A hair off the midpoint decides the other way round, whatever the parity.
    hair = (hi - lo) / 2**200
    assert round_exact(mid - hair, fmt) == float(a)
    assert round_exact(mid + hair, fmt) == float(b)


# ----------------------------------------------------------------- overflow and underflow


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_overflow_threshold(fmt: FloatFormat) -> None:
    max_finite = Fraction(float(FINFO[fmt.name].max))
    spacing = Fraction(2) ** (fmt.emax - fmt.precision + 1)
    threshold = max_finite + spacing / 2  # (2 - 2**-p) * 2**emax
    assert threshold == (2 - Fraction(1, 2**fmt.precision)) * Fraction(2) ** fmt.emax
    tiny = Fraction(1, 2**2000)
    for sign in (1, -1):
        assert round_exact(sign * max_finite, fmt) == sign * float(max_finite)
        assert round_exact(sign * (threshold - tiny), fmt) == sign * float(max_finite)
        assert round_exact(sign * threshold, fmt) == sign * math.inf
        assert round_exact(sign * (threshold + tiny), fmt) == sign * math.inf
        assert round_exact(sign * Fraction(2) ** (fmt.emax + 50), fmt) == sign * math.inf


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_subnormal_edges(fmt: FloatFormat) -> None:
    q = Fraction(2) ** fmt.quantum_exponent_min
    assert float(q) == float(FINFO[fmt.name].smallest_subnormal)
    assert same_bits(round_exact(q / 2, fmt), 0.0, fmt)  # tie -> even (zero)
    assert same_bits(round_exact(-q / 2, fmt), -0.0, fmt)
    assert round_exact(q / 2 + Fraction(1, 2**3000), fmt) == float(q)
    assert round_exact(q * 3 / 4, fmt) == float(q)
    assert round_exact(-q * 3 / 4, fmt) == -float(q)
    assert round_exact(q * 3 / 2, fmt) == float(2 * q)  # tie between q and 2q -> 2q (even)
    assert round_exact(q * 5 / 2, fmt) == float(2 * q)  # tie between 2q and 3q -> 2q
    smallest_normal = Fraction(2) ** fmt.emin
    assert float(smallest_normal) == float(FINFO[fmt.name].smallest_normal)
    assert round_exact(smallest_normal - q / 4, fmt) == float(smallest_normal)
    assert round_exact(smallest_normal - q * 3 / 4, fmt) == float(smallest_normal - q)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_exact_zero_is_positive_zero(fmt: FloatFormat) -> None:
    for zero in (0, Fraction(0), gmpy2.mpq(0)):
        assert same_bits(round_exact(zero, fmt), 0.0, fmt)
    assert same_bits(round_to_numpy(0, fmt), 0.0, fmt)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(data=st.data())
def test_representable_values_round_to_themselves(fmt: FloatFormat, data: st.DataObject) -> None:
    v = data.draw(finite_values(fmt))
    assume(float(v) != 0)
    got = round_to_numpy(exact_of_float(v), fmt)
    assert got.dtype == numpy_dtype(fmt)
    assert same_bits(got, v, fmt)


# ----------------------------------------------------------------- rounding_is_certain


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(data=st.data())
def test_rounding_is_certain(fmt: FloatFormat, data: st.DataObject) -> None:
    a = data.draw(finite_values(fmt))
    b = next_up(a, fmt)
    assume(math.isfinite(float(b)) and float(a) != 0 and float(b) != 0)
    lo, hi = exact_of_float(a), exact_of_float(b)
    mid = (lo + hi) / 2
    eps = (hi - lo) / 2**64
    assert rounding_is_certain(mid - eps, mid + eps, fmt) is None
    assert rounding_is_certain(lo, mid - eps, fmt) == float(a)
    assert rounding_is_certain(mid + eps, hi, fmt) == float(b)
    assert rounding_is_certain(lo, lo, fmt) == float(a)
    assert rounding_is_certain(lo - eps, hi + eps, fmt) is None


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_rounding_is_certain_zero_sign_and_order(fmt: FloatFormat) -> None:
    q = Fraction(2) ** fmt.quantum_exponent_min
    assert rounding_is_certain(-q / 4, q / 4, fmt) is None  # -0.0 vs +0.0
    assert same_bits(rounding_is_certain(0, q / 4, fmt), 0.0, fmt)
    assert same_bits(rounding_is_certain(-q / 4, -q / 8, fmt), -0.0, fmt)
    threshold = (2 - Fraction(1, 2**fmt.precision)) * Fraction(2) ** fmt.emax
    assert rounding_is_certain(threshold, threshold * 2, fmt) == math.inf
    assert rounding_is_certain(threshold / 2, threshold, fmt) is None
    with pytest.raises(ValueError, match="lo <= hi"):
        rounding_is_certain(1, 0, fmt)


# ----------------------------------------------------------------- exact_of_float, hex_float


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(data=st.data())
def test_exact_of_float_round_trips(fmt: FloatFormat, data: st.DataObject) -> None:
    v = data.draw(finite_values(fmt))
    x = exact_of_float(v)
    assert isinstance(x, Fraction)
    assert x.denominator & (x.denominator - 1) == 0  # a dyadic rational
    assert x == Fraction(float.fromhex(hex_float(v)))
    back = numpy_dtype(fmt).type(float(x))
    if float(v) == 0:  # the exact value of -0.0 is 0: the sign of zero is not a number
        assert x == 0 and same_bits(back, 0.0, fmt)
    else:
        assert same_bits(back, v, fmt)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_exact_of_float_refuses_specials(fmt: FloatFormat) -> None:
    dt = numpy_dtype(fmt).type
    for bad, name in ((dt(math.nan), "nan"), (dt(math.inf), "inf"), (dt(-math.inf), "-inf")):
        with pytest.raises(ValueError, match=name):
            exact_of_float(bad)
    with pytest.raises(ValueError, match="nan"):
        exact_of_float(math.nan)


def test_exact_of_float_refuses_other_dtypes() -> None:
    with pytest.raises((TypeError, ValueError)):
        exact_of_float(np.longdouble(1) / 3)
    with pytest.raises(TypeError):
        exact_of_float(np.zeros(2, dtype=np.float32))


def test_hex_float() -> None:
    assert hex_float(np.float32(0.1)) == "0x1.99999a0000000p-4"
    assert hex_float(0.1) == (0.1).hex()
    assert hex_float(math.inf) == "inf"
    assert hex_float(np.float16(-math.inf)) == "-inf"
    assert hex_float(ml_dtypes.bfloat16(math.nan)) == "nan"
    assert hex_float(-0.0) == "-0x0.0p+0"


def test_dtype_format_mapping() -> None:
    for fmt in ALL:
        assert format_of_dtype(numpy_dtype(fmt)) is fmt
        assert np.dtype(numpy_dtype(fmt)).itemsize * 8 == fmt.bits
    with pytest.raises(ValueError, match="not a supported"):
        format_of_dtype(np.int32)


# ----------------------------------------------------------------- ulp_of_exact


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(data=st.data(), frac=st.fractions(min_value=0, max_value=1))
def test_ulp_is_the_gap_to_the_next_float(
    fmt: FloatFormat, data: st.DataObject, frac: Fraction
) -> None:
    a = data.draw(finite_values(fmt))
    assume(float(a) >= 0)
    b = next_up(a, fmt)
    assume(math.isfinite(float(b)))
    lo, hi = exact_of_float(a), exact_of_float(b)
    x = lo + min(frac, Fraction(1) - Fraction(1, 2**80)) * (hi - lo)  # x in [a, b)
    assert ulp_of_exact(x, fmt) == hi - lo
    assert ulp_of_exact(-x, fmt) == hi - lo


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_ulp_edges(fmt: FloatFormat) -> None:
    q = Fraction(2) ** fmt.quantum_exponent_min
    top = Fraction(2) ** (fmt.emax - fmt.precision + 1)
    max_finite = Fraction(float(FINFO[fmt.name].max))
    assert ulp_of_exact(0, fmt) == q
    assert ulp_of_exact(max_finite, fmt) == top
    below_max = np.nextafter(numpy_dtype(fmt).type(float(max_finite)), numpy_dtype(fmt).type(0))
    assert max_finite - exact_of_float(below_max) == top
    assert ulp_of_exact(Fraction(2) ** (fmt.emax + 100), fmt) == top
    assert ulp_of_exact(Fraction(2) ** fmt.emin, fmt) == q  # smallest normal: same spacing
    assert ulp_of_exact(Fraction(2) ** (fmt.emin + 1), fmt) == 2 * q
    assert ulp_of_exact(1, fmt) == Fraction(1, 2 ** (fmt.precision - 1))
    assert float(ulp_of_exact(1, fmt)) == float(FINFO[fmt.name].eps)
