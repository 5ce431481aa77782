"""Minimal counterexamples: the simplest one-step input on which an implementation misses a variant.

A discrepancy found on a generated problem comes with a state that took many
steps to reach and arrays of awkward values. A framework maintainer wants the
opposite: one coordinate, a small step count, round numbers, and a script they
can paste. :func:`minimal_counterexample` searches for that with hypothesis:
it draws one state (param, m, v, v_max, step) and one gradient for a tensor of
shape ``(1,)`` (then ``(2,)``), lets the implementation take ONE step from it,
and compares that step with the exact oracle step of a variant from the same
state (:func:`adamspec.harness.engine.compare`). Hypothesis then shrinks the first input
over budget towards small steps and "nice" values. :func:`snippet` turns the
result into a self-contained script that reproduces the step and prints it next
to the oracle's value, bit for bit. The implementation's adapter class writes the
step itself, against its framework's public API
(:mod:`adamspec.impl.adapters.repro`); this module adds what every script shares:
the header, the oracle's values and the verdict lines. The search needs
``hypothesis`` (the ``test`` extra); snippets do not.

The module is long (search, report text, script frame) because the three share the
:class:`Counterexample` record and nothing else uses them; it holds no framework code.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from adamspec.harness.budgets import DEFAULT, Budget
from adamspec.harness.engine import (
    STATE_COMPONENTS,
    ComponentError,
    StepRecord,
    Trace,
    budget_multiple,
    compare,
    oracle_state,
    stored_dtypes,
)
from adamspec.harness.problems import Problem, largest_finite, round_to_dtype
from adamspec.impl.adapters import (
    REGISTRY,
    AdapterInfo,
    State,
    Unsupported,
    load_registry,
    make_adapter,
)
from adamspec.impl.adapters.repro import (
    OneTensorStep,
    Program,
    StepToReproduce,
    exact_decimal,
    hex_floats,
)
from adamspec.impl.frameworks import FrameworkMissing
from adamspec.oracles import OracleInputError, RoundingUndecided, StepResult
from adamspec.oracles import step as oracle_step
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import entries, entry
from adamspec.spec.formats import FORMATS, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper, Schedule
from adamspec.spec.precision import precision_named
from adamspec.spec.variant import Variant

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

#: Values drawn first, and shrunk towards (hypothesis prefers the first of a sampled_from).
NICE_SIGNED: tuple[float, ...] = (0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 0.1, -0.1, 1e-3, 1e-8, 100.0)
NICE_NON_NEGATIVE: tuple[float, ...] = (0.0, 1.0, 0.25, 4.0, 0.01, 1e-6, 1e-16, 100.0)
NICE_STEPS: tuple[int, ...] = (0, 1, 2, 10, 100, 1000)
MAX_STEP = 1000
#: Shapes tried in order: one coordinate first; two can show cross-coordinate bugs (clipping).
SHAPES: tuple[tuple[int, ...], ...] = ((1,), (2,))
#: Sparse search: one row first, then two (so an untouched row can show lazy updates).
SPARSE_SHAPES: tuple[tuple[int, ...], ...] = ((1, 1), (2, 1))
#: Significant digits of the oracle's exact values quoted in a counterexample.
DIGITS = 20

# hypothesis draws floats of these widths exactly; bfloat16 is drawn as float32 and rounded
_WIDTH = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 32}


@dataclass(frozen=True)
class Counterexample(OneTensorStep):
    """One step of ``implementation`` that is over budget against ``variant``.

    ``before`` is the state the implementation reported after being given the
    drawn state (so framework extras such as accumulated beta powers are its
    own), ``grads`` the gradient (one tensor), ``after`` its result. ``oracle``
    holds the oracle's correctly rounded value per measured component and
    ``exact`` its exact value as decimal strings of :data:`DIGITS` significant
    digits; ``errors`` the ULP errors (:func:`adamspec.harness.engine.compare`) and
    ``multiple`` the budget multiple (> 1). ``category``/``explanation`` come from
    :func:`adamspec.harness.classify.classify` on this one step (None if it could not run).
    """

    implementation: str
    info: AdapterInfo
    version: str
    variant: Variant
    hyper: Hyper
    dtype: str
    before: State
    grads: list[Any]
    after: State
    oracle: dict[str, np.ndarray]
    exact: dict[str, list[str]]
    errors: dict[str, ComponentError]
    multiple: float
    category: str | None = None
    explanation: str = ""
    examples: int = 0  # implementation steps the search ran, over every shape tried
    variant_names: tuple[str, ...] = field(default=())
    budget: Budget = DEFAULT

    @property
    def language(self) -> str:
        """The snippet's language, as the adapter writes it: ``"python"`` or ``"javascript"``."""
        return _program(self).language

    @property
    def suffix(self) -> str:
        """File suffix for :func:`write_counterexample`: ``.py`` or ``.js``."""
        return _LANGUAGES[self.language][0]

    def summary(self) -> str:
        """One line: implementation, variant, worst component and its error."""
        name, err = max(
            self.errors.items(), key=lambda kv: self.budget.multiple(kv[0], kv[1].ulp, kv[1].scaled)
        )
        ulp = "NaN/inf mismatch" if err.ulp < 0 else f"{err.ulp} ULP"
        return (
            f"{self.implementation} vs {_variant_label(self)}: {name} {ulp} "
            f"({self.multiple:.3g}x budget) at step {self.step + 1}, shape {self.shape}"
        )


