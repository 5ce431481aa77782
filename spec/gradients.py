"""Gradient containers shared by the oracle, the implementations and the harness.

Only structure lives here (no numerics): a row-sparse gradient as embedding
lookups produce it, with possibly repeated row indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SparseRows:
    """A row-sparse gradient of a parameter whose first axis indexes rows.

    ``values[k]`` is the gradient contribution to row ``indices[k]``; an index
    may repeat, and how repeats combine is the variant's ``duplicates`` axis.
    Rows that never appear are untouched, and whether their moments still
    decay is the variant's ``sparse`` axis.
    """

    indices: Any
    values: Any
    num_rows: int

    def __post_init__(self) -> None:
        n = len(self.indices)
        if len(self.values) != n:
            raise ValueError(
                f"SparseRows has {n} indices but {len(self.values)} value rows; they must match"
            )
        for i in self.indices:
            if not 0 <= int(i) < self.num_rows:
                raise ValueError(f"row index {int(i)} is outside [0, {self.num_rows})")
