"""Gradients ready for the kernels, and the exact values behind them.

A dense gradient is used as given (its own dtype, negated for ``maximize``); clipped by
value, each coordinate is its own value or ``+-clipvalue``. A row-sparse gradient is
summed per row in double-double (repeated indices), its squares too for
``square_then_sum``. Where the kernels' values are not the exact ones (sums of
duplicates, a clipvalue that is not a binary64 number), :class:`Gradient` carries bounds
on their error, for the double-double pass, and the exact values on demand, for the
exact tier. Clipping by norm gets its scale here too: a double-double with a bound for
the fast passes, the exact surd ``c / sqrt(||g||^2)`` on demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from adamspec.impl import _dd
from adamspec.impl._constants import ClipScale, double_double
from adamspec.impl._exact import root_bounds, surd
from adamspec.impl._formats import UnsupportedError, format_of
from adamspec.impl._xp import array_namespace, to_numpy
from adamspec.spec.axes import DuplicateIndices, SparseSemantics, WeightDecay
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

#: Relative error bound of one double-double addition, with margin (3u^2, see
#: :mod:`adamspec.impl._dd`), for the bounds of sums over duplicates.
_ADD = 2.0**-100
#: Inflates a bound for its own float64 rounding.
_UP = 1 + 2.0**-48
#: float64 values whose square two doubles hold exactly (Dekker's product neither
#: underflows nor overflows); others are squared as rationals or bounded absolutely.
_TINY, _HUGE = 2.0**-480, 2.0**500

Exact = Callable[[Any], tuple[list[Fraction], list[Fraction] | None]]


class Gradient(NamedTuple):
    """A gradient ready for the kernels: float64 double-double values per coordinate.

    ``rows`` is None for dense gradients; for lazy sparse updates it lists the
    touched rows and the arrays cover only those rows. ``gsq`` is set when
    squares are summed over duplicate contributions. ``g_err``/``gsq_err`` bound
    ``|exact - hi - lo|`` where that is not 0 (None: the values are exact), and
    ``exact(positions)`` gives the exact g (and gsq) at positions of these arrays
    (None: the arrays' own values are exact).
    """

    g: Any
    g_lo: Any
    gsq: Any
    gsq_lo: Any
    rows: Any
    dense: bool
    g_err: Any = None
    gsq_err: Any = None
    exact: Exact | None = None


def prepare_gradient(
    grad: Any, param: Any, variant: Variant, hyper: Hyper, hold: Callable[[Fraction], Fraction]
) -> Gradient:
    """``grad`` for ``param`` as the kernels read it (see the module docstring)."""
    clip = None if hyper.clipvalue is None else hold(hyper.clipvalue)
    sign = -1.0 if variant.maximize else 1.0
    if not isinstance(grad, SparseRows):
        return _dense(grad, param, sign, clip)
    return _sparse(grad, param, variant, hyper, sign, clip)


def _clamp(x: Fraction, c: Fraction) -> Fraction:
    return min(max(x, -c), c)


def _dense(grad: Any, param: Any, sign: float, clip: Fraction | None) -> Gradient:
    xp = array_namespace(param)
    if grad.shape != param.shape:
        raise UnsupportedError(
            f"gradient shape {grad.shape} does not match parameter {param.shape}"
        )
    format_of(grad)
    # Gradients are read in their own dtype (no float64 copy of a big tensor), which
    # also keeps them short: the kernels' exact products need at most 27 bits.
    if clip is None:
        g = grad if sign > 0 else -grad  # negation is exact in any format
        return Gradient(g.reshape(-1), None, None, None, None, True)
    c_hi, c_lo, c_err = double_double(clip)
    raw = (sign * grad.astype(np.float64)).reshape(-1)
    g = xp.clip(raw, -c_hi, c_hi)  # each value is the gradient's own or +-clipvalue
    if c_lo == 0 and c_err == 0:  # a binary64 clipvalue
        if float(np.asarray(c_hi, dtype=grad.dtype)) == c_hi:
            g = g.astype(grad.dtype)
        return Gradient(g, None, None, None, None, True)
    # an exact decimal (``ideal``): a double is clipped iff |g| > c_hi, or == c_hi > c
    size = xp.abs(raw)
    clipped = (size > c_hi) | ((size == c_hi) & (c_lo < 0))
    direction = xp.sign(raw)
    host = to_numpy(raw)

    def exact(positions: Any) -> tuple[list[Fraction], None]:
        return [_clamp(Fraction(float(host[p])), clip) for p in to_numpy(positions)], None

    return Gradient(
        xp.where(clipped, direction * c_hi, raw),
        xp.where(clipped, direction * c_lo, 0.0),
        None,
        None,
        None,
        True,
        g_err=xp.where(clipped, c_err, 0.0),
        exact=exact,
    )


def _sparse(
    grad: SparseRows,
    param: Any,
    variant: Variant,
    hyper: Hyper,
    sign: float,
    clip: Fraction | None,
) -> Gradient:
    xp = array_namespace(param)
    if grad.num_rows != param.shape[0]:
        raise UnsupportedError(
            f"sparse gradient for {grad.num_rows} rows, parameter has {param.shape[0]}"
        )
    square_then_sum = variant.duplicates is DuplicateIndices.SQUARE_THEN_SUM
    if square_then_sum and variant.weight_decay is WeightDecay.L2 and hyper.weight_decay != 0:
        raise UnsupportedError(
            "L2 weight decay with square_then_sum duplicates on a sparse gradient is not "
            "implemented (no framework combines them)"
        )
    raw = sign * xp.asarray(grad.values).reshape(len(grad.indices), -1).astype(np.float64)
    rows, inverse = np.unique(np.asarray(grad.indices), return_inverse=True)
    n_rows, row_size = len(rows), raw.shape[1]
    counts = np.bincount(inverse, minlength=n_rows)[:, None]
    many = xp.asarray(counts > 1)
    c_hi, c_lo, c_err = double_double(clip) if clip is not None else (0.0, 0.0, 0.0)
    decimal_clip = clip is not None and (c_lo != 0 or c_err != 0)
    # clipvalue acts on each contribution when squares are summed, else on the row sums.
    values = xp.clip(raw, -c_hi, c_hi) if clip is not None and square_then_sum else raw
    g_hi, g_lo = group_sum(values, None, inverse, n_rows, xp)
    # a sum of k values in double-double: k - 1 additions of relative error <= _ADD each
    size = group_sum(xp.abs(values), None, inverse, n_rows, xp)[0]
    g_err = xp.where(many, xp.asarray(counts - 1) * _ADD * size * _UP, 0.0)
    if clip is not None and not square_then_sum:
        above = (g_hi > c_hi) | ((g_hi == c_hi) & (g_lo > 0))
        below = (g_hi < -c_hi) | ((g_hi == -c_hi) & (g_lo < 0))
        # where the sum's error (or the clipvalue's low part) could cross c: undecided
        near = xp.abs(xp.abs(g_hi) - c_hi) <= 2 * (g_err + xp.abs(g_lo) + abs(c_lo) + c_err)
        undecided = near & ((g_err > 0) | decimal_clip)
        g_hi = xp.where(above, c_hi, xp.where(below, -c_hi, g_hi))
        g_lo = xp.where(above, c_lo, xp.where(below, -c_lo, g_lo))
        g_err = xp.where(above | below, c_err, g_err)
        g_err = xp.where(undecided, xp.inf, g_err)
    gsq = gsq_lo = gsq_err = None
    if square_then_sum:
        gsq, gsq_lo = group_sum(*_dd.two_prod(values, values), inverse, n_rows, xp)
        tiny_values = ((xp.abs(values) < _TINY) & (values != 0)) * 1.0
        tiny = group_sum(tiny_values, None, inverse, n_rows, xp)
        gsq_err = xp.where(many, xp.asarray(counts - 1) * _ADD * gsq * _UP, 0.0)
        gsq_err = gsq_err + xp.where(tiny[0] > 0, 2.0**-1000, 0.0)
        if decimal_clip:  # contributions clipped to a decimal: only the exact tier knows
            g_err = g_err + xp.inf
            gsq_err = gsq_err + xp.inf
    lazy = variant.sparse is SparseSemantics.LAZY
    host = to_numpy(raw)

    def exact(positions: Any) -> tuple[list[Fraction], list[Fraction] | None]:
        gs, squares = [], []
        for position in to_numpy(positions):
            row, column = divmod(int(position), row_size)
            group = row if lazy else int(np.searchsorted(rows, row))
            if not lazy and (group >= n_rows or rows[group] != row):
                gs.append(Fraction(0))
                squares.append(Fraction(0))
                continue
            parts = [Fraction(float(x)) for x in host[inverse == group, column]]
            if clip is not None and square_then_sum:
                parts = [_clamp(x, clip) for x in parts]
            total = sum(parts, Fraction(0))
            gs.append(_clamp(total, clip) if clip is not None and not square_then_sum else total)
            squares.append(sum((x * x for x in parts), Fraction(0)))
        return gs, squares if square_then_sum else None

    parts = (g_hi, g_lo, gsq, gsq_lo, g_err, gsq_err)
    if lazy:
        g_hi, g_lo, gsq, gsq_lo, g_err, gsq_err = (_flat(a) for a in parts)
        return Gradient(g_hi, g_lo, gsq, gsq_lo, rows, False, g_err, gsq_err, exact)

    def scatter(part: Any) -> Any:
        if part is None:
            return None
        full = xp.zeros((param.shape[0], row_size))
        full[rows] = part
        return full.reshape(-1)

    g_hi, g_lo, gsq, gsq_lo, g_err, gsq_err = (scatter(a) for a in parts)
    return Gradient(g_hi, g_lo, gsq, gsq_lo, None, False, g_err, gsq_err, exact)


def _flat(a: Any) -> Any:
    return None if a is None else a.reshape(-1)


def group_sum(hi: Any, lo: Any, group: Any, n_groups: int, xp: Any) -> tuple[Any, Any]:
    """Double-double sums of rows ``hi (+ lo)`` by ``group``, one pass per duplicate rank."""
    lo = xp.zeros_like(hi) if lo is None else lo
    acc_hi = xp.zeros((n_groups, hi.shape[1]))
    acc_lo = xp.zeros((n_groups, hi.shape[1]))
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.searchsorted(sorted_group, sorted_group, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - starts
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        members = np.flatnonzero(rank == r)
        targets = group[members]
        acc_hi[targets], acc_lo[targets] = _dd.add(
            (acc_hi[targets], acc_lo[targets]), (hi[members], lo[members])
        )
    return acc_hi, acc_lo


# ---------------------------------------------------------------- clipping by norm


class _SquareNorm(NamedTuple):
    """``||g||^2`` (the sum of what v receives) as a rational within ``err`` of the exact
    one, or a float for a non-finite norm; the exact one on demand."""

    value: Fraction | float
    err: float
    exact: Callable[[], Fraction]


def clip_scales(
    prepared: Sequence[Gradient], hyper: Hyper, hold: Callable[[Fraction], Fraction]
) -> list[ClipScale | None]:
    """Clip scales ``c / max(||g||, c)`` per tensor (clipnorm) or shared (global)."""
    if hyper.clipnorm is None and hyper.global_clipnorm is None:
        return [None] * len(prepared)
    norms = [_square_norm(g) for g in prepared]
    if hyper.clipnorm is not None:
        c = hold(hyper.clipnorm)
        return [_scale([n], c, nan_if_nonfinite=False) for n in norms]
    return [_scale(norms, hold(hyper.global_clipnorm), nan_if_nonfinite=True)] * len(prepared)


def _square_norm(g: Gradient) -> _SquareNorm:
    if g.gsq is not None:
        hi, lo, err = g.gsq, g.gsq_lo, g.gsq_err
    else:
        value = (
            np.asarray(to_numpy(g.g), dtype=np.float64),  # dense ones come in their own dtype
            np.zeros(g.g.shape) if g.g_lo is None else np.asarray(to_numpy(g.g_lo)),
        )
        hi, lo = _dd.mul(value, value)
        err = None
        if g.g_err is not None:  # (|g| + e)^2 - |g|^2
            e = np.asarray(to_numpy(g.g_err))
            err = (2 * np.abs(value[0]) * _UP + e) * e
        if g.exact is None and g.g.dtype == np.float64:  # squares of tiny doubles underflow
            tiny = (np.abs(value[0]) < _TINY) & (value[0] != 0)
            err = (0.0 if err is None else err) + np.where(tiny, 2.0**-1000, 0.0)
    hi = np.asarray(to_numpy(hi), dtype=np.float64).ravel()
    lo = np.asarray(to_numpy(lo), dtype=np.float64).ravel()
    spread = 0.0 if err is None else float(np.sum(np.asarray(to_numpy(err)))) * _UP

    def exact() -> Fraction:
        return exact_square_norm(g)

    if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
        return _SquareNorm(float(np.sum(hi)), 0.0, exact)
    # Pairwise double-double reduction of non-negative terms: each level adds a relative
    # error of at most _ADD.
    levels = 0
    while hi.size > 1:
        if hi.size % 2:
            hi, lo = np.append(hi, 0.0), np.append(lo, 0.0)
        hi, lo = _dd.add((hi[0::2], lo[0::2]), (hi[1::2], lo[1::2]))
        levels += 1
    total = Fraction(float(hi[0])) + Fraction(float(lo[0])) if hi.size else Fraction(0)
    rounding = (levels + 1) * _ADD * float(total) * _UP
    return _SquareNorm(total, (spread + rounding) * _UP, exact)


def _scale(norms: list[_SquareNorm], c: Fraction, *, nan_if_nonfinite: bool) -> ClipScale:
    if any(isinstance(n.value, float) for n in norms):  # a non-finite norm
        total = sum(float(n.value) for n in norms)
        if nan_if_nonfinite or total != total:
            return ClipScale(math.nan, 0.0, 0.0, lambda: math.nan)
        return ClipScale(0.0, 0.0, 0.0, lambda: Fraction(0))
    total = sum((n.value for n in norms), Fraction(0))
    err = sum(n.err for n in norms)

    def exact() -> Fraction | Any:
        square = sum((n.exact() for n in norms), Fraction(0))
        return Fraction(1) if square <= c * c else surd(c, 1 / square)

    if not math.isfinite(err):
        return ClipScale(*_from_bounds(Fraction(0), Fraction(1)), exact)
    # the scale is non-increasing in ||g||^2: its values at the ends of [total - err,
    # total + err] bound it, each enclosed at 200 bits
    low = _scale_bounds(total + Fraction(err), c)[0]
    high = _scale_bounds(max(total - Fraction(err), Fraction(0)), c)[1]
    return ClipScale(*_from_bounds(low, high), exact)


def _scale_bounds(square: Fraction, c: Fraction) -> tuple[Fraction, Fraction]:
    """Rationals below and above ``c / max(sqrt(square), c)``."""
    if square <= c * c:
        return Fraction(1), Fraction(1)
    root_low, root_high = root_bounds(square, 200)
    return c / root_high, c / root_low


def _from_bounds(low: Fraction, high: Fraction) -> tuple[float, float, float]:
    """The double-double of the middle of ``[low, high]`` and a bound on its distance to
    any value in between."""
    mid = (low + high) / 2
    hi = float(mid)
    lo = float(mid - Fraction(hi))
    gap = abs(mid - Fraction(hi) - Fraction(lo)) + (high - low) / 2
    return hi, lo, math.nextafter(float(gap), math.inf)


def exact_square_norm(g: Gradient) -> Fraction:
    """``||g||^2`` exactly: the sum of the exact squares (of the sums of squares, for
    ``square_then_sum``)."""
    if g.exact is not None:
        gs, squares = g.exact(np.arange(g.g.size))
        return sum(squares if squares is not None else (x * x for x in gs), Fraction(0))
    values = np.asarray(to_numpy(g.g)).ravel()
    if values.dtype == np.float64:  # a double's square needs two doubles, exact unless tiny
        regular = (np.abs(values) >= _TINY) & (np.abs(values) <= _HUGE)
        hi, lo = _dd.two_prod(values[regular], values[regular])
        rest = sum((Fraction(float(x)) ** 2 for x in values[~regular]), Fraction(0))
        return exact_sum(hi) + exact_sum(lo) + rest
    return exact_sum(values.astype(np.float64) ** 2)  # 2 x 24 bits: exact in float64


def exact_sum(values: np.ndarray) -> Fraction:
    """The exact sum of finite doubles, vectorized: each is ``M 2**(e - 53)`` with an
    integer ``M`` below ``2**53``; the 27- and 26-bit halves of ``M`` are summed per
    exponent with float64 weights, exact while every partial sum stays below ``2**53``
    (chunks of ``2**25`` values), then combined as Python integers."""
    mantissa, exponent = np.frexp(np.asarray(values, dtype=np.float64).ravel())
    integers = (mantissa * 2.0**53).astype(np.int64)
    high, low = integers >> 26, integers & ((1 << 26) - 1)
    offsets = exponent - exponent.min() if exponent.size else exponent
    total = 0
    chunk = 1 << 25
    for start in range(0, integers.size, chunk):
        part = slice(start, start + chunk)
        highs = np.bincount(offsets[part], weights=high[part])
        lows = np.bincount(offsets[part], weights=low[part])
        for offset in np.flatnonzero((highs != 0) | (lows != 0)):
            shift = int(offset)
            total += (int(highs[offset]) << (26 + shift)) + (int(lows[offset]) << shift)
    if not exponent.size:
        return Fraction(0)
    return Fraction(total) * Fraction(2) ** (int(exponent.min()) - 53)


__all__ = [
    "Gradient",
    "clip_scales",
    "exact_square_norm",
    "exact_sum",
    "group_sum",
    "prepare_gradient",
]
