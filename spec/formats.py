"""The binary floating-point formats adamspec rounds to and measures in.

Pure data (IEEE 754 parameters); the arithmetic lives in ``oracles``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-754-style binary format.

    ``precision`` counts the significand bits including the implicit one;
    normal numbers are ``1.f * 2**e`` with ``emin <= e <= emax``; subnormals
    extend below ``2**emin`` with quantum ``2**(emin - precision + 1)``.
    """

    name: str
    precision: int
    emin: int
    emax: int
    bits: int

    @property
    def quantum_exponent_min(self) -> int:
        """Exponent of the smallest subnormal, ``2**(emin - precision + 1)``."""
        return self.emin - self.precision + 1


FLOAT64 = FloatFormat("float64", precision=53, emin=-1022, emax=1023, bits=64)
FLOAT32 = FloatFormat("float32", precision=24, emin=-126, emax=127, bits=32)
FLOAT16 = FloatFormat("float16", precision=11, emin=-14, emax=15, bits=16)
BFLOAT16 = FloatFormat("bfloat16", precision=8, emin=-126, emax=127, bits=16)

FORMATS: dict[str, FloatFormat] = {f.name: f for f in (FLOAT64, FLOAT32, FLOAT16, BFLOAT16)}


class FormatError(ValueError):
    """An unknown dtype name."""


def format_named(name: str) -> FloatFormat:
    """The format called ``name``; a clear error lists the allowed names."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise FormatError(
            f"dtype={name!r} is not supported; allowed: {', '.join(FORMATS)}"
        ) from None
