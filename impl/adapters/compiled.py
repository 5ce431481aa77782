"""Compiled steps, built once per configuration and shared by the adapters of a process.

Practitioners run compiled steps (``torch.compile``, ``tf.function(jit_compile=True)``,
``jax.jit``), so those are implementations under test of their own, registered beside
the eager ones (``AdapterInfo.eager_counterpart`` names the eager twin). The harness
builds a new adapter for every problem; compiling per adapter would cost seconds to
minutes per implementation. So each compiled adapter keeps its framework objects (the
variables or parameters, the optimizer and the compiled step) in :data:`CACHE`, keyed by
what the compiled code depends on: configuration, dtype, shapes and hyperparameters. A
later adapter with the same key takes the same objects; its ``set_state`` writes into
them in place, so neither the compiled code's guards nor its buffers change and nothing
recompiles. An entry is used by one adapter at a time (a second one at the same time
builds its own).

A compiled path that cannot run here raises
:class:`~adamspec.impl.adapters.base.Unsupported` with the reason; it never falls back
to eager execution silently (each adapter checks that a compiled program ran).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Compiled:
    """One configuration's framework objects and what compiling and stepping them cost.

    ``objects`` is whatever the adapter needs (a dict by convention). ``first_step_s`` is
    the wall time of the first step, which traces and compiles; ``step_s`` the total of
    the later steps, ``steps`` their count.
    """

    key: Hashable
    objects: dict[str, Any]
    in_use: bool = False
    first_step_s: float | None = None
    step_s: float = 0.0
    steps: int = 0

    def timed(self, run: Callable[[], Any]) -> Any:
        """``run()`` (one step), its time added to the first-step or the later-step total."""
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        if self.first_step_s is None:
            self.first_step_s = elapsed
        else:
            self.step_s += elapsed
            self.steps += 1
        return result

    @property
    def compiled(self) -> bool:
        """True once a step has run (and so compiled)."""
        return self.first_step_s is not None


@dataclass
class CompiledCache:
    """Compiled entries of this process by key (see the module docstring)."""

    entries: dict[Hashable, list[Compiled]] = field(default_factory=dict)

    def take(self, key: Hashable, build: Callable[[], dict[str, Any]]) -> Compiled:
        """A free entry for ``key``, built by ``build()`` when there is none; marked in use."""
        for entry in self.entries.get(key, []):
            if not entry.in_use:
                entry.in_use = True
                return entry
        entry = Compiled(key, build(), in_use=True)
        self.entries.setdefault(key, []).append(entry)
        return entry

    @staticmethod
    def give_back(entry: Compiled) -> None:
        entry.in_use = False

    def timings(self) -> list[dict[str, Any]]:
        """Per entry: its key, the first (compiling) step's seconds and the mean later step's."""
        return [
            {
                "key": entry.key,
                "first_step_s": entry.first_step_s,
                "step_s": entry.step_s / entry.steps if entry.steps else None,
                "steps": entry.steps,
            }
            for entries in self.entries.values()
            for entry in entries
        ]


#: The process's compiled entries (a worker process has its own).
CACHE = CompiledCache()


class HoldsCompiled:
    """Mixin of compiled adapters: takes the entry of its configuration from :data:`CACHE`
    (``_take_compiled``) and gives it back on ``close``. Put it before the adapter class
    in the bases, so its ``close`` is the one called."""

    _entry: Compiled | None = None
    name: str
    dtype: str
    shapes: list[tuple[int, ...]]
    hyper: Any

    def _take_compiled(self, build: Callable[[], dict[str, Any]]) -> Compiled:
        """This adapter's entry: what the compiled code depends on is the key."""
        key = (self.name, self.dtype, tuple(self.shapes), self.hyper)
        self._entry = CACHE.take(key, build)
        return self._entry

    def close(self) -> None:
        if self._entry is not None:
            CACHE.give_back(self._entry)
            self._entry = None
