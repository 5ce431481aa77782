"""Hypothesis strategies for tests of Adam implementations (ours and users').

They draw the same kinds of inputs the generated problems use: small problems
(:func:`problems`, :func:`runs`), gradient arrays of each regime including
values on and next to the format's boundaries (:func:`gradient_arrays`),
row-sparse gradients with repeated rows (:func:`sparse_rows`), valid
hyperparameters as exact decimal strings (:func:`hypers`) and valid optimizer
states (:func:`states`). Every array is in the requested dtype
(``"float64"``, ``"float32"``, ``"float16"`` or ``"bfloat16"``).

Requires ``hypothesis`` (the ``test`` extra); nothing else in adamspec imports
this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from adamspec.harness.problems import (
    DTYPES,
    PROBLEMS,
    REGIMES,
    Problem,
    largest_finite,
    round_to_dtype,
    smallest_normal,
    smallest_subnormal,
)
from adamspec.spec.formats import FloatFormat, format_named
from adamspec.spec.gradients import SparseRows

#: Regimes :func:`gradient_arrays` draws (the open-loop regimes that describe one array).
GRADIENT_REGIMES: tuple[str, ...] = (
    "typical",
    "tiny-near-eps",
    "huge",
    "mixed-scales",
    "sign-flips-decreasing",
    "exact-zeros",
    "subnormals",
    "boundaries",
)

# hypothesis draws floats of these widths exactly; bfloat16 has no width of its own, so it is
# drawn as float32 and rounded (correctly) to bfloat16.
_WIDTH = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 32}


def _check_dtype(dtype: str) -> FloatFormat:
    return format_named(dtype)


def _range(fmt: FloatFormat, regime: str) -> tuple[float, float]:
    """Magnitude bounds of ``regime`` in ``fmt``, both exactly representable there."""
    top = largest_finite(fmt)
    if regime in ("typical", "sign-flips-decreasing", "exact-zeros"):
        return 0.0, 4.0
    if regime == "tiny-near-eps":  # ~1e-9 .. ~1e-6, where sqrt(v) meets eps = 1e-8
        return max(2.0**-30, smallest_subnormal(fmt)), 2.0**-20
    if regime == "huge":  # ~1e15 .. ~6e29; float16 gets its top seven binades
        hi = min(2.0**99, top)
        return 2.0 ** min(50, fmt.emax - 7), hi
    if regime == "mixed-scales":
        return 2.0 ** max(-100, fmt.emin), min(2.0**100, top)
    if regime == "subnormals":
        return smallest_subnormal(fmt), smallest_normal(fmt) - smallest_subnormal(fmt)
    if regime == "boundaries":
        return smallest_subnormal(fmt), top
    raise ValueError(f"regime={regime!r} is unknown; allowed: {', '.join(GRADIENT_REGIMES)}")


def _boundaries(fmt: FloatFormat, lo: float, hi: float) -> st.SearchStrategy[float]:
    """Powers of two in [lo, hi] and their neighbours in ``fmt``: where roundings change."""
    e_hi = math.frexp(hi)[1] - 1
    # From 0 (typical magnitudes) the interesting edges are the binades just below hi.
    e_lo = math.frexp(lo)[1] - 1 if lo > 0 else e_hi - 12
    e_lo = max(fmt.quantum_exponent_min, e_lo)

    def build(e: int, offset: int) -> float:
        x = 2.0**e
        # Spacing just above 2**e is 2**(e - p + 1), just below it half that; both are at least
        # the subnormal quantum.
        up = 2.0 ** max(e - fmt.precision + 1, fmt.quantum_exponent_min)
        down = 2.0 ** max(e - fmt.precision, fmt.quantum_exponent_min)
        value = x + up if offset > 0 else (x - down if offset < 0 else x)
        return min(max(value, lo), hi)

    edges = st.builds(build, st.integers(e_lo, max(e_lo, e_hi)), st.sampled_from((-1, 0, 1)))
    return st.one_of(edges, st.sampled_from(sorted({lo, hi})))


def _magnitudes(dtype: str, regime: str) -> st.SearchStrategy[float]:
    fmt = _check_dtype(dtype)
    lo, hi = _range(fmt, regime)
    floats = st.floats(
        min_value=lo,
        max_value=hi,
        width=_WIDTH[dtype],
        allow_subnormal=lo < smallest_normal(fmt),
    )
    if regime == "boundaries":
        return _boundaries(fmt, lo, hi)
    return st.one_of(floats, _boundaries(fmt, lo, hi))


def _signed(magnitudes: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    return st.builds(lambda m, neg: -m if neg else m, magnitudes, st.booleans())


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)


def gradient_arrays(
    dtype: str, shape: Sequence[int] | int, regime: str = "typical"
) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` in ``dtype`` whose values follow ``regime`` (see GRADIENT_REGIMES).

    Each regime mixes values drawn across its range with powers of two and
    their neighbours (the edges where rounding changes); ``boundaries`` draws
    only those, over the whole finite range, subnormals included.
    ``sign-flips-decreasing`` orders the flattened array by decreasing
    magnitude with alternating signs.
    """
    fmt = _check_dtype(dtype)
    if regime not in GRADIENT_REGIMES:
        raise ValueError(f"regime={regime!r} is unknown; allowed: {', '.join(GRADIENT_REGIMES)}")
    shape = _shape(shape)
    elements = _signed(_magnitudes(dtype, regime))
    if regime == "exact-zeros":
        elements = st.one_of(st.sampled_from((0.0, -0.0)), elements)
    if regime == "sign-flips-decreasing":
        elements = _magnitudes(dtype, regime)
    arrays = hnp.arrays(np.float64, shape, elements=elements)

    def finish(a: np.ndarray) -> np.ndarray:
        if regime == "sign-flips-decreasing":
            flat = -np.sort(-a.ravel())
            flat = flat * np.where(np.arange(flat.size) % 2 == 0, 1.0, -1.0)
            a = flat.reshape(shape)
        return round_to_dtype(a, fmt.name)

    return arrays.map(finish)


