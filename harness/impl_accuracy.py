"""How many stored values our production Adam rounds correctly, against the exact oracle.

One step of :mod:`adamspec.impl.adam` and of the oracle from the same stored state, per
variant, hyperparameter mode (``hyper_precision``: how the variant holds its
hyperparameters; ``ideal`` is the paper's exact decimals) and dtype, on two kinds of
state: adversarial magnitudes (1e-30..1e30, zeros, subnormals, mixed signs) and
training-like moments (a few steps of Adam on N(0, 1) gradients, where ``(9 m + g) / 10``
lands on midpoints). Every stored value (param, m, v, v_max) counts; it is correctly
rounded when its bits equal the oracle's (NaN as NaN, either zero as zero)::

    python -m adamspec.harness.impl_accuracy [--coordinates N] [--json FILE]

The rows cover every catalog variant (as documented) and Algorithm 1 under every
``hyper_precision`` member. Dense float32 runs the compiled driver where numba is
installed, everything else the NumPy path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import ml_dtypes
import numpy as np

from adamspec.impl import adam
from adamspec.oracles import OracleState
from adamspec.oracles import step as oracle_step
from adamspec.oracles.metrics import ulp_distance
from adamspec.oracles.rounding import format_of_dtype
from adamspec.spec import Variant, entries, entry
from adamspec.spec.axes import HyperPrecision
from adamspec.spec.hyper import Hyper

DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
}
#: The state before the measured step (its bias corrections are those of step 5).
STEP = 4


def random_inputs(rng: np.random.Generator, n: int, dtype: Any) -> dict[str, np.ndarray]:
    """Adversarial magnitudes: 1e-30..1e30, exact zeros, subnormals, mixed signs."""
    info = np.finfo(dtype) if dtype is not ml_dtypes.bfloat16 else ml_dtypes.finfo(dtype)
    scale = 10.0 ** rng.uniform(-30, 30, n)
    g = rng.standard_normal(n) * scale
    g[rng.random(n) < 0.1] = 0.0
    tiny = rng.random(n) < 0.05
    g[tiny] = float(info.smallest_subnormal) * rng.integers(1, 4, int(tiny.sum()))
    theta = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)
    m = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 2, n)
    v = np.abs(rng.standard_normal(n)) * 10.0 ** rng.uniform(-8, 4, n)
    with np.errstate(over="ignore"):  # 1e30 overflows float16 to inf: deliberately kept
        return {
            "theta": theta.astype(dtype),
            "g": g.astype(dtype),
            "m": m.astype(dtype),
            "v": v.astype(dtype),
            "v_max": (v * rng.uniform(0.5, 2, n)).astype(dtype),
        }


def training_inputs(rng: np.random.Generator, n: int, dtype: Any) -> dict[str, np.ndarray]:
    """Moments as training leaves them: ``STEP`` steps of ``m = 0.9 m + 0.1 g``, ``v =
    0.999 v + 0.001 g^2`` on N(0, 1) gradients, each rounded to ``dtype``."""
    m, v = np.zeros(n), np.zeros(n)

    def stored(x: np.ndarray) -> np.ndarray:
        return x.astype(dtype).astype(np.float64)

    for _ in range(STEP):
        g = stored(rng.standard_normal(n))
        m, v = stored(0.9 * m + 0.1 * g), stored(0.999 * v + 0.001 * g * g)
    return {
        "theta": rng.standard_normal(n).astype(dtype),
        "g": rng.standard_normal(n).astype(dtype),
        "m": m.astype(dtype),
        "v": v.astype(dtype),
        "v_max": (v * rng.uniform(0.5, 2, n)).astype(dtype),
    }


@dataclass(frozen=True)
class Mismatch:
    """One component's count of stored values, of those not the oracle's, and the
    largest ULP distance among them (-1: a special value differs)."""

    stored: int
    off: int
    max_ulp: int
    first: str  # the first mismatch, for a report: "ours ..., oracle ... at i"


def compare(
    variant: Variant,
    hyper: Hyper,
    x: dict[str, np.ndarray],
    dtype: str,
    *,
    step: int = STEP,
    backend: str = "numpy",
    use_ema: bool = False,
) -> dict[str, Mismatch]:
    """One step of ours on ``backend`` and of the oracle from the stored state ``x``."""
    dt = DTYPES[dtype]
    b1, b2 = float(hyper.beta1) ** step, float(hyper.beta2) ** step
    state = adam.init(x["theta"], variant, ema=use_ema)
    state = state._replace(
        step=step,
        m=(x["m"],),
        v=(x["v"],),
        v_max=(x["v_max"],) if state.v_max is not None else None,
        ema=(x["theta"].copy(),) if state.ema is not None else None,
        beta1_power=float(dt(b1)),
        beta2_power=float(dt(b2)),
    )
    params, new = adam.step(x["theta"], x["g"], state, hyper, variant, backend=backend)
    reference = oracle_step(
        variant,
        hyper,
        x["theta"],
        x["g"],
        OracleState(
            m=x["m"], v=x["v"], v_max=x["v_max"] if state.v_max is not None else None,
            ema=state.ema[0] if state.ema is not None else None, step=step,
            beta1_power=dt(b1), beta2_power=dt(b2),
        ),
    )  # fmt: skip
    ours = {"param": params, "m": new.m[0], "v": new.v[0]}
    if new.v_max is not None:
        ours["v_max"] = new.v_max[0]
    if new.ema is not None:
        ours["ema"] = new.ema[0]
    fmt = format_of_dtype(dt)
    out = {}
    for name, got in ours.items():
        want = reference.value(name)
        both_nan = np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))
        same = (
            got.view(np.uint8).reshape(got.size, -1) == want.view(np.uint8).reshape(want.size, -1)
        ).all(1)
        same |= both_nan | ((got == 0) & (want == 0))
        bad = np.flatnonzero(~same)
        distance = ulp_distance(got[bad], want[bad], fmt) if bad.size else np.zeros(0, int)
        worst = -1 if (distance < 0).any() else int(distance.max(initial=0))
        first = f"ours {got[bad[0]]!r}, oracle {want[bad[0]]!r} at {bad[0]}" if bad.size else ""
        out[name] = Mismatch(int(got.size), int(bad.size), worst, first)
    return out


@dataclass(frozen=True)
class Row:
    """Stored values of one (variant, mode, dtype) and how many were correctly rounded."""

    variant: str
    mode: str
    dtype: str
    stored: int
    correct: int
    max_ulp: int
    seconds: float


def configurations() -> list[tuple[str, Variant]]:
    """Every catalog variant as documented, then Algorithm 1 under every hyperparameter
    mode (``hyper_precision`` member)."""
    rows = [(e.name, e.variant) for e in entries()]
    base = entry("paper.algorithm1").variant
    rows += [
        (f"paper.algorithm1[hyper_precision={mode.value}]", base.replace(hyper_precision=mode))
        for mode in HyperPrecision
    ]
    return rows


def census(name: str, variant: Variant, dtype: str, coordinates: int, seed: int = 0) -> Row:
    """One row: ``coordinates`` adversarial and as many training-like coordinates."""
    have_numba = importlib.util.find_spec("numba") is not None
    backend = "numba" if dtype == "float32" and have_numba else "numpy"
    catalog = name.split("[hyper_precision=")[0]
    hyper = entry(catalog).hyper(
        **({"weight_decay": "0.01"} if "weight_decay" in entry(catalog).defaults else {})
    )
    started = time.perf_counter()
    stored = correct = 0
    worst = 0
    rng = np.random.default_rng(seed)
    for make in (random_inputs, training_inputs):
        x = make(rng, coordinates, DTYPES[dtype])
        for m in compare(variant, hyper, x, dtype, backend=backend).values():
            stored += m.stored
            correct += m.stored - m.off
            worst = -1 if -1 in (worst, m.max_ulp) else max(worst, m.max_ulp)
    return Row(
        name,
        variant.hyper_precision.value,
        dtype,
        stored,
        correct,
        worst,
        time.perf_counter() - started,
    )


def markdown(rows: list[Row]) -> str:
    """The README table: one line per variant and mode, one column per dtype."""
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    lines = [
        "| variant | hyperparameters | " + " | ".join(dtypes) + " |",
        "| --- | --- | " + " | ".join("---" for _ in dtypes) + " |",
    ]
    by_key: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault((r.variant, r.mode), {})[r.dtype] = r
    for (variant, mode), cells in by_key.items():
        shown = [
            f"{cells[d].correct:,} of {cells[d].stored:,}" if d in cells else "" for d in dtypes
        ]
        lines.append(f"| `{variant}` | {mode} | " + " | ".join(shown) + " |")
    total = sum(r.stored for r in rows)
    correct = sum(r.correct for r in rows)
    lines.append(
        f"| **all** | | {correct:,} of {total:,} correctly rounded |" + " |" * (len(dtypes) - 1)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adamspec.harness.impl_accuracy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--coordinates", type=int, default=2000, help="per kind of state (default 2000)"
    )
    parser.add_argument(
        "--dtype", action="append", choices=list(DTYPES), help="repeatable (default: all)"
    )
    parser.add_argument(
        "--variant", action="append", help="a row's name (repeatable; default: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.coordinates < 1:
        parser.error(f"--coordinates {args.coordinates} must be at least 1")
    chosen = [c for c in configurations() if not args.variant or c[0] in args.variant]
    if not chosen:
        parser.error(
            f"--variant {args.variant} matches no row; see the catalog (`adamspec variants`)"
        )
    rows = []
    for name, variant in chosen:
        for dtype in args.dtype or list(DTYPES):
            row = census(name, variant, dtype, args.coordinates, args.seed)
            rows.append(row)
            print(
                f"{name:<55} {row.mode:<24} {dtype:<9} {row.correct:>9,} of {row.stored:>9,} "
                f"(max {row.max_ulp} ULP, {row.seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(markdown(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0 if all(r.correct == r.stored for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
