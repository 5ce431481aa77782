"""Row-sparse gradients in the fast oracle's lock-steps: a :class:`~adamspec.spec.SparseRows`
turned into the dense per-coordinate gradient the tiers evaluate, and the coordinates they
must leave to mpmath.

The mpmath oracle (:func:`adamspec.oracles.adam._contributions`) gives each coordinate the
list of its contributions (one per occurrence of its row). Then:

* an untouched coordinate has none: the dense-equivalent semantics step it with ``g = 0``
  (the tiers do the same with a zero gradient), the lazy semantics leave it as it is (the
  rounded inputs, written here);
* a coordinate with one contribution is a dense coordinate with ``g`` that value;
* duplicates summed first (``sum_then_square``) give ``g = sum of contributions``: the tiers
  take it when that sum is exact in binary64, which holds when the contributions' exponents
  and count fit 53 bits (:func:`_sums_exact`; float32 values within a factor 2^28 of each
  other, say), and it is an exact double with up to 53 significant bits, whose square the
  tiers then bound as rounded (:attr:`SparseStep.wide`);
* duplicates squared first (``square_then_sum``: v sees ``sum g_i^2``, not ``(sum g_i)^2``)
  give v that sum in binary64 with its error bound (the squares of 24-bit values are
  exact; :attr:`SparseStep.gsq`), and m the exact sum as above; where v lies too near a
  rounding boundary for the bound, or with L2 decay, or in double-double, they are left to
  mpmath, as are a clipped value per contribution (``clipvalue``) and sums that are not
  exact, coordinate by coordinate (whole rows: the oracle is called on those rows).

Clipping by a norm, and an EMA under the lazy semantics (it reads every coordinate's new
parameter), send the call to mpmath whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from adamspec.spec.axes import DuplicateIndices, SparseSemantics, WeightDecay
from adamspec.spec.gradients import SparseRows
from adamspec.spec.variant import Variant


@dataclass
class SparseStep:
    """One tensor's row-sparse gradient at one step, for the tiers."""

    grad: SparseRows
    shape: tuple[int, ...]
    dense: np.ndarray  # float64, flat: each coordinate's gradient (0 where untouched)
    touched: np.ndarray  # bool, flat
    leave: np.ndarray  # bool, flat: coordinates the tiers must leave to mpmath
    narrow: bool  # the contributions are values of a format of at most 24 bits
    wide: bool  # some gradient is a sum of several contributions (up to 53 bits)
    lazy: bool  # untouched coordinates keep their values
    #: square-then-sum duplicates in the tiers: v's term ``sum c_i^2`` (binary64 sum of the
    #: exact squares), its error bound and the coordinates it replaces ``g^2`` at
    gsq: np.ndarray | None = None
    gsq_err: np.ndarray | None = None
    own_square: np.ndarray | None = None

    @property
    def width(self) -> int:
        """Coordinates per row."""
        return int(np.prod(self.shape[1:]))


