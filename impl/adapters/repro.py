"""Reproduction scripts: one step of an adapter written as a standalone program.

The harness finds a step worth showing (a minimal counterexample); the adapter class
that drives the framework knows how a user drives it, so it renders that step, with
:meth:`adamspec.impl.adapters.base.Adapter.reproduction_program`, as a :class:`Program`
against the framework's public API. The harness wraps the program with what is the
same for every framework: a header comment, the oracle's values and one line per
component printing ``got [...] matches|DIFFERS from adamspec oracle [...]``.

This module holds the input (:class:`StepToReproduce`), the output (:class:`Program`)
and the literal writers every program shares. Every float in a program is written
exactly: as a hex float in Python (``value([...], shape)``, each program defining its
own ``value`` helper on top of the shared ``exact``), as its float32 bits in
JavaScript (``f32([...], shape)``). Hyperparameters are written as the Python floats
the adapters pass (the shortest repr of the correctly rounded binary64), which is what
a user typing the documented decimal passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper

if TYPE_CHECKING:  # base imports this module: no import of base at run time
    from adamspec.impl.adapters.base import AdapterInfo, State

#: Writes a sparse gradient in a framework's form from ``indices`` (a literal list),
#: ``values`` (a ``value(...)`` expression) and the dense shape.
SparseLiteral = Callable[[str, str, tuple[int, ...]], str]


class OneTensorStep:
    """What a record of one step of one tensor derives from ``before``, its starting state
    (shared by :class:`StepToReproduce` and the harness's counterexamples)."""

    before: State

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the one tensor stepped."""
        return tuple(self.before.params[0].shape)

    @property
    def step(self) -> int:
        """Steps taken before this one (the step taken is ``step + 1``)."""
        return self.before.step


@dataclass(frozen=True)
class StepToReproduce(OneTensorStep):
    """One step of one tensor: the input an adapter renders a program from.

    ``info`` is the registered configuration (for an adapter run behind
    :class:`~adamspec.impl.adapters.worker.ProcessAdapter`, the proxied adapter's own:
    its ``factory`` and ``options``), ``environment`` the variables the proxy sets before
    the framework is imported (``KERAS_BACKEND``). ``lr`` is the learning rate of the
    step taken (a schedule's value at ``t = before.step + 1``); ``before`` is the state
    the step starts from, as the adapter reported it (framework extras included), and
    ``grads`` holds the one gradient (an array or :class:`SparseRows`).
    """

    implementation: str
    info: AdapterInfo
    dtype: str
    hyper: Hyper
    lr: Fraction
    before: State
    grads: list[Any]
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_sparse(self) -> bool:
        return isinstance(self.grads[0], SparseRows)

    def grad_literal(self, sparse: SparseLiteral | None = None) -> str:
        """The gradient: dense ``value(...)``, or ``sparse``'s form of a sparse one
        (ValueError without ``sparse``: the adapter has no sparse gradient path)."""
        g = self.grads[0]
        if not isinstance(g, SparseRows):
            return value_literal(g)
        if sparse is None:
            raise ValueError(f"{self.implementation}'s adapter has no sparse gradient path")
        indices = repr([int(i) for i in np.asarray(g.indices)])
        return sparse(indices, value_literal(np.asarray(g.values)), self.shape)


@dataclass
class Program:
    """An adapter's part of a reproduction script.

    Python: ``imports`` come first (numpy and the shared helpers ``exact``, ``hexf`` and
    ``show`` follow), then ``helpers`` (at least the ``value`` the body uses), then
    ``body``. JavaScript (Node.js): ``imports`` and ``helpers`` (at least ``f32``) at the
    top, ``body`` inside ``async function main()`` so it may ``await``. ``results`` maps
    each component (param, m, v, v_max) the program can show to the expression giving the
    implementation's value after the step; ``usage`` is how to run the script where it
    is not ``python <file>`` (written as a comment above the header).
    """

    imports: list[str]
    helpers: list[str]
    body: list[str]
    results: dict[str, str]
    language: str = "python"
    usage: list[str] = field(default_factory=list)


def with_compiled_step(program: Program, eager_step: str, compiled: list[str]) -> Program:
    """``program`` (an eager adapter's) with its last body line, the eager step call
    ``eager_step``, replaced by ``compiled``: the lines a compiled twin runs instead."""
    if not program.body or program.body[-1] != eager_step:
        raise ValueError(f"the eager program does not end with {eager_step!r}")
    program.body[-1:] = compiled
    return program


# ------------------------------------------------------------------------- literal writers


def hex_float(x: Any) -> str:
    """``float.hex`` without trailing zeros; ``float.fromhex`` reads it back exactly."""
    x = float(x)
    if not math.isfinite(x):
        return repr(x)
    mantissa, exponent = x.hex().split("p")
    return mantissa.rstrip("0").rstrip(".") + "p" + exponent


def hex_floats(a: Any) -> list[str]:
    """Every value of ``a`` (flattened) as :func:`hex_float` of its binary64 value."""
    return [hex_float(x) for x in np.asarray(a).astype(np.float64).ravel()]


def value_literal(a: Any, dtype: str = "") -> str:
    """``value([hex floats], shape)``: the exact values of ``a`` (``value`` is each Python
    program's helper turning them into the framework's tensor of the dtype); with ``dtype``
    (an expression), ``value([...], shape, dtype)``: an array of a mixed precision's role
    whose dtype is not the param's."""
    extra = f", {dtype}" if dtype else ""
    return f"value({hex_floats(a)!r}, {tuple(np.shape(a))!r}{extra})".replace("'", '"')


def float32_literal(a: Any) -> str:
    """``f32([bits], shape)``: the float32 values of ``a`` as their IEEE-754 bits (JavaScript)."""
    bits = np.asarray(a, np.float32).reshape(-1).view(np.uint32)
    return f"f32([{', '.join(f'0x{int(b):08x}' for b in bits)}], {list(np.shape(a))!r})"


def keyword_literal(kwargs: Mapping[str, Any]) -> str:
    """``k=v, ...`` with each value's repr (a Python call's keyword arguments)."""
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def python_float(x: Fraction) -> str:
    """The Python float an adapter passes for ``x`` (correctly rounded), in shortest form."""
    return repr(float(x))


def exact_decimal(x: Fraction) -> str:
    """``x`` as an exact decimal (every binary or decimal input is one), else ``p/q``."""
    rest = x.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    if rest != 1:
        return f"{x.numerator}/{x.denominator}"
    if x.denominator == 1:
        return str(x.numerator)
    digits = max(len(str(x.denominator)), 1)
    while (x * 10**digits).denominator != 1:
        digits += 1
    text = str(Decimal(int(x * 10**digits)).scaleb(-digits).normalize())
    return text.replace("E", "e")


__all__ = [
    "OneTensorStep",
    "Program",
    "SparseLiteral",
    "StepToReproduce",
    "exact_decimal",
    "float32_literal",
    "hex_float",
    "hex_floats",
    "keyword_literal",
    "python_float",
    "value_literal",
    "with_compiled_step",
]