@st.composite
def _sparse_rows(
    draw: st.DrawFn, dense_shape: tuple[int, ...], dtype: str, regime: str, max_lookups: int
) -> SparseRows:
    rows, rest = dense_shape[0], dense_shape[1:]
    idx = draw(st.lists(st.integers(0, rows - 1), min_size=1, max_size=max(1, max_lookups - 1)))
    # Always at least one repeated row: how duplicates combine is a variant axis.
    idx.insert(draw(st.integers(0, len(idx))), draw(st.sampled_from(idx)))
    values = draw(gradient_arrays(dtype, (len(idx), *rest), regime))
    return SparseRows(np.array(idx, dtype=np.int64), values, rows)


def sparse_rows(
    dense_shape: Sequence[int],
    dtype: str,
    regime: str = "typical",
    max_lookups: int | None = None,
) -> st.SearchStrategy[SparseRows]:
    """Row-sparse gradients of a ``dense_shape`` table, always with a repeated row index."""
    dense_shape = _shape(dense_shape)
    if len(dense_shape) < 1 or dense_shape[0] < 1:
        raise ValueError(f"dense_shape={dense_shape} needs at least one row")
    _check_dtype(dtype)
    return _sparse_rows(dense_shape, dtype, regime, max_lookups or 2 * dense_shape[0] + 1)


def _decimal(mantissas: tuple[int, int], exponents: tuple[int, int]) -> st.SearchStrategy[str]:
    return st.builds(lambda m, e: f"{m}e-{e}", st.integers(*mantissas), st.integers(*exponents))


def _unit_open(common: Sequence[str]) -> st.SearchStrategy[str]:
    # 0.0001 .. 0.9999: strictly inside (0, 1), with the documented values drawn often.
    return st.one_of(
        st.sampled_from(tuple(common)), st.integers(1, 9999).map(lambda n: f"0.{n:04d}")
    )


def hypers() -> st.SearchStrategy[dict[str, str]]:
    """Valid hyperparameters as exact decimal strings for :func:`adamspec.spec.hyper.make_hyper`.

    lr in (0, 1), beta1 and beta2 in (0, 1), eps >= 0, weight_decay >= 0.
    """
    return st.fixed_dictionaries(
        {
            "lr": st.one_of(st.sampled_from(("0.001", "0.01", "0.1")), _decimal((1, 9), (1, 6))),
            "beta1": _unit_open(("0.9", "0.5", "0.99")),
            "beta2": _unit_open(("0.999", "0.99", "0.9999")),
            "eps": st.one_of(
                st.sampled_from(("0", "1e-8", "1e-7", "1e-3")), _decimal((1, 9), (1, 12))
            ),
            "weight_decay": st.one_of(st.sampled_from(("0", "0.01")), _decimal((1, 9), (1, 5))),
        }
    )


class MomentState(NamedTuple):
    """An optimizer state drawn by :func:`states`: per-tensor m, v, v_max (or None) and step."""

    m: list[np.ndarray]
    v: list[np.ndarray]
    v_max: list[np.ndarray] | None
    step: int


_STATE_REGIMES = ("typical", "tiny-near-eps", "huge", "subnormals", "exact-zeros", "boundaries")


@st.composite
def _states(
    draw: st.DrawFn, dtype: str, shapes: tuple[tuple[int, ...], ...], amsgrad: bool, max_step: int
) -> MomentState:
    def tensor(shape: tuple[int, ...], signed: bool) -> np.ndarray:
        a = draw(gradient_arrays(dtype, shape, draw(st.sampled_from(_STATE_REGIMES))))
        return a if signed else np.abs(a)  # |-0.0| is +0.0: v is never negative

    m = [tensor(s, True) for s in shapes]
    v = [tensor(s, False) for s in shapes]
    # max(v, w) with w >= 0 in the same dtype: v_max >= v holds exactly.
    v_max = [np.maximum(vi, tensor(s, False)) for vi, s in zip(v, shapes, strict=True)]
    step = draw(st.integers(0, max_step))
    return MomentState(m, v, v_max if amsgrad else None, step)


