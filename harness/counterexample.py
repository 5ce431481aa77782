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
result into a self-contained script against the framework's public API
(torch, optax, Keras 3, tf_keras, tf.compat.v1, tf.raw_ops, ONNX, TF.js) that
reproduces the step and prints it next to the oracle's value, bit for bit.
The search needs ``hypothesis`` (the ``test`` extra); snippets do not.

Every float in a snippet is written as a hex float (or, in JavaScript, as its
float32 bits), so the values round-trip exactly; hyperparameters are written
as the Python floats adamspec's adapters pass (shortest repr of the correctly
rounded binary64), which is what a user typing the documented decimal passes.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
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
)
from adamspec.harness.engine import oracle_state as _oracle_state
from adamspec.harness.problems import Problem, largest_finite, round_to_dtype
from adamspec.impl.adapters import (
    REGISTRY,
    AdapterInfo,
    State,
    Unsupported,
    load_registry,
    make_adapter,
)
from adamspec.impl.adapters.keras3 import constructor_kwargs
from adamspec.impl.frameworks import FrameworkMissing
from adamspec.oracles import OracleInputError, RoundingUndecided, StepResult
from adamspec.oracles import step as oracle_step
from adamspec.spec.axes import AmsGrad
from adamspec.spec.catalog import entries, entry
from adamspec.spec.formats import format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper, Schedule
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
class Counterexample:
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
    def shape(self) -> tuple[int, ...]:
        """Shape of the one tensor stepped."""
        return tuple(self.before.params[0].shape)

    @property
    def step(self) -> int:
        """Steps taken before this one (the step taken is ``step + 1``)."""
        return self.before.step

    @property
    def language(self) -> str:
        """``"javascript"`` for TF.js snippets, ``"python"`` otherwise."""
        return "javascript" if _family(self.info) == "tfjs" else "python"

    @property
    def suffix(self) -> str:
        """File suffix for :func:`write_counterexample`: ``.js`` or ``.py``."""
        return ".js" if self.language == "javascript" else ".py"

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
        self.calls = 0
        self.measured = 0
        self.failure: Exception | None = None  # the last reason an input was not measured

    def state(self, d: _Draw) -> tuple[State, list[Any]]:
        def arr(values: Sequence[float], shape: tuple[int, ...] = self.shape) -> np.ndarray:
            return round_to_dtype(np.asarray(values, np.float64), self.dtype).reshape(shape)

        v = arr(d.v)
        v_max = [np.maximum(v, arr(d.v_max_floor))] if self.amsgrad else None
        if self.sparse:
            rows = self.shape[0]
            values = arr(d.grads, (len(d.indices), *self.shape[1:]))
            grad: Any = SparseRows(np.asarray(d.indices, np.int64), values, rows)
        else:
            grad = arr(d.grads)
        return State([arr(d.params)], [arr(d.m)], [v], v_max, d.step), [grad]

    def trial(self, d: _Draw, digits: int | None = None) -> _Trial | None:
        """The step and its errors, or None where it cannot be measured (see
        :func:`minimal_counterexample`: such inputs are skipped)."""
        self.calls += 1
        state, grads = self.state(d)
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
                _oracle_state(before, self.variant),
                digits=digits,
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
    strategy = _draws(runner.shape, runner.dtype, runner.amsgrad, runner.sparse, fresh)
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
                ce = _counterexample(
                    implementation, info, runner, trial, target, hyper, dtype, budget, sparse
                )
                return replace(ce, examples=calls + runner.calls)
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


def _counterexample(
    implementation: str,
    info: AdapterInfo,
    runner: _Runner,
    trial: _Trial,
    variant: Variant,
    hyper: Hyper,
    dtype: str,
    budget: Budget,
    sparse: bool,
) -> Counterexample:
    ref = trial.reference
    measured = [c for c in STATE_COMPONENTS if c in trial.errors]
    category, explanation = _classify(
        implementation, info, runner.adapter.version, trial, variant, hyper, dtype, budget, sparse
    )
    return Counterexample(
        implementation=implementation,
        info=info,
        version=runner.adapter.version,
        variant=variant,
        hyper=hyper,
        dtype=dtype,
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
        variant_names=tuple(e.name for e in entries() if e.variant == variant),
        budget=budget,
    )


def _classify(
    implementation: str,
    info: AdapterInfo,
    version: str,
    trial: _Trial,
    variant: Variant,
    hyper: Hyper,
    dtype: str,
    budget: Budget,
    sparse: bool,
) -> tuple[str | None, str]:
    """Which single change of ``variant`` explains this one step (see harness.classify)."""
    from adamspec.harness.classify import (
        classify,  # classify imports fingerprinting: only when used
    )

    problem = Problem(
        "counterexample",
        "open",
        (tuple(trial.before.params[0].shape),),
        1,
        start_step=trial.before.step,
        sparse=sparse,
        kind="sparse-rows" if sparse else "typical",
    )
    trace = Trace(
        implementation,
        info.framework or "adamspec",
        version,
        info.documented,
        problem,
        dtype,
        0,
        hyper,
        [StepRecord(trial.before, list(trial.grads), trial.after)],
    )
    try:
        verdict = classify([trace], variant, budget)
    except (RoundingUndecided, OracleInputError) as exc:  # a report without a category
        return None, f"not classified: {exc}"
    return verdict.category, verdict.explanation


