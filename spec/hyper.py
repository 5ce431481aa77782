"""Hyperparameters of Adam and their validation.

Values are kept exactly as the user meant them: a Python float is read as its
shortest round-tripping decimal (``0.9`` means 9/10), a decimal or hex-float
string as written, an int or Fraction as is. The oracle decides later whether
to use that ideal value or the one an implementation holds (rounded to
float32, bfloat16, ...); this module only parses and validates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

Number = int | float | str | Decimal | Fraction


class HyperparameterError(ValueError):
    """An invalid hyperparameter: the message names the value and what is allowed."""


def _show(value: Any) -> str:
    """A value as the user wrote it: decimals plainly, everything else as repr."""
    return str(value) if isinstance(value, Decimal) else repr(value)


def exact_value(name: str, value: Any) -> Fraction:
    """Parse ``value`` into the exact rational it denotes.

    Floats are read as their shortest decimal (``repr``), so ``0.001`` is
    1/1000, not the binary64 neighbour; hex-float strings (``"0x1.99999ap-4"``)
    are exact binary values. NaN, infinities, booleans and other types are
    rejected with a :class:`HyperparameterError`.
    """
    if isinstance(value, bool) or value is None:
        raise HyperparameterError(f"{name}={value!r} is not a number")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HyperparameterError(f"{name}={_show(value)} is not a finite number")
        return Fraction(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise HyperparameterError(f"{name}={_show(value)} is not a finite number")
        return Fraction(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower().lstrip("+-").startswith("0x"):
            try:
                parsed = float.fromhex(text)
            except (ValueError, OverflowError):
                raise HyperparameterError(f"{name}={value!r} is not a valid hex float") from None
            if not math.isfinite(parsed):
                raise HyperparameterError(f"{name}={_show(value)} is not a finite number")
            return Fraction(parsed)
        try:
            dec = Decimal(text)
        except InvalidOperation:
            raise HyperparameterError(
                f"{name}={value!r} is not a number (decimal or hex-float string)"
            ) from None
        return exact_value(name, dec)
    raise HyperparameterError(
        f"{name}={value!r} has type {type(value).__name__}; expected int, float, "
        "decimal string or hex-float string"
    )


@dataclass(frozen=True)
class Range:
    """An allowed interval for one hyperparameter, printed in error messages."""

    low: Fraction
    high: Fraction | None
    low_open: bool = False
    high_open: bool = False

    def contains(self, x: Fraction) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        if self.high is None:
            return above
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open or self.high is None else "]"
        high = "inf" if self.high is None else _fmt(self.high)
        return f"{left}{_fmt(self.low)}, {high}{right}"


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else str(float(x))


NON_NEGATIVE = Range(Fraction(0), None)
POSITIVE = Range(Fraction(0), None, low_open=True)
UNIT_HALF_OPEN = Range(Fraction(0), Fraction(1), high_open=True)
UNIT_CLOSED = Range(Fraction(0), Fraction(1))

# Allowed range of each numeric hyperparameter; the one table both validation
# and documentation read.
RANGES: dict[str, Range] = {
    "lr": NON_NEGATIVE,
    "beta1": UNIT_HALF_OPEN,
    "beta2": UNIT_HALF_OPEN,
    "eps": NON_NEGATIVE,
    "eps_root": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "clipnorm": POSITIVE,
    "clipvalue": POSITIVE,
    "global_clipnorm": POSITIVE,
    "ema_momentum": UNIT_CLOSED,
}


def checked(name: str, value: Any, kind: str | None = None) -> Fraction:
    """Exact value of ``value`` after checking it lies in ``RANGES[kind or name]``.

    ``name`` is what the message shows (``lr[3]``), ``kind`` the hyperparameter.
    """
    x = exact_value(name, value)
    allowed = RANGES[kind or name]
    if not allowed.contains(x):
        raise HyperparameterError(
            f"{name}={_show(value)} is out of range: allowed {kind or name} in {allowed}"
        )
    return x


class Schedule:
    """A learning rate that depends on the step ``t`` (counted from 1).

    Built from a sequence (``values[t-1]`` is used at step ``t``; the last
    value holds afterwards) or a callable ``t -> lr``. Every value is
    validated like a constant lr when it is read.
    """

    def __init__(self, source: Sequence[Number] | Callable[[int], Number]) -> None:
        if callable(source):
            self._fn: Callable[[int], Number] | None = source
            self._values: tuple[Fraction, ...] = ()
        else:
            if isinstance(source, (str, bytes)) or len(source) == 0:
                raise HyperparameterError(
                    f"lr schedule={source!r} must be a non-empty list of learning rates"
                )
            self._fn = None
            self._values = tuple(checked(f"lr[{i}]", v, "lr") for i, v in enumerate(source))

    def at(self, t: int) -> Fraction:
        """The exact learning rate used at step ``t`` (1-based)."""
        if t < 1:
            raise HyperparameterError(f"step t={t} is invalid: steps are counted from 1")
        if self._fn is not None:
            return checked(f"lr(t={t})", self._fn(t), "lr")
        return self._values[min(t, len(self._values)) - 1]

    def __repr__(self) -> str:
        if self._fn is not None:
            return f"Schedule({self._fn!r})"
        return f"Schedule([{', '.join(str(v) for v in self._values)}])"


@dataclass(frozen=True)
class Hyper:
    """Validated hyperparameters, each held as the exact rational it denotes.

    ``clipnorm``, ``clipvalue`` and ``global_clipnorm`` are ``None`` when
    unused; at most one may be set (as in Keras). EMA follows Keras 3:
    ``use_ema`` with ``ema_momentum`` and ``ema_overwrite_frequency``.

    ``held_formats`` names hyperparameters held in a format of their own, whatever the
    param dtype, as sorted ``(name, format)`` pairs (given as a mapping): e.g.
    ``{"beta1": "bfloat16"}`` for a float32 kernel that holds beta1 in bfloat16 (see
    :data:`adamspec.spec.holding.HELD_FORMATS_DOC`). Empty: the variant's
    ``hyper_precision`` decides for every hyperparameter.
    """

    lr: Fraction | Schedule = Fraction(1, 1000)
    beta1: Fraction = Fraction(9, 10)
    beta2: Fraction = Fraction(999, 1000)
    eps: Fraction = Fraction(1, 10**8)
    eps_root: Fraction = Fraction(0)
    weight_decay: Fraction = Fraction(0)
    clipnorm: Fraction | None = None
    clipvalue: Fraction | None = None
    global_clipnorm: Fraction | None = None
    use_ema: bool = False
    ema_momentum: Fraction = Fraction(99, 100)
    ema_overwrite_frequency: int | None = None
    held_formats: tuple[tuple[str, str], ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def lr_at(self, t: int) -> Fraction:
        """The exact learning rate of step ``t``."""
        return self.lr.at(t) if isinstance(self.lr, Schedule) else self.lr

    def held_format(self, name: str) -> str | None:
        """The format ``name`` is held in by :attr:`held_formats`, None when not named."""
        return dict(self.held_formats).get(name)

    def with_(self, **changes: Any) -> Hyper:
        """A copy with ``changes`` validated like :func:`make_hyper` input."""
        return make_hyper(base=self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON and reports (floats for display only)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extras":
                continue
            v = getattr(self, f.name)
            if f.name == "held_formats":
                out[f.name] = dict(v)
                continue
            out[f.name] = (
                repr(v) if isinstance(v, Schedule) else (float(v) if isinstance(v, Fraction) else v)
            )
        return out


HYPER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Hyper) if f.name != "extras")


def _held_formats(value: Any) -> tuple[tuple[str, str], ...]:
    """``held_formats`` as sorted ``(name, format)`` pairs, each checked."""
    from adamspec.spec.holding import HOLDABLE, HOLDING_FORMATS

    try:
        pairs = dict(value.items() if isinstance(value, Mapping) else value)
    except (TypeError, ValueError):
        raise HyperparameterError(
            f"held_formats={value!r} must map hyperparameters to formats, "
            'e.g. {"beta1": "bfloat16"}'
        ) from None
    formats = [f.name for f in HOLDING_FORMATS]
    for name, fmt in pairs.items():
        if name not in HOLDABLE:
            raise HyperparameterError(
                f"held_formats names {name!r}, which cannot be held in a format of its own; "
                f"allowed: {', '.join(HOLDABLE)}"
            )
        if fmt not in formats:
            raise HyperparameterError(
                f"held_formats.{name}={fmt!r} is not a format; allowed: {', '.join(formats)}"
            )
    return tuple(sorted(pairs.items()))


def make_hyper(base: Hyper | None = None, **values: Any) -> Hyper:
    """Build a :class:`Hyper` from user values, validating every one.

    Unknown names, wrong types, NaN and out-of-range values raise
    :class:`HyperparameterError` naming the value and the allowed range.
    """
    unknown = sorted(set(values) - set(HYPER_NAMES))
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter {unknown[0]!r}; allowed: {', '.join(HYPER_NAMES)}"
        )
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        if name == "lr":
            if callable(value) or isinstance(value, (list, tuple)):
                parsed[name] = value if isinstance(value, Schedule) else Schedule(value)
            else:
                parsed[name] = checked(name, value)
        elif name in ("clipnorm", "clipvalue", "global_clipnorm"):
            parsed[name] = None if value is None else checked(name, value)
        elif name == "held_formats":
            parsed[name] = _held_formats(value)
        elif name == "use_ema":
            if not isinstance(value, bool):
                raise HyperparameterError(f"use_ema={value!r} must be true or false")
            parsed[name] = value
        elif name == "ema_overwrite_frequency":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise HyperparameterError(
                    f"ema_overwrite_frequency={value!r} must be a positive integer or None"
                )
            parsed[name] = value
        else:
            parsed[name] = checked(name, value)
    hyper = replace(base, **parsed) if base is not None else Hyper(**parsed)
    clips = [n for n in ("clipnorm", "clipvalue", "global_clipnorm") if getattr(hyper, n)]
    if len(clips) > 1:
        raise HyperparameterError(
            f"{' and '.join(clips)} are both set; at most one of clipnorm, clipvalue, "
            "global_clipnorm is allowed"
        )
    return hyper