# ------------------------------------------------------------------------- the search


class _Draw(NamedTuple):
    """One drawn input: flat values per component (``indices`` only for sparse gradients)."""

    step: int
    grads: tuple[float, ...]
    indices: tuple[int, ...]
    params: tuple[float, ...]
    m: tuple[float, ...]
    v: tuple[float, ...]
    v_max_floor: tuple[float, ...]  # v_max = max(v, this); empty without AMSGrad


def _floats(dtype: str, signed: bool) -> SearchStrategy[float]:
    from hypothesis import strategies as st

    top = largest_finite(format_named(dtype))
    general = st.floats(
        min_value=-top if signed else 0.0,
        max_value=top,
        width=_WIDTH[dtype],
        allow_nan=False,
        allow_infinity=False,
    )
    # nice values first: shrinking moves towards the first branch and its first element
    return st.one_of(st.sampled_from(NICE_SIGNED if signed else NICE_NON_NEGATIVE), general)


def _widest(dtype: str) -> str:
    """The dtype a precision's inputs are drawn in: its widest role (each is then rounded
    to its own)."""
    precision = precision_named(dtype)
    roles = [precision.param, precision.grad, precision.state, precision.master]
    return max((r for r in roles if r), key=lambda r: _WIDTH[r] * 100 + FORMATS[r].precision)


def _draws(
    shape: tuple[int, ...], dtype: str, amsgrad: bool, sparse: bool, fresh: bool
) -> SearchStrategy[_Draw]:
    """Inputs for one step; ``fresh``: zero moments (what an optimizer holds before any
    non-zero gradient), only the step count, parameter and gradient drawn."""
    from hypothesis import strategies as st

    size = math.prod(shape)
    signed, non_negative = _floats(dtype, True), _floats(dtype, False)

    def vec(elements: SearchStrategy[float], n: int) -> SearchStrategy[tuple[float, ...]]:
        return st.lists(elements, min_size=n, max_size=n).map(tuple)

    if sparse:
        rows, width = shape[0], math.prod(shape[1:])
        # up to rows + 1 lookups, so a repeated row index is always possible
        indices = st.lists(st.integers(0, rows - 1), min_size=1, max_size=rows + 1).map(tuple)
        grads = indices.flatmap(lambda idx: vec(signed, len(idx) * width).map(lambda g: (g, idx)))
    else:
        grads = vec(signed, size).map(lambda g: (g, ()))
    zeros = st.just((0.0,) * size)
    # Draw order is shrink priority (hypothesis shrinks the choice sequence shortlex): the
    # state first, so shrinking simplifies the state before the gradient.
    return st.builds(
        lambda step, m, v, floor, p, gi: _Draw(step, gi[0], gi[1], p, m, v, floor),
        st.one_of(st.sampled_from(NICE_STEPS), st.integers(0, MAX_STEP)),
        zeros if fresh else vec(signed, size),
        zeros if fresh else vec(non_negative, size),
        st.just(()) if not amsgrad else zeros if fresh else vec(non_negative, size),
        vec(signed, size),
        grads,
    )


@dataclass
class _Trial:
    before: State
    grads: list[Any]
    after: State
    reference: StepResult
    errors: dict[str, ComponentError]
    multiple: float