def states(
    dtype: str, shapes: Sequence[Sequence[int]], amsgrad: bool, max_step: int = 100_000
) -> st.SearchStrategy[MomentState]:
    """Valid states for ``shapes`` in ``dtype``: any finite m, v >= 0, v_max >= v, a step count."""
    _check_dtype(dtype)
    shapes_t = tuple(_shape(s) for s in shapes)
    if not shapes_t:
        raise ValueError("shapes is empty; a state needs at least one tensor")
    return _states(dtype, shapes_t, bool(amsgrad), max_step)


# ------------------------------------------------------------------ problems


def _selected(regimes: Iterable[str] | None, dtypes: Iterable[str] | None) -> list[Problem]:
    chosen = list(PROBLEMS.values())
    if regimes is not None:
        wanted = set(regimes)
        known = set(REGIMES) | {p.name for p in chosen} | {p.kind for p in chosen}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(
                f"regime {unknown[0]!r} is unknown; allowed: {', '.join(REGIMES)} or a problem "
                f"name ({', '.join(PROBLEMS)})"
            )
        chosen = [p for p in chosen if wanted & {p.regime, p.name, p.kind}]
    if dtypes is not None:
        wanted_dtypes = set(dtypes)
        for d in wanted_dtypes:
            _check_dtype(d)
        chosen = [p for p in chosen if wanted_dtypes & set(p.meaningful_dtypes)]
    if not chosen:
        raise ValueError(f"no problem matches regimes={regimes!r} and dtypes={dtypes!r}")
    return chosen


@st.composite
def _open_shapes(draw: st.DrawFn, sparse: bool, max_coords: int) -> tuple[tuple[int, ...], ...]:
    shapes: list[tuple[int, ...]] = []
    budget = max_coords
    if sparse:  # tensor 0 is the (rows, dim) table
        rows = draw(st.integers(1, max(1, min(4, budget))))
        dim = draw(st.integers(1, max(1, min(2, budget // rows))))
        shapes.append((rows, dim))
        budget -= rows * dim
    for _ in range(draw(st.integers(0 if shapes else 1, 2 - len(shapes)))):
        if budget < 1:
            break
        ndim = draw(st.integers(1, 2))
        first = draw(st.integers(1, min(3, budget)))
        shape = (first,) if ndim == 1 else (first, draw(st.integers(1, max(1, budget // first))))
        shapes.append(shape)
        budget -= math.prod(shape)
    return tuple(shapes)


@st.composite
def _problems(draw: st.DrawFn, chosen: list[Problem], max_steps: int, max_coords: int) -> Problem:
    base = draw(st.sampled_from(chosen))
    steps = draw(st.integers(1, max_steps))
    if base.regime == "open":
        shapes = draw(_open_shapes(base.sparse, max_coords))
    elif base.kind == "quadratic":
        shapes = ((draw(st.integers(1, max_coords)),),)
    elif base.kind == "logistic-regression":
        shapes = ((draw(st.integers(1, max(1, max_coords - 1))),), (1,))
    elif base.kind == "embedding":
        rows, dim = draw(st.integers(1, 4)), draw(st.integers(1, 2))
        shapes = ((rows, dim), (dim,))
    else:  # the other objectives have fixed shapes
        shapes = base.shapes
    return base.with_(steps=steps, shapes=shapes)


def problems(
    regimes: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    *,
    max_steps: int = 3,
    max_coords: int = 8,
) -> st.SearchStrategy[Problem]:
    """Registered problems resized small (``max_steps`` steps, about ``max_coords`` coordinates).

    ``regimes`` keeps problems whose regime (``"open"``/``"closed"``), name or
    kind is listed; ``dtypes`` keeps those meaningful in at least one listed
    dtype (see :attr:`Problem.meaningful_dtypes`). Objectives with fixed
    shapes (rosenbrock, mlp, ...) keep them.
    """
    if max_steps < 1 or max_coords < 1:
        raise ValueError(f"max_steps={max_steps} and max_coords={max_coords} must be >= 1")
    return _problems(_selected(regimes, dtypes), max_steps, max_coords)


@st.composite
def _runs(
    draw: st.DrawFn, dtypes: tuple[str, ...], inner: st.SearchStrategy[Problem]
) -> tuple[Problem, str, int]:
    p = draw(inner)
    dtype = draw(st.sampled_from([d for d in dtypes if d in p.meaningful_dtypes]))
    return p, dtype, draw(st.integers(0, 2**32 - 1))


def runs(
    regimes: Iterable[str] | None = None, dtypes: Iterable[str] | None = None, **sizes: Any
) -> st.SearchStrategy[tuple[Problem, str, int]]:
    """``(problem, dtype, seed)`` triples: a :func:`problems` draw, a meaningful dtype, a seed."""
    dtypes_t = tuple(dtypes) if dtypes is not None else DTYPES
    return _runs(dtypes_t, problems(regimes, dtypes_t, **sizes))


__all__ = [
    "GRADIENT_REGIMES",
    "MomentState",
    "gradient_arrays",
    "hypers",
    "problems",
    "runs",
    "sparse_rows",
    "states",
]
