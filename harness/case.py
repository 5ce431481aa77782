"""The oracle case format: a JSON document describing one run, and its answer.

A case (public interface, see README)::

    {"variant": "paper.algorithm1", "dtype": "float32",
     "hyper": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
     "params": [..], "grads": [[..], [..]],
     "state": {"m": [..], "v": [..], "v_max": [..], "step": 0},
     "hyper_mode": "held"}

Numbers are JSON numbers (decimals, rounded correctly to ``dtype``) or
strings: hex floats (``"0x1.99999ap-4"``, must be exact in ``dtype``) and
``"nan"``, ``"inf"``, ``"-inf"``. ``variant`` is a catalog name or an object
of axes. A sparse gradient is ``{"indices": [..], "values": [[..], ..]}`` on a
2-D ``params``. Every error names the offending field in one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from adamspec.oracles import OracleState, StepResult, trajectory
from adamspec.oracles.hyperparams import HYPER_MODES, resolve
from adamspec.oracles.rounding import exact_of_float, hex_float, numpy_dtype, round_exact
from adamspec.spec.catalog import entry
from adamspec.spec.formats import FloatFormat, FormatError, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import HYPER_NAMES, Hyper, HyperparameterError, make_hyper
from adamspec.spec.variant import Variant, VariantError

CASE_KEYS = ("variant", "dtype", "hyper", "params", "grads", "state", "hyper_mode")
STATE_KEYS = ("m", "v", "v_max", "ema", "step", "beta1_power", "beta2_power")


class CaseError(ValueError):
    """A malformed case; the message names the field."""


@dataclass(frozen=True)
class Case:
    """A parsed, validated case."""

    variant_name: str
    variant: Variant
    hyper: Hyper
    fmt: FloatFormat
    params: np.ndarray
    grads: list[Any]
    state: OracleState
    hyper_mode: str


def _reject_unknown(path: str, given: dict, allowed: Sequence[str], what: str) -> None:
    """One-line error naming the first unknown key of ``given`` and the allowed ones."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise CaseError(f"{path}.{unknown[0]} is not {what}; allowed: {', '.join(allowed)}")


def _number(path: str, value: Any, fmt: FloatFormat) -> float:
    """One element as a value of ``fmt``: decimals round correctly, hex floats must be exact."""
    if isinstance(value, bool) or value is None:
        raise CaseError(f"{path}={value!r} is not a number")
    if isinstance(value, (int, Decimal)):
        return round_exact(Fraction(value), fmt)
    if isinstance(value, float):  # parse_float keeps decimals; floats come from Python callers
        return round_exact(Fraction(Decimal(repr(value))), fmt) if math.isfinite(value) else value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
            return float(text)
        if text.lstrip("+-").startswith("0x"):
            try:
                x = float.fromhex(text)
            except (ValueError, OverflowError):
                raise CaseError(f"{path}={value!r} is not a valid hex float") from None
            if round_exact(Fraction(x), fmt) != x:
                raise CaseError(f"{path}={value!r} is not exactly representable in {fmt.name}")
            return x
        try:
            return _number(path, Decimal(text), fmt)
        except ArithmeticError:
            pass
    raise CaseError(f"{path}={value!r} is not a number (JSON number, hex float, nan or inf)")


def _array(path: str, value: Any, fmt: FloatFormat) -> np.ndarray:
    def convert(p: str, v: Any) -> Any:
        if isinstance(v, list):
            return [convert(f"{p}[{i}]", x) for i, x in enumerate(v)]
        return _number(p, v, fmt)

    if not isinstance(value, list):
        raise CaseError(f"{path} must be a list of numbers, got {type(value).__name__}")
    data = convert(path, value)
    try:
        return np.array(data, dtype=numpy_dtype(fmt))
    except ValueError:
        raise CaseError(f"{path} is ragged: nested lists must have equal lengths") from None


def _variant(value: Any) -> tuple[str, Variant, dict[str, Any]]:
    if isinstance(value, str):
        try:
            e = entry(value)
        except KeyError as exc:
            raise CaseError(f"case.variant: {exc}") from None
        return e.name, e.variant, dict(e.defaults)
    if isinstance(value, dict):
        try:
            return "custom", Variant.from_axes(value), {}
        except VariantError as exc:
            raise CaseError(f"case.variant: {exc}") from None
    raise CaseError(
        f"case.variant={value!r} must be a catalog name (see `adamspec variants`) "
        "or an object of axes"
    )


def parse_case(document: Any) -> Case:
    """Validate a decoded case document (decode with :func:`load_case` to keep decimals exact)."""
    if not isinstance(document, dict):
        raise CaseError(f"case must be a JSON object, got {type(document).__name__}")
    _reject_unknown("case", document, CASE_KEYS, "a case field")
    for required in ("variant", "dtype", "params", "grads"):
        if required not in document:
            raise CaseError(f"case.{required} is missing")
    name, variant, defaults = _variant(document["variant"])
    try:
        fmt = format_named(document["dtype"])
    except FormatError as exc:
        raise CaseError(f"case.{exc}") from None
    hyper_values = document.get("hyper", {})
    if not isinstance(hyper_values, dict):
        raise CaseError("case.hyper must be an object of hyperparameters")
    _reject_unknown("case.hyper", hyper_values, HYPER_NAMES, "a hyperparameter")
    try:
        hyper = make_hyper(**{**defaults, **hyper_values})
    except HyperparameterError as exc:
        raise CaseError(f"case.hyper.{exc}") from None
    mode = document.get("hyper_mode", "held")
    if mode not in HYPER_MODES:
        raise CaseError(
            f"case.hyper_mode={mode!r} is not allowed; allowed: {', '.join(HYPER_MODES)}"
        )
    params = _array("case.params", document["params"], fmt)
    grads_doc = document["grads"]
    if not isinstance(grads_doc, list) or not grads_doc:
        raise CaseError("case.grads must be a non-empty list with one gradient per step")
    grads = [_gradient(f"case.grads[{i}]", g, params, fmt) for i, g in enumerate(grads_doc)]
    state = _state(document.get("state"), params, fmt)
    return Case(name, variant, hyper, fmt, params, grads, state, mode)