class _Runner:
    """One adapter built once for a shape; each trial sets its state and takes one step."""

    def __init__(
        self,
        implementation: str,
        hyper: Hyper,
        variant: Variant,
        dtype: str,
        budget: Budget,
        shape: tuple[int, ...],
        amsgrad: bool,
        sparse: bool,
    ) -> None:
        self.hyper, self.variant, self.dtype, self.budget = hyper, variant, dtype, budget
        self.shape, self.amsgrad, self.sparse = shape, amsgrad, sparse
        self.adapter = make_adapter(implementation, hyper, dtype, [shape])
        self.implementation, self.info = implementation, REGISTRY[implementation]
        self.calls = 0
        self.measured = 0
        self.failure: Exception | None = None  # the last reason an input was not measured

    def state(self, d: _Draw) -> tuple[State, list[Any]]:
        """The drawn input, each role rounded to its dtype (the draw is in the widest): a
        master is drawn, and the param is its rounding, as a mixed-precision kernel keeps
        them."""
        precision = precision_named(self.dtype)

        def arr(
            values: Sequence[float], role: str, shape: tuple[int, ...] = self.shape
        ) -> np.ndarray:
            dtype = getattr(precision, role)
            return round_to_dtype(np.asarray(values, np.float64), dtype).reshape(shape)

        v = arr(d.v, "state")
        v_max = [np.maximum(v, arr(d.v_max_floor, "state"))] if self.amsgrad else None
        if self.sparse:
            rows = self.shape[0]
            values = arr(d.grads, "grad", (len(d.indices), *self.shape[1:]))
            grad: Any = SparseRows(np.asarray(d.indices, np.int64), values, rows)
        else:
            grad = arr(d.grads, "grad")
        master = None
        if precision.master is not None:
            master = [arr(d.params, "master")]
            params = [round_to_dtype(master[0].astype(np.float64), precision.param)]
        else:
            params = [arr(d.params, "param")]
        return State(params, [arr(d.m, "state")], [v], v_max, d.step, master=master), [grad]

    def trial(self, d: _Draw, digits: int | None = None) -> _Trial | None:
        """The step from a drawn input and its errors, or None where it cannot be measured
        (see :func:`minimal_counterexample`: such inputs are skipped)."""
        return self.measure(*self.state(d), digits=digits)

    def measure(self, state: State, grads: list[Any], digits: int | None = None) -> _Trial | None:
        """The step from ``state`` and its errors, or None (the reason in ``failure``)."""
        self.calls += 1
        try:
            # extreme inputs are drawn on purpose: an overflow in the kernel is a result
            with np.errstate(all="ignore"):
                self.adapter.set_state(state)
                before = self.adapter.get_state()
                self.adapter.step(grads)
                after = self.adapter.get_state()
        except Exception as exc:  # Unsupported, or a crash: no numeric counterexample here
            self.failure = exc
            return None
        try:
            reference = oracle_step(
                self.variant,
                self.hyper,
                list(before.params),
                list(grads),
                oracle_state(before, self.variant),
                **stored_dtypes((), {"dtype": self.dtype, "digits": digits}),
            )
        except (RoundingUndecided, OracleInputError) as exc:
            self.failure = exc
            return None
        self.measured += 1
        errors = compare(before, grads, after, reference, self.variant, self.hyper)
        return _Trial(before, grads, after, reference, errors, budget_multiple(errors, self.budget))

    def close(self) -> None:
        self.adapter.close()


def _search(runner: _Runner, fresh: bool, max_examples: int, seed: int) -> _Draw | None:
    """The shrunk first input over budget, or None."""
    from hypothesis import HealthCheck, Phase, Verbosity, assume, find, settings
    from hypothesis.errors import NoSuchExample, Unsatisfiable

    def over_budget(d: _Draw) -> bool:
        trial = runner.trial(d)
        assume(trial is not None)
        return trial.multiple > 1

    # Explicit on every field the loaded test profile could change: reproducible from the seed.
    options = settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate, Phase.shrink),
        verbosity=Verbosity.quiet,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    strategy = _draws(runner.shape, _widest(runner.dtype), runner.amsgrad, runner.sparse, fresh)
    try:
        return find(strategy, over_budget, settings=options, random=Random(seed))
    except (NoSuchExample, Unsatisfiable):
        return None


