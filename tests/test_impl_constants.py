"""Our step's constants: each double-double lies within its stated bound of the exact value.

Late in training ``c2 = 1 - beta2**t`` has about 53 t bits; the double-doubles of such
constants come from short bounds around them (the exact surds only when the exact tier
asks). Those bounds must still be rigorous and no wider than double-double needs: both are
checked here against mpmath at 1,000 bits, for variants whose bias corrections are powers
(``torch.Adam``: beta held in binary64; ``paper.algorithm1``: the exact decimals) and one
with a rectifying square root (``torch.RAdam``), from the first step to t = 3,000.
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import pytest

from adamspec.impl._constants import CONSTANT_NAMES, step_constants
from adamspec.impl._exact import Surd
from adamspec.spec import entry
from adamspec.spec.formats import FLOAT32

#: A double-double carries 106 bits; bounds from 200-bit enclosures add about 2^-200.
#: Allowing 2^-104 relative (plus an absolute floor for constants near 0) still fails a
#: bound that lost the low part.
_RELATIVE = 2.0**-104


def _exact_mpf(value: Fraction | Surd) -> mpmath.mpf:
    if isinstance(value, Surd):
        return mpmath.mpf(value.q.numerator) / value.q.denominator * mpmath.sqrt(value.r)
    return mpmath.mpf(value.numerator) / value.denominator


@pytest.mark.parametrize("t", [1, 2, 100, 3000])
@pytest.mark.parametrize("name", ["torch.Adam", "paper.algorithm1", "torch.RAdam"])
def test_every_constant_lies_within_its_bound_of_the_exact_value(name: str, t: int):
    e = entry(name)
    K = step_constants(e.variant, e.hyper(), t, FLOAT32, Fraction(1), Fraction(1))
    with mpmath.workprec(1000):
        for i, constant in enumerate(CONSTANT_NAMES):
            value = K.exact_value(constant)
            if isinstance(value, float):  # a special (inf): held as itself
                assert K.values[i, 0] == value, constant
                continue
            exact = _exact_mpf(value)
            hi, lo = (mpmath.mpf(float(x)) for x in K.values[i])
            miss = abs(exact - hi - lo)
            err = K.errors[i]
            assert miss <= err, (constant, float(miss), err)
            assert err <= _RELATIVE * abs(float(exact)) + 2.0**-1000, (constant, err)


def test_the_late_constants_are_the_short_ones_rounded():
    """At t = 3,000 ``c2`` is thousands of digits long, its double-double the nearest to
    it: the same as rounding the exact value twice."""
    e = entry("torch.Adam")
    K = step_constants(e.variant, e.hyper(), 3000, FLOAT32, Fraction(1), Fraction(1))
    c2 = K.exact_value("C2")
    assert c2.denominator.bit_length() > 100_000
    hi = float(c2)
    assert (K.dd("C2")) == (hi, float(c2 - Fraction(hi)))
    with mpmath.workprec(1000):
        root = mpmath.sqrt(_exact_mpf(c2))
        hi_root = float(root)
        assert K.dd("SC2") == (hi_root, float(root - hi_root))
    assert math.isfinite(K.error("SC2")) and K.error("SC2") > 0.0
