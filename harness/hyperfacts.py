"""Hyperparameter facts: what a kernel does with the numbers it is given.

A :class:`HyperFact` changes one hyperparameter of every trace before the oracle measures
it, in one of two ways:

* **representation** (``held``): the kernel holds it in a format of its own, whatever the
  param dtype (``beta1`` in bfloat16 under float32 params), executed by both oracles through
  :attr:`adamspec.spec.hyper.Hyper.held_formats`;
* **value** (``value``): the kernel uses another number than the one it is given, e.g. an
  eps hard-coded to another catalog variant's default (``1e-7``) or a value *fitted* from
  the traces (:func:`fit`): eps from steps where it is comparable to ``sqrt(v_hat)``, the
  betas from consecutive moments.

:func:`candidates` lists the facts worth trying on some traces; the fingerprint search and
the classification score them like any other change (oracle time only: the traces are not
re-run).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction

import numpy as np

from adamspec.harness.engine import Trace
from adamspec.spec.axes import BiasCorrection, EpsPlacement, WeightDecay
from adamspec.spec.catalog import entries
from adamspec.spec.formats import format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.holding import HOLDABLE, HOLDING_FORMATS
from adamspec.spec.hyper import RANGES, Hyper
from adamspec.spec.precision import precision_named
from adamspec.spec.variant import Variant

REPRESENTATION = "hyperparameter representation"
VALUE = "hyperparameter value"

#: The hyperparameters fitted from traces (lr is not: every catalog default is 0.001, and a
#: step's size mixes it with eps and the bias corrections).
FITTED: tuple[str, ...] = ("eps", "beta1", "beta2")

#: A fitted estimate is kept when the coordinates it comes from agree this well (relative
#: spread of the middle half); otherwise the hyperparameter "cannot be estimated".
FIT_SPREAD = 0.05

#: Fewest informative coordinates a fit needs.
FIT_MIN_COORDINATES = 3


@dataclass(frozen=True)
class HyperFact:
    """One hyperparameter held in ``held`` (a format name), or used as ``value`` (an exact
    decimal string); ``source`` says where a value comes from ("fitted", a catalog name)."""

    name: str
    held: str = ""
    value: str = ""
    source: str = ""

    @property
    def category(self) -> str:
        return REPRESENTATION if self.held else VALUE

    def apply(self, hyper: Hyper) -> Hyper:
        if self.held:
            return hyper.with_(held_formats={**dict(hyper.held_formats), self.name: self.held})
        return hyper.with_(**{self.name: self.value})

    def describe(self, given: Hyper | None = None) -> str:
        """ "beta1 held in bfloat16", "behaves as eps = 1e-7 (given 1e-8)"."""
        if self.held:
            return f"{self.name} held in {self.held}"
        was = f" (given {_show(getattr(given, self.name))})" if given is not None else ""
        how = "fitted: behaves as" if self.source == "fitted" else "behaves as"
        return f"{how} {self.name} = {self.value}{was}"


def _show(x: Fraction) -> str:
    return f"{float(x):.6g}"


def apply_all(facts: Sequence[HyperFact], hyper: Hyper | None) -> Hyper | None:
    """``hyper`` with every fact applied (None stays None)."""
    if hyper is None:
        return None
    for fact in facts:
        hyper = fact.apply(hyper)
    return hyper


def with_facts(trace: Trace, facts: Sequence[HyperFact]) -> Trace:
    """The trace as measured under ``facts`` (its hyperparameters changed, nothing re-run)."""
    return replace(trace, hyper=apply_all(facts, trace.hyper)) if facts else trace


def _hypers(traces: Sequence[Trace]) -> list[Hyper]:
    return [t.hyper for t in traces if t.hyper is not None and t.steps]


def relevant(traces: Sequence[Trace], variant: Variant) -> tuple[str, ...]:
    """The hyperparameters these traces and this formula can show anything about."""
    hypers = _hypers(traces)
    out = ["lr", "beta1", "beta2", "eps"]
    if any(h.weight_decay for h in hypers) and variant.weight_decay is not WeightDecay.NONE:
        out.append("weight_decay")
    if any(h.eps_root for h in hypers) and variant.eps_placement is EpsPlacement.EPS_ROOT:
        out.append("eps_root")
    return tuple(n for n in HOLDABLE if n in out)


def representations(traces: Sequence[Trace], variant: Variant) -> Iterator[HyperFact]:
    """Each relevant hyperparameter held in each format of its own."""
    for name in relevant(traces, variant):
        for fmt in HOLDING_FORMATS:
            yield HyperFact(name, held=fmt.name)


def catalog_values(traces: Sequence[Trace], variant: Variant) -> Iterator[HyperFact]:
    """Each relevant hyperparameter replaced by another catalog variant's documented default
    (a kernel that hard-codes Keras's eps = 1e-7 whatever it is given)."""
    hypers = _hypers(traces)
    for name in relevant(traces, variant):
        given = {getattr(h, name) for h in hypers}
        seen: dict[Fraction, str] = {}
        for e in entries():
            text = e.defaults.get(name)
            if text is None:
                continue
            value = Fraction(text)
            if value not in seen and (len(given) > 1 or value not in given):
                seen[value] = e.name
                yield HyperFact(name, value=text, source=f"{e.name} default")


def candidates(traces: Sequence[Trace], variant: Variant) -> list[HyperFact]:
    """Every single fact worth trying: representations, catalog values, fitted values."""
    fitted = [f for f in fit(traces, variant).values() if isinstance(f, HyperFact)]
    return [*representations(traces, variant), *catalog_values(traces, variant), *fitted]


# ----------------------------------------------------------------------------- fitting


def _samples(trace: Trace):
    """(record, tensor index) of every dense tensor step of ``trace``."""
    if trace.hyper is None:
        return
    for rec in trace.steps:
        if any(isinstance(g, SparseRows) for g in rec.grads):
            continue
        for k in range(len(rec.before.params)):
            yield rec, k


def _effective_grad(variant: Variant, hyper: Hyper, rec, k: int) -> np.ndarray:
    g = np.asarray(rec.grads[k], np.float64)
    if variant.maximize:
        g = -g
    if variant.weight_decay is WeightDecay.L2:
        g = g + float(hyper.weight_decay) * rec.before.params[k].astype(np.float64)
    return g


def _spacing(x: np.ndarray, dtype: str) -> np.ndarray:
    fmt = format_named(precision_named(dtype).param)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.floor(np.log2(np.where((x != 0) & np.isfinite(x), np.abs(x), 1.0)))
    return np.ldexp(1.0, (np.maximum(e, fmt.emin) - (fmt.precision - 1)).astype(np.int64))


def _estimate(values: list[np.ndarray]) -> float | None:
    x = np.concatenate(values) if values else np.zeros(0)
    x = x[np.isfinite(x)]
    if x.size < FIT_MIN_COORDINATES:
        return None
    q1, mid, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    if mid <= 0 or (q3 - q1) > FIT_SPREAD * abs(mid):
        return None
    return float(mid)


def _fit_beta(trace: Trace, variant: Variant, which: int) -> float | None:
    """beta from ``moment' = beta moment + (1 - beta) x``: ``(x - moment') / (x - moment)``
    where ``|x - moment|`` is far above the rounding of the stored moment."""
    out = []
    for rec, k in _samples(trace):
        g = _effective_grad(variant, trace.hyper, rec, k)
        x = g if which == 1 else g * g
        name = "m" if which == 1 else "v"
        before = getattr(rec.before, name)[k].astype(np.float64)
        after = getattr(rec.after, name)[k].astype(np.float64)
        gap = x - before
        ok = np.abs(gap) > 1e4 * _spacing(after, trace.dtype)
        with np.errstate(all="ignore"):
            out.append(((x - after) / gap)[ok & np.isfinite(gap)])
    return _estimate(out)


def _fit_eps(trace: Trace, variant: Variant) -> float | None:
    """eps from steps where it is comparable to ``sqrt(v_hat)`` and the step is resolved:
    ``lr m_hat / |step| - sqrt(v_hat)`` (the eps-hat form: ``lr_t m / |step| - sqrt(v)``),
    from the kernel's own stored moments after the step."""
    out = []
    for rec, k in _samples(trace):
        h = trace.hyper
        if h.weight_decay and variant.weight_decay is not WeightDecay.NONE:
            continue  # decay moves theta too: the step is not lr u alone
        t = rec.before.step + 1
        c1 = _correction(variant.bias_correction_m, float(h.beta1), t)
        c2 = _correction(variant.bias_correction_v, float(h.beta2), t)
        theta = rec.before.params[k].astype(np.float64)
        step = theta - rec.after.params[k].astype(np.float64)
        m = rec.after.m[k].astype(np.float64)
        v = rec.after.v[k].astype(np.float64)
        if variant.maximize:
            step = -step
        lr = float(h.lr_at(t))
        with np.errstate(all="ignore"):
            if variant.eps_placement is EpsPlacement.EPS_HAT:
                denominator = lr * math.sqrt(c2) / c1 * m / step
                root = np.sqrt(v)
            else:
                denominator = lr * (m / c1) / step
                root = np.sqrt(v / c2)
            eps = denominator - root
            # the step's rounding (half a spacing of theta) as a relative error of the
            # denominator, magnified by the cancellation against sqrt(v_hat)
            uncertainty = denominator * (_spacing(theta, trace.dtype) / np.abs(step)) / eps
        ok = (step != 0) & (m != 0) & np.isfinite(eps) & (eps > 0) & (uncertainty < FIT_SPREAD)
        out.append(eps[ok])
    return _estimate(out)


def _correction(axis: BiasCorrection, beta: float, t: int) -> float:
    return 1.0 if axis is BiasCorrection.NONE else 1.0 - beta**t


def _short_decimal(x: float) -> str:
    """``x`` to one significant digit, as the decimal a kernel would hard-code ("1e-7")."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


_CANNOT = {
    "eps": "no step where eps is comparable to sqrt(v_hat) and the step is resolved",
    "beta1": "no step where g - m is far above the rounding of m",
    "beta2": "no step where g^2 - v is far above the rounding of v",
}  # (or every estimate lies outside the hyperparameter's range)


def fit(traces: Sequence[Trace], variant: Variant) -> dict[str, HyperFact | str]:
    """Each fitted hyperparameter as a fact (the estimate to one significant digit, of
    ``1 - beta`` for the betas: the short decimal a kernel would hard-code), or why there is
    none: it cannot be estimated (no informative step; never guessed), the traces disagree,
    or the estimate is the value each trace was given."""
    fits = {"eps": _fit_eps, "beta1": lambda t, v: _fit_beta(t, v, 1),
            "beta2": lambda t, v: _fit_beta(t, v, 2)}  # fmt: skip
    out: dict[str, HyperFact | str] = {}
    for name, estimate in fits.items():
        found: dict[str, list[Fraction]] = {}  # short decimal -> the values given
        for trace in traces:
            x = estimate(trace, variant) if trace.hyper is not None else None
            if x is not None:
                value = (
                    str(Decimal(1) - Decimal(_short_decimal(1 - x)))
                    if name.startswith("beta")
                    else _short_decimal(x)
                )
                found.setdefault(value, []).append(getattr(trace.hyper, name))
        found = {v: g for v, g in found.items() if RANGES[name].contains(Fraction(v))}
        if not found:
            out[name] = f"{name} cannot be estimated: {_CANNOT[name]}"
        elif all(Fraction(v) == g for v, given in found.items() for g in given):
            out[name] = f"{name} fitted as the value it is given"
        elif len(found) > 1:
            out[name] = f"{name} fitted inconsistently across cases ({', '.join(found)})"
        else:
            out[name] = HyperFact(name, value=next(iter(found)), source="fitted")
    return out


__all__ = [
    "FITTED",
    "REPRESENTATION",
    "VALUE",
    "HyperFact",
    "apply_all",
    "candidates",
    "catalog_values",
    "fit",
    "relevant",
    "representations",
    "with_facts",
]