def _resolve(variant: Variant | str) -> Variant:
    return entry(variant).variant if isinstance(variant, str) else variant


def minimal_counterexample(
    implementation: str,
    hyper: Hyper,
    variant: Variant | str,
    dtype: str = "float32",
    budget: Budget = DEFAULT,
    *,
    max_examples: int = 200,
    seed: int = 0,
    sparse: bool = False,
) -> Counterexample | None:
    """The simplest one-step input on which ``implementation`` is over ``budget`` against
    ``variant`` (a :class:`~adamspec.spec.variant.Variant` or a catalog name), or None if none of
    ``max_examples`` examples per stage is.

    Stages, each a hypothesis search of up to ``max_examples`` examples: a tensor of
    shape ``(1,)`` from zero moments (any step count), then ``(1,)`` from any state, then
    ``(2,)`` from any state (with ``sparse``: a row-sparse gradient on ``(1, 1)`` then
    ``(2, 1)``). v and v_max are drawn non-negative with ``v_max >= v`` (v_max only if
    the implementation's documented variant uses AMSGrad, as
    :func:`adamspec.harness.engine.record_trace` does). The search is deterministic for a given
    ``seed``. Inputs the adapter rejects (``Unsupported``), crashes on, or the oracle
    cannot round are skipped; if no input at all could be measured this raises
    ``Unsupported`` (or RuntimeError for crashes) rather than returning None. Building
    the adapter may raise ``Unsupported`` or ``FrameworkMissing``: the configuration
    itself cannot run.
    """
    if importlib.util.find_spec("hypothesis") is None:
        raise FrameworkMissing(
            "skipped: hypothesis not installed (pip install 'adamspec[test]'); "
            "minimal_counterexample searches with it"
        )
    load_registry()
    info = REGISTRY[implementation]
    target = _resolve(variant)
    amsgrad = entry(info.documented).variant.amsgrad is not AmsGrad.OFF
    measured, calls, failure = 0, 0, None
    first, *more = SPARSE_SHAPES if sparse else SHAPES
    # A fresh optimizer first: the shrinker cannot always trade a simpler state for a less
    # simple gradient, and "from zero moments, this gradient" is the report a maintainer wants.
    for shape, stages in ((first, (True, False)), *((s, (False,)) for s in more)):
        runner = _Runner(implementation, hyper, target, dtype, budget, shape, amsgrad, sparse)
        try:
            for fresh in stages:
                draw = _search(runner, fresh, max_examples, seed)
                if draw is None:
                    continue
                trial = runner.trial(draw, digits=DIGITS)
                if trial is None or trial.multiple <= 1:
                    raise RuntimeError(
                        f"{implementation}: the shrunk counterexample did not reproduce "
                        "(is the implementation deterministic?)"
                    )
                return replace(_counterexample(runner, trial), examples=calls + runner.calls)
        finally:
            runner.close()
        measured, failure = measured + runner.measured, runner.failure or failure
        calls += runner.calls
    if not measured:
        # "nothing over budget" would be a false all-clear when nothing could be measured
        reason = f"{type(failure).__name__}: {failure}" if failure else "no input was drawn"
        if isinstance(failure, Unsupported):
            raise Unsupported(f"{implementation}: every drawn input was rejected ({reason})")
        raise RuntimeError(f"{implementation}: no drawn input could be measured ({reason})")
    return None


def counterexample_from_step(
    implementation: str,
    hyper: Hyper,
    variant: Variant | str,
    before: State,
    grads: Sequence[Any],
    dtype: str = "float32",
    budget: Budget = DEFAULT,
) -> Counterexample:
    """The report of one given step of one tensor, over budget or not (no search).

    ``before`` is the state the step starts from (one tensor; ``v_max`` set if the
    implementation uses AMSGrad), ``grads`` its one gradient (an array or
    :class:`~adamspec.spec.gradients.SparseRows`). What :func:`snippet` writes for a step
    found elsewhere (a trace, a test); ``examples`` is 0. Raises what the adapter or
    the oracle raised if the step cannot be measured.
    """
    load_registry()
    target = _resolve(variant)
    shape = tuple(before.params[0].shape)
    sparse = isinstance(grads[0], SparseRows)
    runner = _Runner(
        implementation, hyper, target, dtype, budget, shape, before.v_max is not None, sparse
    )
    try:
        trial = runner.measure(before, list(grads), digits=DIGITS)
        if trial is None:
            raise runner.failure
        ce = _counterexample(runner, trial)
    finally:
        runner.close()
    return replace(ce, examples=0)


