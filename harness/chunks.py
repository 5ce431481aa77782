"""Chunks: the unit of verification of one step of a big tensor.

A step's tensors are cut into :class:`Chunk` s of at most :data:`CHUNK` coordinates (whole
rows of a row-sparse table). :func:`verify_chunk` is a pure function of the variant, the
hyperparameters, the budget and one chunk -- its before-state, gradient and after-state
(the step counter is the before-state's) and the global index of its first coordinate --
and returns a :class:`ChunkResult`: the worst error per component, where the failing
coordinates are (:class:`IndexSummary`, their bitmap), each index bin's worst budget
multiple (the error-vs-index plot) and the coordinates that would first show a relative
error (:mod:`adamspec.harness.power`). :meth:`ChunkResult.merge` is associative; the
engine merges a step's chunks in (tensor, offset) order, so nothing depends on how a step
was cut or on which worker verified which chunk (:func:`verify_step`).

The oracle's step of a chunk is the oracle's step of the whole tensor restricted to it:
Adam is elementwise, and a row-sparse gradient's rows are cut whole. Clipping by a norm is
not elementwise, so :func:`chunks` keeps such tensors whole.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from adamspec.harness.budgets import Budget
from adamspec.harness.cluster import map_ordered
from adamspec.harness.engine import (
    State,
    StepErrors,
    StepRecord,
    _merge,
    component_scales,
    oracle_clock,
    oracle_name,
    oracle_seconds_elsewhere,
    oracle_state,
    oracle_step,
    tensor_errors,
    use_oracle,
    worst_of,
)
from adamspec.harness.power import Candidates, candidates, merge_candidates
from adamspec.oracles.fast import FastStats, count_elsewhere, counting
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.variant import Variant

#: Coordinates per chunk: the fast oracle's best size here (2^16 float32 coordinates in
#: about 2 ms), and a few MiB of buffers per chunk.
CHUNK = 1 << 16

#: Chunks per task when a step is verified on a cluster: 2^20 coordinates, about 0.24 s of
#: one core's verification (measured) against 29 MB of float32 arrays sent (before,
#: gradient, after; about 25 ms on a 10 Gbit/s link), far above Dask's per-task overhead
#: (about 1 ms).
#: ``ADAMSPEC_TASK_COORDINATES`` sets another size (docs/cluster.md says how to choose).
CHUNKS_PER_TASK = 16


def chunks_per_task() -> int:
    """:data:`CHUNKS_PER_TASK`, or ``ADAMSPEC_TASK_COORDINATES`` / :data:`CHUNK` (at least 1).
    The merge is associative: the size changes where work runs, never the results."""
    text = os.environ.get("ADAMSPEC_TASK_COORDINATES", "")
    return max(1, int(text) // CHUNK) if text.isdigit() else CHUNKS_PER_TASK


#: Bins of a tensor's error-vs-index profile.
PROFILE_BINS = 256

#: Failing coordinates a chunk result names (the first ones, by index), for the sampled
#: trace that classification reads.
FIRST_FAILING = 64


@dataclass(frozen=True)
class IndexSummary:
    """Where failing coordinates are, mergeable: how many, the first and last index, and the
    gcd of their distances from the first (``period``: 0 with fewer than two)."""

    count: int = 0
    first: int = -1
    last: int = -1
    period: int = 0

    @staticmethod
    def of(indices: np.ndarray) -> IndexSummary:
        """The summary of sorted, distinct global indices."""
        if indices.size == 0:
            return IndexSummary()
        first = int(indices[0])
        period = int(np.gcd.reduce(indices - first)) if indices.size > 1 else 0
        return IndexSummary(int(indices.size), first, int(indices[-1]), period)

    def merge(self, other: IndexSummary) -> IndexSummary:
        """The summary of the union of two disjoint index sets (of two overlapping ones,
        all but the count)."""
        if not self.count:
            return other
        if not other.count:
            return self
        a, b = (self, other) if self.first <= other.first else (other, self)
        period = math.gcd(a.period, b.period, b.first - a.first)
        return IndexSummary(a.count + b.count, a.first, max(a.last, b.last), period)


@dataclass
class TensorFindings:
    """One tensor's failing coordinates in a chunk, a step or a case: their summary, their
    bitmap (``np.packbits`` of the tensor's coordinates, bit ``i`` for index ``i``; only
    the chunk's own bytes until merged) and the profile's worst multiple per bin."""

    size: int
    summary: IndexSummary = IndexSummary()
    bits: dict[int, np.ndarray] = field(default_factory=dict)  # byte offset -> packed bits
    profile: np.ndarray = field(default_factory=lambda: np.zeros(PROFILE_BINS))

    def merge(self, other: TensorFindings) -> TensorFindings:
        """Disjoint chunks of one step (``other``'s bits are new bytes) or two steps."""
        bits = dict(self.bits)
        for at, piece in other.bits.items():
            bits[at] = piece | bits[at] if at in bits else piece
        return TensorFindings(
            self.size,
            self.summary.merge(other.summary),
            bits,
            np.fmax(self.profile, other.profile),
        )

    def union(self, other: TensorFindings) -> TensorFindings:
        """The same tensor at another step: failing sets may overlap, so the count is the
        merged bitmap's (distinct coordinates); first, last and period hold for a union."""
        merged = self.merge(other)
        count = sum(int(np.bitwise_count(piece).sum()) for piece in merged.bits.values())
        return replace(merged, summary=replace(merged.summary, count=count))

    def failing_indices(self, bits: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """The failing coordinates' indices, sorted."""
        parts = []
        for at, piece in sorted((bits if bits is not None else self.bits).items()):
            parts.append(np.flatnonzero(np.unpackbits(piece)) + 8 * at)
        found = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return found[found < self.size]


@dataclass
class ChunkResult:
    """A chunk's (or a merge of chunks') verification; see the module docstring."""

    errors: StepErrors = field(default_factory=dict)
    tensors: dict[int, TensorFindings] = field(default_factory=dict)
    first_failing: tuple[tuple[int, int], ...] = ()  # (tensor, index), the first few
    power: Candidates = field(default_factory=dict)

    def merge(self, other: ChunkResult) -> ChunkResult:
        errors = dict(self.errors)
        for name, err in other.errors.items():
            errors[name] = _merge(errors.get(name), err)
        tensors = dict(self.tensors)
        for k, found in other.tensors.items():
            tensors[k] = tensors[k].merge(found) if k in tensors else found
        first = tuple(sorted({*self.first_failing, *other.first_failing})[:FIRST_FAILING])
        return ChunkResult(errors, tensors, first, merge_candidates(self.power, other.power))


@dataclass(frozen=True)
class Chunk:
    """Coordinates ``[offset, offset + n)`` of tensor ``tensor`` (of ``size`` coordinates)
    at one step: one-tensor states and gradient, flat (or whole rows of a sparse table)."""

    tensor: int
    offset: int
    size: int
    before: State
    grad: Any
    after: State


def verify_chunk(
    variant: Variant, hyper: Hyper, budget: Budget, chunk: Chunk, power: bool = True
) -> ChunkResult:
    """The oracle's step of ``chunk`` from its before-state and each coordinate's error
    (``power``: and the coordinates that measure the suite's power)."""
    before, after = chunk.before, chunk.after
    reference = oracle_step(
        variant, hyper, list(before.params), [chunk.grad], oracle_state(before, variant)
    )
    scales = component_scales(before, [chunk.grad], 0, hyper, reference, variant)
    per_component = tensor_errors(before, [chunk.grad], after, reference, variant, hyper, 0, scales)
    errors = {name: worst_of(e) for name, e in per_component.items()}
    multiples = np.zeros(before.params[0].size)
    for name, e in per_component.items():
        multiples = np.fmax(multiples, e.multiples(name, budget))
    # the component-level verdict reads max ULP and max scaled separately: a coordinate fails
    # when it alone is over budget
    failing = np.flatnonzero(multiples > 1)
    found = TensorFindings(
        chunk.size,
        IndexSummary.of(failing + chunk.offset),
        _bits(failing, multiples.size, chunk.offset),
        _profile(multiples, chunk.offset, chunk.size),
    )
    first = tuple((chunk.tensor, int(i) + chunk.offset) for i in failing[:FIRST_FAILING])
    sensitive = candidates(before, after, reference, variant, budget, scales) if power else {}
    return ChunkResult(errors, {chunk.tensor: found}, first, sensitive)


def _bits(failing: np.ndarray, n: int, offset: int) -> dict[int, np.ndarray]:
    """The chunk's failing coordinates as packed bits at byte ``offset // 8`` (chunks start
    at multiples of 8 coordinates, see :func:`chunks`)."""
    if not failing.size:
        return {}
    mask = np.zeros(n, bool)
    mask[failing] = True
    return {offset // 8: np.packbits(mask)}


def _profile(multiples: np.ndarray, offset: int, size: int) -> np.ndarray:
    """The worst budget multiple per bin of the tensor's index range (0: no coordinate)."""
    out = np.zeros(PROFILE_BINS)
    if not multiples.size:
        return out
    bins = (np.arange(offset, offset + multiples.size, dtype=np.int64) * PROFILE_BINS) // size
    starts = np.flatnonzero(np.diff(bins, prepend=-1))  # indices are increasing: bins too
    values = np.where(np.isnan(multiples), np.inf, multiples)
    out[bins[starts]] = np.maximum.reduceat(values, starts)
    return out


# ------------------------------------------------------------------------ cutting a step


def _rows(grad: Any, shape: tuple[int, ...]) -> int:
    """Coordinates per row a chunk must keep whole (a sparse table's rows), else 1."""
    return math.prod(shape[1:]) if isinstance(grad, SparseRows) else 1


def chunks(record: StepRecord, whole: bool = False) -> Iterator[Chunk]:
    """``record``'s tensors cut into chunks, in (tensor, offset) order; ``whole``: one chunk
    per tensor (clipping by a norm). A chunk's size is a multiple of 8 (its bitmap is whole
    bytes) and of a sparse table's row width."""
    # one C-ordered copy of a transposed (Fortran-ordered) tensor per step, not one per chunk
    before, after = _contiguous(record.before), _contiguous(record.after)
    grads = [g if isinstance(g, SparseRows) else np.ascontiguousarray(g) for g in record.grads]
    for k, param in enumerate(before.params):
        shape, size = param.shape, param.size
        width = _rows(grads[k], shape)
        step = size if whole else max(width, (CHUNK // width) * width)
        step = math.lcm(step, 8) if step < size else size
        for lo in range(0, size, step):
            hi = min(size, lo + step)
            yield Chunk(
                k,
                lo,
                size,
                _restrict(before, k, lo, hi, width),
                _restrict_grad(grads[k], shape, lo, hi, width),
                _restrict(after, k, lo, hi, width),
            )


def _contiguous(state: State) -> State:
    def each(xs: Sequence[np.ndarray] | None) -> list[np.ndarray] | None:
        return None if xs is None else [np.ascontiguousarray(x) for x in xs]

    extras = {k: each(v) if k == "ema" else v for k, v in state.extras.items()}
    return State(each(state.params), each(state.m), each(state.v), each(state.v_max),
                 state.step, extras, each(state.master))  # fmt: skip


def _flat(a: np.ndarray, lo: int, hi: int, width: int) -> np.ndarray:
    if width > 1:  # whole rows of a table, as a table
        return a.reshape(a.shape[0], -1)[lo // width : hi // width]
    return a.reshape(-1)[lo:hi]


def _restrict(state: State, k: int, lo: int, hi: int, width: int) -> State:
    """Tensor ``k``'s coordinates ``[lo, hi)`` of ``state`` as a one-tensor state (per
    coordinate extras, the EMA, cut alike; scalar extras, the beta powers, kept)."""

    def cut(tensors: Sequence[np.ndarray] | None) -> list[np.ndarray] | None:
        return None if tensors is None else [_flat(np.asarray(tensors[k]), lo, hi, width)]

    extras = {name: cut(value) if name == "ema" else value for name, value in state.extras.items()}
    return State(cut(state.params), cut(state.m), cut(state.v), cut(state.v_max), state.step,
                 extras, cut(state.master))  # fmt: skip


def _restrict_grad(grad: Any, shape: tuple[int, ...], lo: int, hi: int, width: int) -> Any:
    if not isinstance(grad, SparseRows):
        return _flat(np.asarray(grad), lo, hi, 1)
    r0, r1 = lo // width, hi // width
    indices = np.asarray(grad.indices)
    inside = (indices >= r0) & (indices < r1)
    values = np.asarray(grad.values).reshape(len(indices), -1)[inside]
    return SparseRows(indices[inside] - r0, values.reshape(-1, *shape[1:]), r1 - r0)


def verify_step(
    variant: Variant,
    hyper: Hyper,
    budget: Budget,
    record: StepRecord,
    whole: bool = False,
    power: bool = True,
) -> ChunkResult:
    """Every chunk of one step, merged in order: in batches of :func:`chunks_per_task`,
    each verified where :func:`~adamspec.harness.cluster.map_ordered` sends it (a cluster's
    workers when this process runs a task for one: a user's kernel steps here, the oracle
    runs there; else right here). The merge is the same either way, and the oracle's work
    done elsewhere is counted here (the fallback rate, the oracle's share of the time)."""
    argses = ((oracle_name(), variant, hyper, budget, batch, power)
              for batch in _batched(chunks(record, whole), chunks_per_task()))  # fmt: skip
    out = ChunkResult()
    for batch in map_ordered(verify_chunks, argses):
        if batch.pid != os.getpid():
            count_elsewhere(batch.stats)
            oracle_seconds_elsewhere(batch.oracle_seconds)
        out = out.merge(batch.result)
    return out


@dataclass
class VerifiedBatch:
    """:func:`verify_chunks`' answer: the merged result, and the oracle's counts and time
    in the process (``pid``) that verified it."""

    result: ChunkResult
    stats: FastStats
    oracle_seconds: float
    pid: int


def verify_chunks(
    oracle: str,
    variant: Variant,
    hyper: Hyper,
    budget: Budget,
    batch: Sequence[Chunk],
    power: bool = True,
) -> VerifiedBatch:
    """:func:`verify_chunk` of each chunk of ``batch`` against oracle ``oracle``, merged in
    order: one task of a step verified on a cluster."""
    use_oracle(oracle)  # a Dask worker's process starts with the default
    out = ChunkResult()
    with counting() as stats, oracle_clock() as seconds:
        for chunk in batch:
            out = out.merge(verify_chunk(variant, hyper, budget, chunk, power))
    return VerifiedBatch(out, stats, seconds[0], os.getpid())


def _batched(items: Iterator[Chunk], n: int) -> Iterator[tuple[Chunk, ...]]:
    """``items`` in tuples of ``n`` (the last shorter), made as they are consumed
    (``itertools.batched`` from Python 3.12)."""
    while batch := tuple(itertools.islice(items, n)):
        yield batch