def _gradient(path: str, value: Any, params: np.ndarray, fmt: FloatFormat) -> Any:
    if isinstance(value, dict):
        if set(value) != {"indices", "values"}:
            raise CaseError(f"{path} sparse gradient needs exactly the keys indices and values")
        if params.ndim < 1:
            raise CaseError(f"{path} is sparse but case.params is a scalar")
        indices = value["indices"]
        if not isinstance(indices, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in indices
        ):
            raise CaseError(f"{path}.indices must be a list of integers")
        values = _array(f"{path}.values", value["values"], fmt)
        if values.shape[1:] != params.shape[1:] or len(values) != len(indices):
            raise CaseError(
                f"{path}.values has shape {values.shape}; expected ({len(indices)}, "
                f"{', '.join(map(str, params.shape[1:]))}) rows of case.params"
            )
        try:
            return SparseRows(indices, values, params.shape[0])
        except ValueError as exc:
            raise CaseError(f"{path}: {exc}") from None
    g = _array(path, value, fmt)
    if g.shape != params.shape:
        raise CaseError(f"{path} has shape {g.shape}, case.params has {params.shape}")
    return g


def _state(value: Any, params: np.ndarray, fmt: FloatFormat) -> OracleState:
    if value is None:
        return OracleState()
    if not isinstance(value, dict):
        raise CaseError("case.state must be an object")
    _reject_unknown("case.state", value, STATE_KEYS, "a state field")
    step = value.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CaseError(f"case.state.step={step!r} must be a non-negative integer")
    arrays = {}
    for key in ("m", "v", "v_max", "ema"):
        if key in value:
            arr = _array(f"case.state.{key}", value[key], fmt)
            if arr.shape != params.shape:
                raise CaseError(
                    f"case.state.{key} has shape {arr.shape}, case.params has {params.shape}"
                )
            arrays[key] = arr
    powers = {
        key: np.asarray(_number(f"case.state.{key}", value[key], fmt), dtype=numpy_dtype(fmt))
        for key in ("beta1_power", "beta2_power")
        if key in value
    }
    return OracleState(step=step, **arrays, **powers)


def load_case(text: str) -> Case:
    """Parse JSON text (decimals kept exact) into a :class:`Case`."""
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise CaseError(
            f"case is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return parse_case(document)


def run_case(case: Case, digits: int = 20) -> dict[str, Any]:
    """Execute a case on the oracle; the JSON-ready answer."""
    results: list[StepResult] = trajectory(
        case.variant,
        case.hyper,
        case.params,
        case.grads,
        case.state,
        dtype=case.fmt,
        hyper_mode=case.hyper_mode,
        digits=digits,
    )
    exact_hyper = resolve(case.hyper, case.variant, case.fmt, case.hyper_mode)
    held = {
        name: _held_repr(getattr(exact_hyper, name))
        for name in ("beta1", "beta2", "eps", "eps_root", "weight_decay")
    }
    held["lr"] = [_held_repr(exact_hyper.lr_at(r.step)) for r in results]
    return {
        "variant": case.variant_name,
        "axes": case.variant.axes(),
        "dtype": case.fmt.name,
        "hyper_mode": case.hyper_mode,
        "held_in": exact_hyper.held_in.name if exact_hyper.held_in else "ideal",
        "hyper": held,
        "precision_bits": results[0].precision if results else None,
        "steps": [
            {
                "step": r.step,
                **{
                    name: {
                        "exact": _flat(r.decimals[name][0], r.exact[name][0].shape),
                        "rounded": _flat(
                            [hex_float(x) for x in r.rounded[name][0].ravel()],
                            r.rounded[name][0].shape,
                        ),
                    }
                    for name in r.components
                },
            }
            for r in results
        ],
    }


def _held_repr(x: Any) -> str:
    """A hyperparameter as the oracle used it: exact decimal when short, else hex."""
    q = Fraction(int(x.numerator), int(x.denominator))
    if q == 0:
        return "0"
    if q.denominator & (q.denominator - 1) == 0 and float(q) == q:
        return hex_float(float(q))  # a binary value: exact in hex
    decimal = Fraction(Decimal(repr(float(q))))
    return repr(float(q)) if decimal == q else str(q)


def _flat(values: list[str], shape: tuple[int, ...]) -> Any:
    if not shape:
        return values[0]
    return np.array(values, dtype=object).reshape(shape).tolist()


__all__ = ["Case", "CaseError", "exact_of_float", "load_case", "parse_case", "run_case"]