def _counterexample(runner: _Runner, trial: _Trial) -> Counterexample:
    """The report of ``runner``'s measured ``trial``, classified."""
    ref = trial.reference
    measured = [c for c in (*STATE_COMPONENTS, "master") if c in trial.errors]
    category, explanation = _classify(runner, trial)
    return Counterexample(
        implementation=runner.implementation,
        info=runner.info,
        version=runner.adapter.version,
        variant=runner.variant,
        hyper=runner.hyper,
        dtype=runner.dtype,
        before=trial.before,
        grads=trial.grads,
        after=trial.after,
        oracle={c: ref.value(c, 0) for c in measured},
        exact={c: list(ref.decimals[c][0]) for c in measured},
        errors=dict(trial.errors),
        multiple=trial.multiple,
        category=category,
        explanation=explanation,
        examples=runner.calls,
        variant_names=tuple(e.name for e in entries() if e.variant == runner.variant),
        budget=runner.budget,
    )


def _classify(runner: _Runner, trial: _Trial) -> tuple[str | None, str]:
    """Which single change of the runner's variant explains this one step (see
    harness.classify)."""
    from adamspec.harness.classify import (
        classify,  # classify imports fingerprinting: only when used
    )

    problem = Problem(
        "counterexample",
        "open",
        (tuple(trial.before.params[0].shape),),
        1,
        start_step=trial.before.step,
        sparse=runner.sparse,
        kind="sparse-rows" if runner.sparse else "typical",
    )
    trace = Trace(
        runner.implementation,
        runner.info.framework or "adamspec",
        runner.adapter.version,
        runner.info.documented,
        problem,
        runner.dtype,
        0,
        runner.hyper,
        [StepRecord(trial.before, list(trial.grads), trial.after)],
    )
    try:
        verdict = classify([trace], runner.variant, runner.budget)
    except (RoundingUndecided, OracleInputError) as exc:  # a report without a category
        return None, f"not classified: {exc}"
    return verdict.category, verdict.explanation


# ------------------------------------------------------------------------- formatting


def _shown(a: Any) -> str:
    """The values as the dtype prints them (shortest decimal for float32), for comments."""
    return ", ".join(str(x) for x in np.asarray(a).ravel())


def _lr(ce: Counterexample) -> Fraction:
    """The learning rate of the step taken (a schedule's value at ``t = step + 1``)."""
    return ce.hyper.lr_at(ce.step + 1)


def _variant_label(ce: Counterexample) -> str:
    default = Variant()
    axes = [
        f"{k}={v}"
        for k, v in ce.variant.axes().items()
        if getattr(default, k) != getattr(ce.variant, k)
    ]
    names = " = ".join(ce.variant_names) or "a variant outside the catalog"
    return f"{names} ({', '.join(axes) or 'Algorithm 1 exactly'})"


