"""Index localization: where in a tensor the failing coordinates are, and whether that is
the shape of a bug in index arithmetic rather than in the formula.

A kernel's vector main loop, its GPU blocks and its index types each own a range or a
pattern of indices: a bug there fails coordinates in full blocks but not in the scalar tail,
from 2^16 or 2^24 on, or every k-th one. :func:`localize` reads a case's failing
coordinates (:class:`~adamspec.harness.chunks.TensorFindings`, merged over its steps) and
names such a pattern when the evidence is clear:

* **block tail**: the failures stop before the last ``N mod B`` coordinates, which pass
  at every step, for a block size ``B`` in :data:`BLOCKS` (every ``B`` leaving that tail
  is named: 2^24 + 4099 coordinates leave 3 after blocks of 1024, 2048 or 4096), and they
  fill most of what lies before;
* **periodic**: every failing index is ``first + j k`` (``k > 1``) and at least
  :data:`DENSITY` of those indices fail;
* **range**: the failures fill most of ``[first, last]`` (:data:`DENSITY`) and the
  coordinates outside, at least :data:`MIN_OUTSIDE` of them, all pass.

A formula bug fails coordinates by their values, spread over the whole tensor: none of
these holds (a tensor of fewer than :data:`MIN_SIZE` coordinates is never read as a
pattern). The ``index-dependent`` category (:mod:`adamspec.harness.classify`) applies when
a pattern is named and no single change of the formula explains the error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adamspec.harness.chunks import TensorFindings

#: Block sizes a main loop may step by: SIMD vectors (8 to 64 lanes), unrolled loops, GPU
#: blocks and tiles.
BLOCKS: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

#: Fraction of a pattern's indices that must fail for the pattern to be named.
DENSITY = 0.5

#: Passing coordinates outside a range that make the range a finding, not chance.
MIN_OUTSIDE = 16

#: Fewest coordinates in which a pattern is read.
MIN_SIZE = 64


@dataclass(frozen=True)
class Localization:
    """Where a case's failing coordinates are: the first failing tensor and index, how many
    coordinates fail (distinct, over every step), the pattern (``""`` when none is clear)
    and the sentence the reports show."""

    tensor: int = -1
    first_index: int = -1
    count: int = 0
    pattern: str = ""
    text: str = ""

    @property
    def index_dependent(self) -> bool:
        return bool(self.pattern)


def _power_of_two(i: int) -> str:
    return f" (2^{i.bit_length() - 1})" if i >= 256 and i & (i - 1) == 0 else ""


def pattern(found: TensorFindings) -> str:
    """The index pattern of one tensor's failing coordinates, or ``""``."""
    s, n = found.summary, found.size
    if not s.count or n < MIN_SIZE:
        return ""
    tail = n - 1 - s.last
    blocks = [b for b in BLOCKS if n >= 2 * b and n % b == tail]
    if tail and blocks and s.count >= DENSITY * (s.last + 1 - s.first):
        sizes = str(blocks[0]) if len(blocks) == 1 else f"{blocks[0]} to {blocks[-1]}"
        tail_range = f"[{n - tail}, {n})"
        return f"in full blocks (of {sizes} elements), not the {tail}-coordinate tail {tail_range}"
    span = s.last - s.first + 1
    if s.period > 1 and s.count >= 4 and s.count >= DENSITY * (span // s.period + 1):
        where = (
            "" if s.first < s.period and s.last + s.period >= n else f" in [{s.first}, {s.last}]"
        )
        return f"every {s.period}th coordinate (index = {s.first % s.period} mod {s.period}){where}"
    outside = n - span
    if outside >= MIN_OUTSIDE and s.count >= DENSITY * span:
        start = f"from index {s.first}{_power_of_two(s.first)} on" if s.last == n - 1 else ""
        end = f"below index {s.last + 1}{_power_of_two(s.last + 1)}" if s.first == 0 else ""
        return start or end or f"confined to indices [{s.first}, {s.last}]"
    return ""


def localize(
    findings: Mapping[int, TensorFindings], shapes: Sequence[tuple[int, ...]]
) -> Localization:
    """The localization of a case from its tensors' findings (tensor -> findings)."""
    failing = [(k, f) for k, f in sorted(findings.items()) if f.summary.count]
    if not failing:
        return Localization()
    k, first = failing[0]
    count = sum(f.summary.count for _, f in failing)
    size = sum(f.size for f in findings.values())
    several = len(shapes) > 1
    found = []
    for j, f in failing:
        named = pattern(f)
        where = f"tensor {j} {tuple(shapes[j])}: " if several else ""
        found.append((named, f"{where}{f.summary.count} of {f.size} fail, first at index "
                             f"{f.summary.first}" + (f"; {named}" if named else "")))  # fmt: skip
    # a pattern is a finding only when every failing tensor shows one
    named = "; ".join(p for p, _ in found) if all(p for p, _ in found) else ""
    text = f"{count} of {size} coordinates fail: " + "; ".join(t for _, t in found)
    return Localization(k, first.summary.first, count, named, text)
