"""Tests for ``adamspec.oracles.metrics``: ordinals, ULP distances and outcomes (their
summary per component is the engine's, tested in ``tests/test_engine.py``).

Expected values come from the formats themselves (bit patterns, ``nextafter``, sorting
by exact value), never from the module under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from float_helpers import ALL, FINFO, IDS, from_bits, to_bits
from hypothesis import assume, given
from hypothesis import strategies as st

from adamspec.oracles.metrics import (
    Outcome,
    bits_error,
    categorical_kind,
    classify,
    classify_array,
    ordinal,
    ulp_distance,
)
from adamspec.oracles.rounding import exact_of_float, numpy_dtype
from adamspec.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FloatFormat


def val(x: float, fmt: FloatFormat) -> np.generic:
    return numpy_dtype(fmt).type(x)


def finite_values(fmt: FloatFormat) -> st.SearchStrategy[np.generic]:
    return (
        st.integers(0, 2**fmt.bits - 1)
        .map(lambda b: from_bits(b, fmt))
        .filter(lambda v: math.isfinite(float(v)))
    )


def step(v: np.generic, fmt: FloatFormat, direction: int) -> np.generic:
    """The neighbouring float of ``v`` towards ``direction * inf`` (NumPy's nextafter)."""
    return np.nextafter(v, val(direction * math.inf, fmt))


# ----------------------------------------------------------------- ordinal


@pytest.mark.parametrize("fmt", [FLOAT16, BFLOAT16], ids=["float16", "bfloat16"])
def test_ordinal_exhaustive_16_bit(fmt: FloatFormat) -> None:
    """Every non-NaN 16-bit value: ordinals sorted like the values, one apart, ±0 shared."""
    values = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(numpy_dtype(fmt))
    with np.errstate(invalid="ignore"):  # NaN patterns, dropped below
        wide = values.astype(np.float64)  # exact widening
    keep = ~np.isnan(wide)
    values, wide = values[keep], wide[keep]
    order = np.argsort(wide, kind="stable")
    ords = np.asarray(ordinal(values[order], fmt)).astype(np.int64)
    sorted_wide = wide[order]
    gaps = np.diff(ords)
    same_value = np.diff(sorted_wide) == 0  # only the -0.0/+0.0 pair
    assert np.count_nonzero(same_value) == 1
    assert np.all(gaps[same_value] == 0)
    assert np.all(gaps[~same_value] == 1)
    assert ordinal(val(0.0, fmt), fmt) == 0 and ordinal(val(-0.0, fmt), fmt) == 0


@pytest.mark.parametrize("fmt", [FLOAT32, FLOAT64], ids=["float32", "float64"])
@given(data=st.data())
def test_ordinal_monotone_on_samples(fmt: FloatFormat, data: st.DataObject) -> None:
    vals = data.draw(st.lists(finite_values(fmt), min_size=2, max_size=40))
    arr = np.array(vals, dtype=numpy_dtype(fmt))
    exact = [exact_of_float(v) for v in vals]
    ords = np.asarray(ordinal(arr, fmt))
    assert ords.dtype == np.int64 and ords.shape == arr.shape
    for i in range(len(vals)):
        for j in range(len(vals)):
            if exact[i] < exact[j]:
                assert ords[i] < ords[j]
            elif exact[i] == exact[j]:
                assert ords[i] == ords[j]


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
@given(data=st.data())
def test_ulp_distance_to_next_is_one(fmt: FloatFormat, data: st.DataObject) -> None:
    v = data.draw(finite_values(fmt))
    up = step(v, fmt, +1)
    assume(math.isfinite(float(up)))
    assert ulp_distance(up, v, fmt) == 1
    assert ulp_distance(v, up, fmt) == 1
    upup = step(up, fmt, +1)
    if math.isfinite(float(upup)):
        assert ulp_distance(upup, v, fmt) == 2


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_ulp_distance_across_zero(fmt: FloatFormat) -> None:
    q = float(FINFO[fmt.name].smallest_subnormal)
    pos, neg = val(q, fmt), val(-q, fmt)
    assert ulp_distance(pos, neg, fmt) == 2
    assert ulp_distance(pos, val(-0.0, fmt), fmt) == 1
    assert ulp_distance(val(0.0, fmt), val(-0.0, fmt), fmt) == 0
    assert ulp_distance(val(1.0, fmt), val(-1.0, fmt), fmt) == 2 * to_bits(val(1.0, fmt), fmt)


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_ulp_distance_specials_are_not_numbers(fmt: FloatFormat) -> None:
    big = val(float(FINFO[fmt.name].max), fmt)
    inf, nan, one = val(math.inf, fmt), val(math.nan, fmt), val(1.0, fmt)
    assert ulp_distance(nan, one, fmt) == -1
    assert ulp_distance(one, nan, fmt) == -1
    assert ulp_distance(inf, big, fmt) == -1
    assert ulp_distance(big, inf, fmt) == -1
    assert ulp_distance(-inf, inf, fmt) == -1
    assert ulp_distance(inf, inf, fmt) == 0
    arr = np.array([1.0, math.nan, math.inf, 2.0], dtype=numpy_dtype(fmt))
    ref = np.array([1.0, 1.0, math.inf, 1.0], dtype=numpy_dtype(fmt))
    got = ulp_distance(arr, ref, fmt)
    assert got.dtype == np.int64
    assert got.tolist()[:3] == [0, -1, 0] and got[3] > 0


def test_dtype_mismatch_is_refused() -> None:
    with pytest.raises(TypeError, match="dtype"):
        ordinal(np.float64(1.0), FLOAT32)
    with pytest.raises(TypeError, match="dtype"):
        ulp_distance(np.float32(1.0), np.float16(1.0), FLOAT32)


def test_bits_error() -> None:
    assert bits_error(0) == 0.0
    assert bits_error(1) == 1.0
    for k in range(1, 60, 7):
        assert bits_error(2**k - 1) == pytest.approx(k)
    assert bits_error(-1) is None
    assert bits_error(None) is None
    arr = bits_error(np.array([0, 1, 3, -1], dtype=np.int64))
    assert arr[:3].tolist() == [0.0, 1.0, 2.0] and math.isnan(arr[3])


# ----------------------------------------------------------------- outcomes


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_classify_table(fmt: FloatFormat) -> None:
    one, nan, inf = val(1.0, fmt), val(math.nan, fmt), val(math.inf, fmt)
    big = val(float(FINFO[fmt.name].max), fmt)
    pz, nz = val(0.0, fmt), val(-0.0, fmt)
    cases = [
        (one, one, Outcome.EXACT),
        (step(one, fmt, 1), one, Outcome.ULP),
        (nan, one, Outcome.NAN),
        (nan, inf, Outcome.NAN),
        (nan, nan, Outcome.EXACT),
        (inf, one, Outcome.POSINF),
        (inf, big, Outcome.POSINF),
        (-inf, inf, Outcome.NEGINF),
        (inf, inf, Outcome.EXACT),
        (-inf, -inf, Outcome.EXACT),
        (big, inf, Outcome.ULP),
        (nz, pz, Outcome.SIGNED_ZERO),
        (pz, nz, Outcome.SIGNED_ZERO),
        (pz, pz, Outcome.EXACT),
        (nz, nz, Outcome.EXACT),
        (pz, val(float(FINFO[fmt.name].smallest_subnormal), fmt), Outcome.ULP),
    ]
    for y, r, expected in cases:
        assert classify(y, r) is expected, (y, r)
        assert classify(y, r, fmt) is expected
        assert str(expected) == expected.value
    ys = np.array([c[0] for c in cases], dtype=numpy_dtype(fmt))
    rs = np.array([c[1] for c in cases], dtype=numpy_dtype(fmt))
    assert classify_array(ys, rs).tolist() == [c[2].value for c in cases]
    # the exact result is undefined (0/0) but the implementation produced a number
    assert classify(one, nan) is Outcome.MISSED_NAN


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
@given(data=st.data())
def test_classify_array_matches_definition(fmt: FloatFormat, data: st.DataObject) -> None:
    bits = st.integers(0, 2**fmt.bits - 1).map(lambda b: from_bits(b, fmt))
    pairs = data.draw(st.lists(st.tuples(bits, bits), min_size=1, max_size=30))
    ys = np.array([p[0] for p in pairs], dtype=numpy_dtype(fmt))
    rs = np.array([p[1] for p in pairs], dtype=numpy_dtype(fmt))
    got = classify_array(ys, rs)
    for (y, r), outcome in zip(pairs, got.tolist(), strict=True):
        fy, fr = float(y), float(r)
        if to_bits(y, fmt) == to_bits(r, fmt) or (math.isnan(fy) and math.isnan(fr)):
            assert outcome == "exact"
        elif math.isnan(fy):
            assert outcome == "nan"
        elif math.isnan(fr):
            assert outcome == "missed_nan"
        elif math.isinf(fy):
            assert outcome == ("posinf" if fy > 0 else "neginf")
        elif fy == 0 and fr == 0:
            assert outcome == "signed_zero"
        else:
            assert outcome == "ulp"
        assert classify(y, r) == outcome


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_categorical_kind(fmt: FloatFormat) -> None:
    info = FINFO[fmt.name]
    tiny = float(info.smallest_subnormal)
    normal = float(info.smallest_normal)
    cases = [
        (math.nan, "nan"),
        (math.inf, "posinf"),
        (-math.inf, "neginf"),
        (0.0, "zero"),
        (-0.0, "zero"),
        (tiny, "subnormal"),
        (-tiny, "subnormal"),
        (normal - tiny, "subnormal"),
        (normal, "normal"),
        (-float(info.max), "normal"),
    ]
    for x, kind in cases:
        assert categorical_kind(val(x, fmt)) == kind, x
        assert categorical_kind(x, fmt) == kind, x
    assert categorical_kind(tiny) == ("subnormal" if fmt is FLOAT64 else "normal")
    if fmt is not FLOAT64:
        with pytest.raises(ValueError, match=fmt.name):
            categorical_kind(0.1, fmt)