# ------------------------------------------------------------------------- formatting


def _hexf(x: Any) -> str:
    """``float.hex`` without trailing zeros; ``float.fromhex`` reads it back exactly."""
    x = float(x)
    if not math.isfinite(x):
        return repr(x)
    mantissa, exponent = x.hex().split("p")
    return mantissa.rstrip("0").rstrip(".") + "p" + exponent


def _hexes(a: Any) -> list[str]:
    return [_hexf(x) for x in np.asarray(a).astype(np.float64).ravel()]


def _shown(a: Any) -> str:
    """The values as the dtype prints them (shortest decimal for float32), for comments."""
    return ", ".join(str(x) for x in np.asarray(a).ravel())


def _decimal(x: Fraction) -> str:
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


def _py_float(x: Fraction) -> str:
    """The Python float an adapter passes for ``x`` (correctly rounded), in shortest form."""
    return repr(float(x))


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
        parts.append(f"lr={_decimal(_lr(ce))} (the schedule's value at step {ce.step + 1})")
    else:
        parts.append(f"lr={_decimal(h.lr)}")
    parts += [f"{k}={_decimal(getattr(h, k))}" for k in ("beta1", "beta2", "eps")]
    parts += [
        f"{k}={_decimal(getattr(h, k))}" for k in ("eps_root", "weight_decay") if getattr(h, k)
    ]
    for k in ("clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(h, k) is not None:
            parts.append(f"{k}={_decimal(getattr(h, k))}")
    if h.use_ema:
        parts.append(
            f"use_ema=True ema_momentum={_decimal(h.ema_momentum)} "
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
    g = ce.grads[0]
    if isinstance(g, SparseRows):
        rows = ", ".join(str(int(i)) for i in np.asarray(g.indices))
        inputs.append(f"grad rows [{rows}] values [{_shown(g.values)}]")
    else:
        inputs.append(f"grad [{_shown(g)}]")
    lines = [
        f"adamspec minimal counterexample: {ce.implementation} ({framework}), "
        f"{ce.dtype}, one step of one tensor of shape {ce.shape}",
        f"documented as: {ce.info.documented}",
        f"compared with: {_variant_label(ce)}",
        f"category (single change of that variant explaining the step): {category}",
        f"hyperparameters (exact decimals): {_hyper_text(ce)}",
        f"state before the step: step={ce.step} (this is step t={ce.step + 1}); inputs as "
        f"{ce.dtype} prints them: {', '.join(inputs)}",
        f"errors against the oracle, in ULPs of {ce.dtype}: {_errors_text(ce)}; "
        f"worst {ce.multiple:.3g}x the budget",
        "found by hypothesis and shrunk towards simple values; the oracle's values are exact "
        f"to {DIGITS} significant digits, then correctly rounded to {ce.dtype}",
    ]
    out = []
    for line in lines:
        out += textwrap.wrap(line, 96, initial_indent=f"{comment} ",
                             subsequent_indent=f"{comment}     ")  # fmt: skip
    return out


def _oracle_comment(ce: Counterexample, name: str) -> str:
    got = ", ".join(_hexes(_component(ce.after, name)))
    return (
        f"adamspec oracle: {', '.join(ce.exact[name])} (correctly rounded {ce.dtype}: "
        f"{', '.join(_hexes(ce.oracle[name]))}); adamspec's run gave {got}"
    )


def _component(state: State, name: str) -> np.ndarray:
    return {"param": state.params, "m": state.m, "v": state.v, "v_max": state.v_max}[name][0]


# ------------------------------------------------------------------------- snippet programs


@dataclass
class _Program:
    """A framework's part of a snippet; the header, helpers and footer are shared."""

    imports: list[str]
    helpers: list[str]
    body: list[str]
    fetch: dict[str, str]  # component -> expression giving the implementation's result


def _value(a: Any) -> str:
    """A Python expression for the exact values of ``a`` (``value`` is each program's helper)."""
    return f"value({_hexes(a)!r}, {tuple(np.shape(a))!r})".replace("'", '"')


def _kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _grad(ce: Counterexample, sparse: Callable[[str, str, tuple[int, ...]], str]) -> str:
    """The gradient expression: dense ``value(...)`` or the framework's sparse form."""
    g = ce.grads[0]
    if isinstance(g, SparseRows):
        indices = repr([int(i) for i in np.asarray(g.indices)])
        return sparse(indices, _value(np.asarray(g.values)), ce.shape)
    return _value(g)


def _family(info: AdapterInfo) -> str:
    cls = info.factory.partition(":")[2]
    if cls == "ProcessAdapter" and str(info.options.get("target", "")).startswith(
        "adamspec.impl.adapters.keras3:"
    ):
        return "keras3"
    return {
        "adamspec.impl.adapters.torch_optim:TorchOptimizer": "torch",
        "adamspec.impl.adapters.optax_optim:OptaxAdam": "optax",
        "adamspec.impl.adapters.tensorflow:TfKerasAdam": "tf_keras",
        "adamspec.impl.adapters.tensorflow:TfKerasLegacyAdam": "tf_keras_legacy",
        "adamspec.impl.adapters.tensorflow:TfRawAdam": "tf_raw",
        "adamspec.impl.adapters.tensorflow:TfV1Adam": "tf_v1",
        "adamspec.impl.adapters.tfjs:TfjsAdam": "tfjs",
        "adamspec.impl.adapters.onnx_ref:OnnxAdam": "onnx",
    }.get(info.factory, "adamspec")


def _torch(ce: Counterexample) -> _Program:
    h, options = ce.hyper, dict(ce.info.options)
    cls = options.pop("cls")
    if isinstance(h.lr, Schedule):
        # the adapter drives LambdaLR: lr = base_lr * (lr_t / lr_1), a binary64 product
        base = h.lr_at(1)
        lr = float(base) * (float(_lr(ce) / base) if base else 0.0)
    else:
        lr = float(h.lr)
    kwargs: dict[str, Any] = {
        "lr": lr,
        "betas": (float(h.beta1), float(h.beta2)),
        "eps": float(h.eps),
    }
    if cls != "SparseAdam":
        kwargs["weight_decay"] = float(h.weight_decay)
    kwargs.update(options)
    torch_dtype = f"torch.{ce.dtype}"
    body = [
        f"p = torch.nn.Parameter({_value(ce.before.params[0])})",
        f"opt = torch.optim.{cls}([p], {_kwargs(kwargs)})",
        "state = opt.state[p]  # the state a resumed run holds (adamspec's adapter sets it so)",
        f'state["step"] = torch.tensor({float(ce.step)!r}, dtype=torch.float32)'
        "  # torch counts steps in a float32 tensor",
        f'state["exp_avg"] = {_value(ce.before.m[0])}',
        f'state["exp_avg_sq"] = {_value(ce.before.v[0])}',
    ]
    fetch = {
        "param": "p.detach().double()",
        "m": 'state["exp_avg"].double()',
        "v": 'state["exp_avg_sq"].double()',
    }
    if kwargs.get("amsgrad"):
        body.append(f'state["max_exp_avg_sq"] = {_value(ce.before.v_max[0])}')
        fetch["v_max"] = 'state["max_exp_avg_sq"].double()'
    grad = _grad(
        ce,
        lambda idx, values, shape: (
            f"torch.sparse_coo_tensor(torch.tensor([{idx}]), {values}, {shape!r})"
        ),
    )
    body += [f"p.grad = {grad}", "opt.step()"]
    helpers = [
        f"DTYPE = {torch_dtype}",
        "",
        "",
        "def value(hexes, shape):",
        "    return torch.from_numpy(exact(hexes, shape)).to(DTYPE)",
    ]
    return _Program(["import torch"], helpers, body, fetch)


def _optax(ce: Counterexample) -> _Program:
    h, options = ce.hyper, dict(ce.info.options)
    fn = options.pop("fn")
    use_jit = options.pop("jit", True)
    options.pop("eps_root", None)  # the adapter requires hyper.eps_root to equal it
    kwargs: dict[str, Any] = {
        "learning_rate": float(_lr(ce)),
        "b1": float(h.beta1),
        "b2": float(h.beta2),
        "eps": float(h.eps),
        "eps_root": float(h.eps_root),
    }
    if fn == "adamw":
        kwargs["weight_decay"] = float(h.weight_decay)
    kwargs.update(options)
    fields = [
        f"count=jnp.asarray({ce.step}, dtype=jnp.int32)",
        f"mu=[{_value(ce.before.m[0])}]",
        f"nu=[{_value(ce.before.v[0])}]",
    ]
    fetch = {
        "param": "params[0]",
        "m": 'optax.tree.get(opt_state, "mu")[0]',
        "v": 'optax.tree.get(opt_state, "nu")[0]',
    }
    if fn == "amsgrad":
        fields.append(f"nu_max=[{_value(ce.before.v_max[0])}]")
        fetch["v_max"] = 'optax.tree.get(opt_state, "nu_max")[0]'
    run = "jax.jit(update)" if use_jit else "update"
    body = [
        f"tx = optax.{fn}({_kwargs(kwargs)})",
        f"params = [{_value(ce.before.params[0])}]",
        "# every `count` is the number of steps taken; mu, nu (and nu_max) are the moments",
        "opt_state = optax.tree.set(",
        "    tx.init(params),",
        *[f"    {f}," for f in fields],
        ")",
        "",
        "",
        "def update(params, opt_state, grads):",
        "    updates, opt_state = tx.update(grads, opt_state, params)",
        "    return optax.apply_updates(params, updates), opt_state",
        "",
        "",
        f"params, opt_state = {run}(params, opt_state, [{_grad(ce, _no_sparse)}])",
    ]
    imports = [
        "import os",
        "",
        'os.environ.setdefault("JAX_PLATFORMS", "cpu")  # adamspec runs optax on the CPU',
        "import jax",
        "import jax.numpy as jnp",
        "import optax",
    ]
    helpers = [
        f"DTYPE = jnp.{ce.dtype}",
        "",
        "",
        "def value(hexes, shape):",
        "    return jnp.asarray(exact(hexes, shape), dtype=DTYPE)",
    ]
    return _Program(imports, helpers, body, fetch)


def _no_sparse(indices: str, values: str, shape: tuple[int, ...]) -> str:
    raise ValueError("this framework's adapter has no sparse gradient path")


def _tf_sparse(indices: str, values: str, shape: tuple[int, ...]) -> str:
    return (
        f"tf.IndexedSlices({values}, tf.constant({indices}, dtype=tf.int64), "
        f"tf.constant({list(shape)!r}, dtype=tf.int64))"
    )


_TF_IMPORTS = [
    "import os",
    "",
    'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")',
    "import tensorflow as tf",
]


def _tf_helpers(ce: Counterexample) -> list[str]:
    return [
        f"DTYPE = tf.{ce.dtype}",
        "",
        "",
        "def value(hexes, shape):",
        "    # a cast of a value the dtype holds exactly: no rounding",
        "    return tf.cast(tf.constant(exact(hexes, shape)), DTYPE)",
    ]


def _keras_kwargs(ce: Counterexample) -> dict[str, Any]:
    """Keras 3 / tf_keras constructor arguments, exactly as the adapters pass them."""
    return constructor_kwargs(ce.hyper, float(_lr(ce)))


def _keras3(ce: Counterexample) -> _Program:
    h = ce.hyper
    inner = dict(ce.info.options.get("inner", {}))
    cls = inner.pop("cls", "Adam")
    backend = ce.info.options["env"]["KERAS_BACKEND"]
    kwargs = _keras_kwargs(ce)
    if h.use_ema:
        kwargs.update(
            use_ema=True,
            ema_momentum=float(h.ema_momentum),
            ema_overwrite_frequency=h.ema_overwrite_frequency,
        )
    kwargs.update(inner)
    slots = "keras.ops.convert_to_numpy"
    body = [
        f'var = keras.Variable({_value(ce.before.params[0])}, dtype=DTYPE, name="p0")',
        f"opt = keras.optimizers.{cls}({_kwargs(kwargs)})",
        "opt.build([var])",
        "# Keras 3 has no public setter for the slots: these private lists are what",
        "# adamspec's adapter assigns too",
        f"opt._momentums[0].assign({_value(ce.before.m[0])})",
        f"opt._velocities[0].assign({_value(ce.before.v[0])})",
    ]
    fetch = {
        "param": f"{slots}(var)",
        "m": f"{slots}(opt._momentums[0])",
        "v": f"{slots}(opt._velocities[0])",
    }
    if kwargs.get("amsgrad"):
        body.append(f"opt._velocity_hats[0].assign({_value(ce.before.v_max[0])})")
        fetch["v_max"] = f"{slots}(opt._velocity_hats[0])"
    if h.use_ema and "ema" in ce.before.extras:
        ema = ce.before.extras["ema"][0]
        body.append(f"opt._model_variables_moving_average[0].assign({_value(ema)})")
    grad = _grad(ce, _tf_sparse)
    body += [f"opt._iterations.assign({ce.step})", f"opt.apply_gradients([({grad}, var)])"]
    imports = [
        "import os",
        "",
        f'os.environ["KERAS_BACKEND"] = "{backend}"  # fixed when keras is first imported',
        'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")',
        "import keras",
    ]
    if _is_sparse(ce):
        imports.append("import tensorflow as tf")
    helpers = [
        f'DTYPE = "{ce.dtype}"',
        "",
        "",
        "def value(hexes, shape):",
        "    return keras.ops.convert_to_tensor(exact(hexes, shape), dtype=DTYPE)",
    ]
    return _Program(imports, helpers, body, fetch)


#: How each tf_keras optimizer's public-enough API creates and reaches its slots.
_TF_KERAS_SLOTS = {
    "tf_keras.optimizers.Adam": (
        "opt.build([var])  # the slots are private lists; adamspec's adapter assigns them so",
        {"m": "opt._momentums[0]", "v": "opt._velocities[0]", "v_max": "opt._velocity_hats[0]"},
    ),
    "tf_keras.optimizers.legacy.Adam": (
        "opt._create_all_weights([var])  # creates the slots now, as adamspec's adapter does",
        {
            "m": 'opt.get_slot(var, "m")',
            "v": 'opt.get_slot(var, "v")',
            "v_max": 'opt.get_slot(var, "vhat")',
        },
    ),
}


def _tf_keras_program(ce: Counterexample, constructor: str, kwargs: dict[str, Any]) -> _Program:
    create, slots = _TF_KERAS_SLOTS[constructor]
    components = ("m", "v", "v_max") if kwargs.get("amsgrad") else ("m", "v")
    state = {"m": ce.before.m, "v": ce.before.v, "v_max": ce.before.v_max}
    body = [
        f"var = tf.Variable({_value(ce.before.params[0])})",
        f"opt = {constructor}({_kwargs(kwargs)})",
        create,
        *(f"{slots[c]}.assign({_value(state[c][0])})" for c in components),
        f"opt.iterations.assign({ce.step})",
        f"opt.apply_gradients([({_grad(ce, _tf_sparse)}, var)])",
    ]
    fetch = {"param": "var.numpy()", **{c: f"{slots[c]}.numpy()" for c in components}}
    return _Program([*_TF_IMPORTS, "import tf_keras"], _tf_helpers(ce), body, fetch)


def _tf_keras(ce: Counterexample) -> _Program:
    kwargs = {**_keras_kwargs(ce), **ce.info.options}
    return _tf_keras_program(ce, "tf_keras.optimizers.Adam", kwargs)


def _tf_keras_legacy(ce: Counterexample) -> _Program:
    kwargs = _keras_kwargs(ce)
    kwargs.pop("weight_decay", None)  # the adapter rejects it: legacy Adam has none
    kwargs.update(ce.info.options)
    return _tf_keras_program(ce, "tf_keras.optimizers.legacy.Adam", kwargs)


def _tf_raw(ce: Counterexample) -> _Program:
    h, options = ce.hyper, ce.info.options
    amsgrad = bool(options.get("amsgrad"))
    body = [
        f"var = tf.Variable({_value(ce.before.params[0])})",
        f"m = tf.Variable({_value(ce.before.m[0])})",
        f"v = tf.Variable({_value(ce.before.v[0])})",
    ]
    fetch = {"param": "var.numpy()", "m": "m.numpy()", "v": "v.numpy()"}
    if amsgrad:
        body.append(f"vhat = tf.Variable({_value(ce.before.v_max[0])})")
        fetch["v_max"] = "vhat.numpy()"
    body += [
        f"beta1 = tf.constant({_py_float(h.beta1)}, DTYPE)",
        f"beta2 = tf.constant({_py_float(h.beta2)}, DTYPE)",
        f"t = tf.cast(tf.constant({ce.step + 1}, tf.int64), DTYPE)  # the step being taken",
        "# bias-correction powers as tf_keras's legacy Adam forms them: tf.pow in the dtype",
    ]
    op = "ResourceApplyAdamWithAmsgrad" if amsgrad else "ResourceApplyAdam"
    args = [
        "var=var.handle",
        "m=m.handle",
        "v=v.handle",
        *(["vhat=vhat.handle"] if amsgrad else []),
        "beta1_power=tf.pow(beta1, t)",
        "beta2_power=tf.pow(beta2, t)",
        f"lr=tf.constant({_py_float(_lr(ce))}, DTYPE)",
        "beta1=beta1",
        "beta2=beta2",
        f"epsilon=tf.constant({_py_float(h.eps)}, DTYPE)",
        f"grad={_grad(ce, _no_sparse)}",
        *([] if amsgrad else [f"use_nesterov={bool(options.get('use_nesterov', False))!r}"]),
    ]
    body += [f"tf.raw_ops.{op}(", *[f"    {a}," for a in args], ")"]
    return _Program(list(_TF_IMPORTS), _tf_helpers(ce), body, fetch)


def _tf_v1(ce: Counterexample) -> _Program:
    h = ce.hyper
    powers = []
    for key, beta in (("beta1_power", h.beta1), ("beta2_power", h.beta2)):
        # TF1's variable holds the power the NEXT step divides by: fl32(P_step * fl32(beta))
        used = np.float32(np.asarray(ce.before.extras[key], np.float64))
        powers.append(_hexf(np.float32(used * np.float32(float(beta)))))
    kwargs = {
        "learning_rate": float(_lr(ce)),
        "beta1": float(h.beta1),
        "beta2": float(h.beta2),
        "epsilon": float(h.eps),
    }
    g = ce.grads[0]
    # the gradient is fed through placeholders, as adamspec's adapter does: a constant
    # gradient lets graph optimisation fold the sparse update into other arithmetic
    if isinstance(g, SparseRows):
        values = np.asarray(g.values)
        grad = [
            f"    values = v1.placeholder(DTYPE, {(None, *values.shape[1:])!r})",
            "    indices = v1.placeholder(tf.int64, (None,))",
            f"    dense_shape = tf.constant({list(ce.shape)!r}, tf.int64)",
            "    grad = tf.IndexedSlices(values, indices, dense_shape)",
        ]
        feed = [
            f"values: host({_hexes(values)!r}, {values.shape!r})",
            f"indices: np.asarray({[int(i) for i in np.asarray(g.indices)]!r}, dtype=np.int64)",
        ]
    else:
        grad = [f"    grad = v1.placeholder(DTYPE, {ce.shape!r})"]
        feed = [f"grad: host({_hexes(g)!r}, {ce.shape!r})"]
    body = [
        "v1 = tf.compat.v1",
        "graph = tf.Graph()",
        "with graph.as_default():",
        f'    var = v1.Variable({_value(ce.before.params[0])}, name="param0")',
        *grad,
        f"    opt = v1.train.AdamOptimizer({_kwargs(kwargs)})",
        "    train = opt.apply_gradients([(grad, var)])",
        '    m, v = opt.get_slot(var, "m"), opt.get_slot(var, "v")',
        "    # private float32 accumulators holding the powers the NEXT step divides by,",
        "    # beta^t, as TF1 forms them after step t - 1: fl32(beta^(t-1) * fl32(beta))",
        "    beta1_power, beta2_power = opt._get_beta_accumulators()",
        "    load = tf.group(",
        f"        m.assign({_value(ce.before.m[0])}),",
        f"        v.assign({_value(ce.before.v[0])}),",
        f'        beta1_power.assign(tf.constant(float.fromhex("{powers[0]}"), tf.float32)),',
        f'        beta2_power.assign(tf.constant(float.fromhex("{powers[1]}"), tf.float32)),',
        "    )",
        "    init = v1.global_variables_initializer()",
        "with v1.Session(graph=graph) as sess:",
        "    sess.run(init)",
        "    sess.run(load)",
        f"    sess.run(train, {{{', '.join(feed)}}})".replace("'", '"'),
        '    result = dict(zip(["param", "m", "v"], sess.run([var, m, v])))',
    ]
    fetch = {"param": 'result["param"]', "m": 'result["m"]', "v": 'result["v"]'}
    helpers = [
        *_tf_helpers(ce),
        "",
        "",
        "def host(hexes, shape):",
        "    return exact(hexes, shape).astype(DTYPE.as_numpy_dtype)",
    ]
    return _Program(list(_TF_IMPORTS), helpers, body, fetch)


def _onnx(ce: Counterexample) -> _Program:
    h, options = ce.hyper, ce.info.options
    post = bool(options.get("norm_coefficient_post", False))
    lr_dtype = options.get("lr_dtype", "float32")
    lr_dtype = ce.dtype if lr_dtype == "param" else lr_dtype
    elem = {"float64": "TensorProto.DOUBLE"}.get(ce.dtype, "TensorProto.FLOAT")
    lr_elem = {"float64": "TensorProto.DOUBLE"}.get(lr_dtype, "TensorProto.FLOAT")
    attrs = {
        "alpha": float(h.beta1),
        "beta": float(h.beta2),
        "epsilon": float(h.eps),
        ("norm_coefficient_post" if post else "norm_coefficient"): float(h.weight_decay),
    }
    t_value = ce.step + int(options.get("t_offset", 1))
    shape = list(ce.shape)
    body = [
        'DOMAIN = "ai.onnx.preview.training"',
        "node = helper.make_node(",
        '    "Adam", ["R", "T", "X", "G", "V", "H"], ["X_new", "V_new", "H_new"], domain=DOMAIN,',
        f"    {_kwargs(attrs)},",
        ")",
        "inputs = [",
        f'    helper.make_tensor_value_info("R", {lr_elem}, []),',
        '    helper.make_tensor_value_info("T", TensorProto.INT64, []),',
        f'    *[helper.make_tensor_value_info(n, {elem}, {shape!r}) for n in "XGVH"],',
        "]",
        f'outputs = [helper.make_tensor_value_info(n + "_new", {elem}, {shape!r}) for n in "XVH"]',
        "model = helper.make_model(",
        '    helper.make_graph([node], "adam", inputs, outputs),',
        '    opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],',
        ")",
        "onnx.checker.check_model(model)",
        "feeds = {",
        f'    "R": np.asarray({_py_float(_lr(ce))}, dtype=np.{lr_dtype}),',
        f'    "T": np.asarray({t_value}, dtype=np.int64),  # the step being taken, counted from 1',
        f'    "X": {_value(ce.before.params[0])},',
        f'    "G": {_grad(ce, _no_sparse)},',
        f'    "V": {_value(ce.before.m[0])},',
        f'    "H": {_value(ce.before.v[0])},',
        "}",
        "# the reference evaluator may return float64 for float32 inputs; the operator's",
        "# output type is the input's, so adamspec rounds it back as its adapter does",
        "results = ReferenceEvaluator(model).run(None, feeds)",
        "x, m, v = (np.asarray(r).astype(DTYPE) for r in results)",
    ]
    imports = [
        "import onnx",
        "from onnx import TensorProto, helper",
        "from onnx.reference import ReferenceEvaluator",
    ]
    helpers = [
        f"DTYPE = np.{ce.dtype}",
        "",
        "",
        "def value(hexes, shape):",
        "    return exact(hexes, shape).astype(DTYPE)",
    ]
    return _Program(imports, helpers, body, {"param": "x", "m": "m", "v": "v"})


def _np_dtype(name: str) -> str:
    return "ml_dtypes.bfloat16" if name == "bfloat16" else f"np.{name}"


def _hyper_call(h: Hyper, lr: Fraction) -> tuple[str, bool]:
    """``make_hyper(...)`` with exact decimal strings; True if ``Fraction`` is needed."""

    def lit(x: Fraction) -> str:
        text = _decimal(x)
        return f"Fraction({x.numerator}, {x.denominator})" if "/" in text else f'"{text}"'

    parts = [f"lr={lit(lr)}"]
    parts += [f"{k}={lit(getattr(h, k))}" for k in ("beta1", "beta2", "eps")]
    parts += [f"{k}={lit(getattr(h, k))}" for k in ("eps_root", "weight_decay") if getattr(h, k)]
    parts += [
        f"{k}={lit(getattr(h, k))}"
        for k in ("clipnorm", "clipvalue", "global_clipnorm")
        if getattr(h, k) is not None
    ]
    if h.use_ema:
        parts += [
            "use_ema=True",
            f"ema_momentum={lit(h.ema_momentum)}",
            f"ema_overwrite_frequency={h.ema_overwrite_frequency!r}",
        ]
    text = f"make_hyper({', '.join(parts)})"
    return text, "Fraction(" in text


def _adamspec(ce: Counterexample) -> _Program:
    info, before = ce.info, ce.before
    hyper, needs_fraction = _hyper_call(ce.hyper, _lr(ce))
    extras = []
    for key, x in before.extras.items():
        if isinstance(x, list):
            extras.append(f'"{key}": [{", ".join(_value(a) for a in x)}]')
        else:
            a = np.asarray(x)
            extras.append(
                f'"{key}": np.asarray(float.fromhex("{_hexf(a)}"), dtype={_np_dtype(str(a.dtype))})'
            )
    v_max = "None" if before.v_max is None else f"[{_value(before.v_max[0])}]"
    registration = repr(
        AdapterInfo(info.name, info.framework, info.documented, info.factory, dict(info.options))
    )
    body = [
        f"NAME = {ce.implementation!r}",
        "load_registry()",
        "if NAME not in REGISTRY:  # registered outside impl.adapters (a test or user module)",
        f"    register({registration})",
        f"hyper = {hyper}",
        f"adapter = make_adapter(NAME, hyper, {ce.dtype!r}, [{ce.shape!r}])",
        "adapter.set_state(",
        "    State(",
        f"        params=[{_value(before.params[0])}],",
        f"        m=[{_value(before.m[0])}],",
        f"        v=[{_value(before.v[0])}],",
        f"        v_max={v_max},",
        f"        step={ce.step},",
        f"        extras={{{', '.join(extras)}}},",
        "    )",
        ")",
        f"adapter.step([{_grad(ce, _sparse_rows)}])",
        "after = adapter.get_state()",
        "adapter.close()",
    ]
    fetch = {"param": "after.params[0]", "m": "after.m[0]", "v": "after.v[0]"}
    fetch["v_max"] = "after.v_max[0]"
    imports = [
        "# needs adamspec installed; the tests' toy kernels also need tests/ on PYTHONPATH",
        *(["from fractions import Fraction", ""] if needs_fraction else []),
        "from adamspec.impl.adapters import (",
        "    REGISTRY, AdapterInfo, State, load_registry, make_adapter, register,",
        ")",
        *(["from adamspec.spec.gradients import SparseRows"] if _is_sparse(ce) else []),
        "from adamspec.spec.hyper import make_hyper",
    ]
    if "bfloat16" in (ce.dtype, *(str(np.asarray(x).dtype) for x in before.extras.values())):
        imports.append("import ml_dtypes")
    helpers = [
        f"DTYPE = {_np_dtype(ce.dtype)}",
        "",
        "",
        "def value(hexes, shape):",
        "    return exact(hexes, shape).astype(DTYPE)",
    ]
    return _Program(imports, helpers, body, fetch)


def _is_sparse(ce: Counterexample) -> bool:
    return isinstance(ce.grads[0], SparseRows)


def _sparse_rows(indices: str, values: str, shape: tuple[int, ...]) -> str:
    return f"SparseRows(np.asarray({indices}), {values}, {shape[0]})"


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

_PYTHON: dict[str, Callable[[Counterexample], _Program]] = {
    "torch": _torch,
    "optax": _optax,
    "keras3": _keras3,
    "tf_keras": _tf_keras,
    "tf_keras_legacy": _tf_keras_legacy,
    "tf_raw": _tf_raw,
    "tf_v1": _tf_v1,
    "onnx": _onnx,
    "adamspec": _adamspec,
}


def _show_lines(
    ce: Counterexample, fetch: dict[str, str], call: str, comment: str, quote: str = '"'
) -> list[str]:
    """One print per measured component, with the oracle's value beside it."""
    lines = []
    for name in ce.oracle:
        if name not in fetch:
            continue
        oracle = ", ".join(f"{quote}{h}{quote}" for h in _hexes(ce.oracle[name]))
        lines.append(f"{comment} {_oracle_comment(ce, name)}")
        lines.append(call.format(name=name, got=fetch[name], oracle=oracle))
    return lines


def _python(ce: Counterexample, program: _Program) -> str:
    lines = [
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
        *_show_lines(ce, program.fetch, 'show("{name}", {got}, [{oracle}])', "#"),
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- TF.js (JavaScript)

_JS_HELPERS = r"""
'use strict';
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');

// float32 values written as their IEEE-754 bits: exact
function f32(bits, shape) {
  return tf.tensor(new Float32Array(new Uint32Array(bits).buffer), shape, 'float32');
}

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


def _f32(a: Any) -> str:
    bits = np.asarray(a, np.float32).reshape(-1).view(np.uint32)
    return f"f32([{', '.join(f'0x{int(b):08x}' for b in bits)}], {list(np.shape(a))!r})"


def _tfjs(ce: Counterexample) -> str:
    h, before = ce.hyper, ce.before
    p1 = _f32(np.asarray(before.extras["beta1_power"], np.float32))
    p2 = _f32(np.asarray(before.extras["beta2_power"], np.float32))
    body = [
        "async function main() {",
        "  await tf.setBackend('cpu');",
        "  await tf.ready();",
        f"  const beta1 = {_py_float(h.beta1)};",
        f"  const beta2 = {_py_float(h.beta2)};",
        f"  const optimizer = tf.train.adam({_py_float(_lr(ce))}, beta1, beta2, "
        f"{_py_float(h.eps)});",
        f"  const p = tf.variable({_f32(before.params[0])}, true, 'adamspec/p0');",
        "  await optimizer.setWeights([",
        f"    {{name: 'iter', tensor: tf.scalar({ce.step}, 'int32')}},",
        f"    {{name: 'adamspec/p0/m', tensor: {_f32(before.m[0])}}},",
        f"    {{name: 'adamspec/p0/v', tensor: {_f32(before.v[0])}}},",
        "  ]);",
        "  // accBeta1/accBeta2 (private) hold the bias-correction powers the next step divides",
        "  // by; TF.js forms them as float32 products, as adamspec's worker sets them",
        f"  optimizer.accBeta1.assign(tf.mul({p1}, beta1));",
        f"  optimizer.accBeta2.assign(tf.mul({p2}, beta2));",
        f"  optimizer.applyGradients({{'adamspec/p0': {_f32(ce.grads[0])}}});",
        "  const weights = await optimizer.getWeights();  // [iter, m, v]",
    ]
    fetch = {
        "param": "p.dataSync()",
        "m": "weights[1].tensor.dataSync()",
        "v": "weights[2].tensor.dataSync()",
    }
    shows = _show_lines(ce, fetch, "show('{name}', {got}, [{oracle}]);", "//", quote="'")
    lines = [
        "// JavaScript (Node.js), not Python: run with",
        "//   NODE_PATH=<dir with @tensorflow/tfjs-core and tfjs-backend-cpu> node <this file>",
        *_header(ce, "//"),
        "",
        *_JS_HELPERS,
        "",
        *body,
        *[f"  {line}" for line in shows],
        "}",
        "",
        "main();",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- public API


def snippet(ce: Counterexample) -> str:
    """A runnable, self-contained script reproducing ``ce``'s step with the framework's public
    API (TF.js: a Node.js script), printing each result next to the oracle's value.

    Implementations without a framework template (adamspec's own, user kernels, toys)
    get a Python script driving them through :mod:`adamspec.impl.adapters`.
    """
    family = _family(ce.info)
    if family == "tfjs":
        return _tfjs(ce)
    return _python(ce, _PYTHON[family](ce))


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
    "minimal_counterexample",
    "snippet",
    "write_counterexample",
]