def _hyper_text(ce: Counterexample) -> str:
    h = ce.hyper
    parts = []
    if isinstance(h.lr, Schedule):
        parts.append(f"lr={exact_decimal(_lr(ce))} (the schedule's value at step {ce.step + 1})")
    else:
        parts.append(f"lr={exact_decimal(h.lr)}")
    parts += [f"{k}={exact_decimal(getattr(h, k))}" for k in ("beta1", "beta2", "eps")]
    parts += [
        f"{k}={exact_decimal(getattr(h, k))}" for k in ("eps_root", "weight_decay") if getattr(h, k)
    ]
    for k in ("clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(h, k) is not None:
            parts.append(f"{k}={exact_decimal(getattr(h, k))}")
    if h.use_ema:
        parts.append(
            f"use_ema=True ema_momentum={exact_decimal(h.ema_momentum)} "
            f"ema_overwrite_frequency={h.ema_overwrite_frequency}"
        )
    return " ".join(parts)


def _errors_text(ce: Counterexample) -> str:
    out = []
    for name, err in ce.errors.items():
        if err.ulp < 0:
            out.append(f"{name} {err.outcome} (NaN/inf mismatch)")
        elif err.ulp == 0:
            out.append(f"{name} exact")
        else:
            multiple = ce.budget.multiple(name, err.ulp, err.scaled)
            out.append(f"{name} {err.ulp} ULP ({multiple:.3g}x its budget)")
    return "; ".join(out)


def _header(ce: Counterexample, comment: str) -> list[str]:
    framework = ce.info.framework or "adamspec"
    category = (
        f"{ce.category}: {ce.explanation}" if ce.category else ce.explanation or "not classified"
    )
    if ce.version not in ("n/a", framework):
        framework = f"{framework} {ce.version}"
    inputs = [
        f"param [{_shown(ce.before.params[0])}]",
        f"m [{_shown(ce.before.m[0])}]",
        f"v [{_shown(ce.before.v[0])}]",
    ]
    if ce.before.v_max is not None:
        inputs.append(f"v_max [{_shown(ce.before.v_max[0])}]")
    if ce.before.master is not None:
        inputs.append(f"master [{_shown(ce.before.master[0])}]")
    g = ce.grads[0]
    if isinstance(g, SparseRows):
        rows = ", ".join(str(int(i)) for i in np.asarray(g.indices))
        inputs.append(f"grad rows [{rows}] values [{_shown(g.values)}]")
    else:
        inputs.append(f"grad [{_shown(g)}]")
    precision = precision_named(ce.dtype)
    # a mixed precision's values are each in their own dtype: say which
    dtypes = ce.dtype if precision.uniform else f"{ce.dtype} ({precision.roles_text()})"
    each = ce.dtype if precision.uniform else "each component's own dtype"
    lines = [
        f"adamspec minimal counterexample: {ce.implementation} ({framework}), "
        f"{dtypes}, one step of one tensor of shape {ce.shape}",
        f"documented as: {ce.info.documented or 'nothing (no variant claimed)'}",
        f"compared with: {_variant_label(ce)}",
        f"category (single change of that variant explaining the step): {category}",
        f"hyperparameters (exact decimals): {_hyper_text(ce)}",
        f"state before the step: step={ce.step} (this is step t={ce.step + 1}); inputs as "
        f"{each} prints them: {', '.join(inputs)}",
        f"errors against the oracle, in ULPs of {each}: {_errors_text(ce)}; "
        f"worst {ce.multiple:.3g}x the budget",
        f"{_origin(ce)}; the oracle's values are exact to {DIGITS} significant digits, "
        f"then correctly rounded to {each}",
    ]
    out = []
    for line in lines:
        out += textwrap.wrap(line, 96, initial_indent=f"{comment} ",
                             subsequent_indent=f"{comment}     ")  # fmt: skip
    return out


def _origin(ce: Counterexample) -> str:
    if ce.examples == 0:
        return "a given step, not searched"
    return "found by hypothesis and shrunk towards simple values"


def _oracle_comment(ce: Counterexample, name: str) -> str:
    got = ", ".join(hex_floats(_component(ce.after, name)))
    return (
        f"adamspec oracle: {', '.join(ce.exact[name])} (correctly rounded "
        f"{ce.oracle[name].dtype.name}: "
        f"{', '.join(hex_floats(ce.oracle[name]))}); adamspec's run gave {got}"
    )


def _component(state: State, name: str) -> np.ndarray:
    arrays = {"param": state.params, "m": state.m, "v": state.v, "v_max": state.v_max,
              "master": state.master}  # fmt: skip
    return arrays[name][0]


# ------------------------------------------------------------------------- the script
# The implementation's part comes from its adapter class (Adapter.reproduction_program);
# everything here is the same for every implementation: the header, the oracle's values
# and one "show" line per component, in the program's language.


def _program(ce: Counterexample) -> Program:
    """The implementation's program, rendered by its registered adapter class."""
    step = StepToReproduce(
        ce.implementation, ce.info, ce.dtype, ce.hyper, _lr(ce), ce.before, list(ce.grads)
    )
    return ce.info.load().reproduction_program(step)


_PY_HELPERS = '''
def exact(hexes, shape):
    """float64 values written as hex floats: exact, and every value of the dtype is one."""
    return np.array([float.fromhex(h) for h in hexes], dtype=np.float64).reshape(shape)


def hexf(x):
    """float.hex without trailing zeros (float.fromhex reads it back exactly)."""
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return repr(x)
    mantissa, exponent = x.hex().split("p")
    return mantissa.rstrip("0").rstrip(".") + "p" + exponent


def show(name, got, oracle):
    got = [hexf(x) for x in np.asarray(got, dtype=np.float64).ravel()]
    verdict = "matches" if got == oracle else "DIFFERS from"
    print(f"{name}: got [{', '.join(got)}] {verdict} adamspec oracle [{', '.join(oracle)}]")
'''.strip("\n").splitlines()


_JS_HELPERS = r"""
// Python's float.hex without trailing zeros, so both languages print the same text
function hexf(x) {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const sign = hi >>> 31 ? '-' : '';
  const frac = ((hi & 0xfffff).toString(16).padStart(5, '0') +
                lo.toString(16).padStart(8, '0')).replace(/0+$/, '');
  let exp = (hi >>> 20) & 0x7ff;
  let lead = '1';
  if (exp === 0) {
    lead = '0';
    exp = frac ? -1022 : 0;
  } else {
    exp -= 1023;
  }
  return `${sign}0x${lead}${frac ? '.' + frac : ''}p${exp >= 0 ? '+' : ''}${exp}`;
}

function show(name, got, oracle) {
  const hexes = Array.from(got, hexf);
  const verdict = hexes.join() === oracle.join() ? 'matches' : 'DIFFERS from';
  const expected = oracle.join(', ');
  console.log(`${name}: got [${hexes.join(', ')}] ${verdict} adamspec oracle [${expected}]`);
}
""".strip("\n").splitlines()


def _show_lines(
    ce: Counterexample, results: dict[str, str], call: str, comment: str, quote: str = '"'
) -> list[str]:
    """One print per measured component the program can show, with the oracle's value."""
    lines = []
    for name in ce.oracle:
        if name not in results:
            continue
        oracle = ", ".join(f"{quote}{h}{quote}" for h in hex_floats(ce.oracle[name]))
        lines.append(f"{comment} {_oracle_comment(ce, name)}")
        lines.append(call.format(name=name, got=results[name], oracle=oracle))
    return lines


def _python_script(ce: Counterexample, program: Program) -> list[str]:
    return [
        *(f"# {line}" for line in program.usage),
        *_header(ce, "#"),
        "",
        *program.imports,
        "import numpy as np",
        "",
        "",
        *_PY_HELPERS,
        "",
        "",
        *program.helpers,
        "",
        "",
        *program.body,
        "",
        *_show_lines(ce, program.results, 'show("{name}", {got}, [{oracle}])', "#"),
    ]


def _javascript_script(ce: Counterexample, program: Program) -> list[str]:
    """A Node.js script; the body runs inside ``async function main()`` (so it may await)."""
    shows = _show_lines(ce, program.results, "show('{name}', {got}, [{oracle}]);", "//", "'")
    return [
        *(f"// {line}" for line in program.usage),
        *_header(ce, "//"),
        "",
        "'use strict';",
        *program.imports,
        "",
        *program.helpers,
        "",
        *_JS_HELPERS,
        "",
        "async function main() {",
        *(f"  {line}" if line else "" for line in [*program.body, *shows]),
        "}",
        "",
        "main();",
    ]


#: Per language: the file suffix and how the script is laid out around the program.
_LANGUAGES: dict[str, tuple[str, Callable[[Counterexample, Program], list[str]]]] = {
    "python": (".py", _python_script),
    "javascript": (".js", _javascript_script),
}


# ------------------------------------------------------------------------- public API


def snippet(ce: Counterexample) -> str:
    """A runnable, self-contained script reproducing ``ce``'s step, printing each result
    next to the oracle's value.

    The implementation's adapter class writes the step
    (:meth:`adamspec.impl.adapters.base.Adapter.reproduction_program`): a framework's
    adapter against the framework's public API, in the framework's language; adamspec's
    own implementations, user kernels and toys through :mod:`adamspec.impl.adapters`.
    """
    program = _program(ce)
    _, layout = _LANGUAGES[program.language]
    return "\n".join(layout(ce, program)) + "\n"


def write_counterexample(path: str | os.PathLike[str], ce: Counterexample) -> Path:
    """Write :func:`snippet` of ``ce`` to ``path`` atomically (a reader never sees half of it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(snippet(ce))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


__all__ = [
    "DIGITS",
    "Counterexample",
    "counterexample_from_step",
    "minimal_counterexample",
    "snippet",
    "write_counterexample",
]