def densify(
    grad: SparseRows, shape: tuple[int, ...], variant: Variant, hp: Any
) -> SparseStep | str:
    """``grad`` of a tensor of ``shape`` as the tiers take it, or why the call goes to mpmath
    whole."""
    if hp.clipnorm is not None or hp.global_clipnorm is not None:
        return "row-sparse gradients clipped by a norm"
    lazy = variant.sparse is SparseSemantics.LAZY
    if lazy and hp.use_ema:
        return "row-sparse gradients with an EMA under lazy semantics"
    if not shape or grad.num_rows != shape[0]:
        return "row-sparse gradient shape mismatch"
    values = np.asarray(grad.values)
    width = int(np.prod(shape[1:]))
    indices = np.asarray(grad.indices, dtype=np.int64)
    outside = bool(indices.size) and (indices.min() < 0 or indices.max() >= shape[0])
    if values.size != indices.size * width or outside:
        return "row-sparse gradient shape mismatch"
    try:
        precision = _precision(values.dtype)
    except ValueError:
        return "non-float gradient dtype"
    size = int(np.prod(shape))
    # one entry per contribution: the coordinate it adds to, its value
    coords = (indices[:, None] * width + np.arange(width)[None, :]).ravel()
    contributions = values.reshape(-1).astype(np.float64)
    order = np.argsort(coords, kind="stable")
    coords, contributions = coords[order], contributions[order]
    dense = np.zeros(size)
    touched = np.zeros(size, bool)
    leave = np.zeros(size, bool)
    out = SparseStep(grad, shape, dense, touched, leave, precision <= 24, False, lazy)
    if not coords.size:
        return out
    starts = np.flatnonzero(np.diff(coords, prepend=-1))
    where = coords[starts]
    counts = np.diff(np.append(starts, coords.size))
    touched[where] = True
    with np.errstate(invalid="ignore", over="ignore"):
        dense[where] = np.add.reduceat(contributions, starts)
    several = counts > 1
    if not several.any():
        return out
    out.wide = True
    exact = _sums_exact(contributions, starts, counts, precision)
    leave[where[several]] = _leave_duplicates(variant, hp, out.narrow) | ~exact[several]
    if variant.duplicates is DuplicateIndices.SQUARE_THEN_SUM and not leave.all():
        # each square of a value of at most 26 bits is exact in binary64; their sum of n
        # non-negative terms is within (n - 1) u of the exact one
        with np.errstate(invalid="ignore", over="ignore"):
            sums = np.add.reduceat(contributions * contributions, starts)
        out.gsq, out.gsq_err = np.zeros(size), np.zeros(size)
        out.own_square = np.zeros(size, bool)
        out.gsq[where] = sums
        out.gsq_err[where] = (counts - 1) * 2.0**-53 * (1 + 2.0**-40) * sums
        out.own_square[where[several]] = True
    return out


def _leave_duplicates(variant: Variant, hp: Any, narrow: bool) -> bool:
    """Whether every coordinate with several contributions goes to mpmath: each is clipped
    on its own (clipvalue), or v squares each (square-then-sum) where the tiers do not take
    that sum (double-double, or L2 decay: v then sees ``sum c_i^2 + (lambda theta)^2``)."""
    if hp.clipvalue is not None:
        return True
    if variant.duplicates is not DuplicateIndices.SQUARE_THEN_SUM:
        return False
    decays = variant.weight_decay is WeightDecay.L2 and hp.weight_decay != 0
    return not narrow or decays


def _precision(dtype: Any) -> int:
    from adamspec.oracles.rounding import format_of_dtype

    return format_of_dtype(np.dtype(dtype)).precision


def _sums_exact(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, p: int) -> np.ndarray:
    """Per group of contributions (``values[starts[i]:][:counts[i]]``, values of a format of
    ``p`` bits): whether their binary64 sum is exact. Every nonzero contribution is a
    multiple of ``2^(e_min - p)`` (``e_min`` the smallest exponent, :func:`numpy.frexp`'s)
    below ``2^e_max``, so the sum of ``n`` of them is a multiple of it below ``n 2^e_max``:
    at most ``e_max - e_min + p + ceil(log2 n)`` bits, exact when that is at most 53 (and
    when every contribution is finite)."""
    finite = np.isfinite(values)
    nonzero = finite & (values != 0)
    _, exponent = np.frexp(np.where(nonzero, values, 1.0))
    big = np.where(nonzero, exponent, -(2**30))
    small = np.where(nonzero, exponent, 2**30)
    e_max = np.maximum.reduceat(big, starts)
    e_min = np.minimum.reduceat(small, starts)
    all_finite = np.logical_and.reduceat(finite, starts)
    any_nonzero = e_max > -(2**30)
    bits = e_max - e_min + p + np.ceil(np.log2(counts)).astype(np.int64)
    return all_finite & (~any_nonzero | (bits <= 53))


def rows_of(coordinates: np.ndarray, width: int) -> np.ndarray:
    """The rows holding these flat coordinates, sorted."""
    return np.unique(np.asarray(coordinates, np.int64) // width)


def restrict(step: SparseStep, rows: np.ndarray) -> SparseRows:
    """The gradient's entries of ``rows`` (sorted), renumbered as rows ``0..len(rows)-1``."""
    indices = np.asarray(step.grad.indices, np.int64)
    inside = np.isin(indices, rows)
    values = np.asarray(step.grad.values).reshape(len(indices), *step.shape[1:])[inside]
    return SparseRows(np.searchsorted(rows, indices[inside]), values, len(rows))


__all__ = ["SparseStep", "densify", "restrict", "rows_of"]
