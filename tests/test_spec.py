"""The spec package against its documentation and the sources it cites.

Checks that ``spec/ADAM.md`` documents exactly the catalog and every axis value,
that the catalog's names, citations and defaults are well formed and agree with
the frameworks' documented defaults, that hyperparameter and variant validation
reject bad input with useful messages, and that quotes are verbatim in the
installed framework sources where those are available.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from adamspec import spec
from adamspec.spec import (
    ALL_AXES,
    CATALOG,
    AmsGrad,
    BiasCorrection,
    EpsPlacement,
    Family,
    HyperparameterError,
    Variant,
    VariantError,
    make_hyper,
)

ADAM_MD = Path(spec.__file__).resolve().parent / "ADAM.md"
NAME_RE = re.compile(r"^[a-z_0-9]+(\.[A-Za-z_0-9]+)+(\[[^\]]+\])?$")

REQUIRED_NAMES = (
    "paper.algorithm1",
    "paper.eps_hat",
    "reddi.amsgrad",
    "torch.Adam",
    "torch.Adam[amsgrad]",
    "torch.AdamW",
    "torch.SparseAdam",
    "torch.RAdam",
    "keras.Adam",
    "keras.Adam[amsgrad]",
    "keras.AdamW",
    "tf_keras.Adam",
    "tf_keras.Adam[adaptive_epsilon]",
    "tf.v1.AdamOptimizer",
    "tf.raw.ApplyAdam",
    "tf.raw.ApplyAdamWithAmsgrad",
    "optax.adam",
    "optax.adamw",
    "optax.amsgrad",
    "tfjs.adam",
    "onnx.Adam",
    "mlx.Adam",
    "mlx.Adam[bias_correction]",
    "mlx.AdamW",
    "paddle.Adam",
    "paddle.Adam[amsgrad]",
    "paddle.Adam[lazy_mode]",
    "paddle.AdamW",
)


# ---------------------------------------------------------------------------
# ADAM.md
# ---------------------------------------------------------------------------


def _doc() -> str:
    return ADAM_MD.read_text(encoding="utf-8")


def _section(text: str, heading_re: str) -> str:
    """The body under the first Markdown heading matching ``heading_re``, up to
    the next heading of the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#+)\s+(.*)$", line)
        if m and re.search(heading_re, m.group(2)):
            level = len(m.group(1))
            body = []
            for nxt in lines[i + 1 :]:
                h = re.match(r"^(#+)\s", nxt)
                if h and len(h.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body)
    raise AssertionError(f"ADAM.md has no heading matching {heading_re!r}")


def _catalog_rows() -> list[list[str]]:
    """Cells of the catalog table's body rows (header and separator dropped)."""
    rows = []
    for line in _section(_doc(), r"Catalog").splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if re.fullmatch(r"`[^`]+`", cells[0]):
            rows.append(cells)
    return rows


def test_adam_md_catalog_table_lists_exactly_the_catalog():
    names = [row[0].strip("`") for row in _catalog_rows()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"ADAM.md catalog table repeats {duplicates}"
    documented, actual = set(names), set(CATALOG)
    assert documented == actual, (
        f"ADAM.md catalog table and spec.CATALOG differ: only in ADAM.md "
        f"{sorted(documented - actual)}, only in the catalog {sorted(actual - documented)}"
    )


def _axes_differing_from_algorithm_1(variant: Variant) -> set[str]:
    base = Variant().axes()
    return {
        f"{k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in variant.axes().items()
        if base[k] != v
    }


@pytest.mark.parametrize("row", _catalog_rows(), ids=lambda row: row[0].strip("`"))
def test_adam_md_catalog_row_matches_entry(row):
    name, axes_cell, defaults_cell = row[0].strip("`"), row[1], row[2]
    entry = CATALOG.get(name)
    if entry is None:
        pytest.skip(f"{name} is not in the catalog (reported by the table test)")
    listed = set(re.findall(r"`([a-z_0-9]+=[a-z_0-9]+)`", axes_cell))
    assert listed == _axes_differing_from_algorithm_1(entry.variant), (
        f"{name}: ADAM.md lists axes {sorted(listed)}; the catalog variant differs from "
        f"Algorithm 1 in {sorted(_axes_differing_from_algorithm_1(entry.variant))}"
    )
    documented = dict(
        pair.split("=", 1) for pair in re.findall(r"[a-z_0-9]+=\S+?(?=,|$)", defaults_cell)
    )
    assert documented == dict(entry.defaults), (
        f"{name}: ADAM.md defaults {documented} != catalog defaults {dict(entry.defaults)}"
    )


@pytest.mark.parametrize("axis", ALL_AXES, ids=lambda a: a.__name__)
def test_adam_md_documents_every_axis_value(axis):
    body = _section(_doc(), rf"`{axis.__name__}`")
    missing = [m.value for m in axis if f"`{m.value}`" not in body]
    assert not missing, f"ADAM.md section on {axis.__name__} does not document {missing}"


def test_adam_md_documents_maximize():
    body = _section(_doc(), r"`maximize`")
    assert "`true`" in body and "`false`" in body


def test_adam_md_radam_first_rectified_step_matches_arithmetic():
    beta2 = Fraction(999, 1000)
    rho_inf = 2 / (1 - beta2) - 1
    first = next(t for t in range(1, 100) if rho_inf - 2 * t * beta2**t / (1 - beta2**t) > 5)
    assert first == 6
    body = _section(_doc(), r"RAdam")
    assert re.search(rf"first\s+rectified\s+step\s+is\s+\$t = {first}\$", body)
    assert rf"\rho_\infty = {int(rho_inf)}" in body


def test_adam_md_eps_hat_factor_matches_arithmetic():
    factor = 1 / math.sqrt(1 - 0.999)
    body = _section(_doc(), r"[Ee]psilon hat")
    assert r"\hat\epsilon_t = \epsilon\sqrt{1-\beta_2^t}" in body
    assert f"{factor:.2f}" in body  # 31.62 at t = 1


# ---------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------


def test_required_catalog_names_exist():
    missing = [n for n in REQUIRED_NAMES if n not in CATALOG]
    assert not missing, f"catalog lacks {missing}"


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_entry_is_well_formed(name):
    entry = CATALOG[name]
    assert entry.name == name
    assert NAME_RE.match(name), f"{name!r} does not match {NAME_RE.pattern}"
    assert entry.citation.quote.strip(), f"{name}: empty quote"
    assert entry.citation.reference.strip(), f"{name}: empty reference"
    assert entry.citation.url.startswith("https://"), f"{name}: url {entry.citation.url!r}"
    assert "eps" in entry.defaults, f"{name}: no documented eps default"
    eps = entry.hyper().eps
    assert eps == Fraction(Decimal(entry.defaults["eps"])), f"{name}: eps parsed as {eps}"


# Documented eps defaults (research notes impls.md §0-§7): exact decimals.
EPS_BY_SOURCE = {
    "paper.": Fraction(1, 10**8),
    "torch.": Fraction(1, 10**8),
    "optax.": Fraction(1, 10**8),
    "tf.v1.": Fraction(1, 10**8),
    "keras.": Fraction(1, 10**7),
    "tf_keras.": Fraction(1, 10**7),
    "tfjs.": Fraction(1, 10**7),
    "onnx.": Fraction(1, 10**6),
    "mlx.": Fraction(1, 10**8),
    "paddle.": Fraction(1, 10**8),
}


def _eps_cases():
    for name in sorted(CATALOG):
        for prefix, eps in EPS_BY_SOURCE.items():
            if name.startswith(prefix):
                yield pytest.param(name, eps, id=f"{name}:eps={float(eps):g}")


@pytest.mark.parametrize(("name", "eps"), list(_eps_cases()))
def test_documented_eps_default(name, eps):
    assert CATALOG[name].hyper().eps == eps


def test_every_eps_source_has_entries():
    empty = [p for p in EPS_BY_SOURCE if not any(n.startswith(p) for n in CATALOG)]
    assert not empty, f"no catalog entry for {empty}"


@pytest.mark.parametrize(
    ("name", "weight_decay"),
    [
        pytest.param("torch.AdamW", Fraction(1, 100), id="torch.AdamW:wd=0.01"),
        pytest.param("keras.AdamW", Fraction(4, 1000), id="keras.AdamW:wd=0.004"),
        pytest.param("optax.adamw", Fraction(1, 10000), id="optax.adamw:wd=0.0001"),
        pytest.param("mlx.AdamW", Fraction(1, 100), id="mlx.AdamW:wd=0.01"),
        pytest.param("paddle.AdamW", Fraction(1, 100), id="paddle.AdamW:wd=0.01"),
    ],
)
def test_adamw_weight_decay_default(name, weight_decay):
    assert CATALOG[name].hyper().weight_decay == weight_decay


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_variant_axes_round_trip(name):
    variant = CATALOG[name].variant
    axes = json.loads(json.dumps(variant.axes()))
    assert Variant.from_axes(axes) == variant


# ---------------------------------------------------------------------------
# Hyperparameter validation
# ---------------------------------------------------------------------------

BAD_HYPER = [
    pytest.param({"lr": -0.001}, r"lr=-0\.001\b.*\[0, inf\)", id="lr=-0.001"),
    pytest.param({"beta1": 1.0}, r"beta1=1\.0\b.*\[0, 1\)", id="beta1=1.0"),
    pytest.param({"beta2": -0.1}, r"beta2=-0\.1\b.*\[0, 1\)", id="beta2=-0.1"),
    pytest.param({"eps": float("nan")}, r"eps=nan\b.*finite", id="eps=nan"),
    pytest.param({"lr": float("inf")}, r"lr=inf\b.*finite", id="lr=inf"),
    pytest.param({"beta1": True}, r"beta1=True\b.*not a number", id="beta1=True"),
    pytest.param({"beta1": [0.9]}, r"beta1=\[0\.9\].*expected int, float", id="beta1=[0.9]"),
    pytest.param({"eps": "abc"}, r"eps='abc'.*(decimal|hex)", id="eps='abc'"),
    pytest.param(
        {"betas": (0.9, 0.999)},
        r"unknown hyperparameter 'betas'.*allowed:.*\bbeta1\b.*\bbeta2\b",
        id="betas=(0.9, 0.999)",
    ),
    pytest.param(
        {"clipnorm": 1.0, "clipvalue": 0.5},
        r"clipnorm and clipvalue.*at most one of clipnorm, clipvalue, global_clipnorm",
        id="clipnorm+clipvalue",
    ),
    pytest.param(
        {"ema_overwrite_frequency": 0},
        r"ema_overwrite_frequency=0\b.*positive integer",
        id="ema_overwrite_frequency=0",
    ),
    pytest.param(
        {"lr": [0.001, -0.5]},
        r"lr\[1\]=-0\.5\b.*\[0, inf\)",
        id="lr=[0.001, -0.5]",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_HYPER)
def test_bad_hyperparameter_is_rejected_with_value_and_range(values, message):
    with pytest.raises(HyperparameterError, match=message):
        make_hyper(**values)


def test_valid_schedule_is_accepted():
    hyper = make_hyper(lr=[0.01, "0.001"])
    assert [hyper.lr_at(t) for t in (1, 2, 3)] == [Fraction(1, 100)] + [Fraction(1, 1000)] * 2


def test_floats_are_read_as_their_shortest_decimal():
    hyper = make_hyper(beta1=0.9, eps=1e-8)
    assert hyper.beta1 == Fraction(9, 10)
    assert hyper.beta1 != Fraction(0.9)  # not the binary64 neighbour
    assert hyper.eps == Fraction(1, 10**8)


def test_hex_float_string_is_the_exact_binary_value():
    text = "0x1.99999ap-4"  # float32(0.1)
    beta1 = make_hyper(beta1=text).beta1
    assert beta1 == Fraction(float.fromhex(text))
    assert beta1 == Fraction(13421773, 2**27)
    assert beta1 != Fraction(1, 10)


def test_decimal_string_is_exact():
    assert make_hyper(beta2="0.999").beta2 == Fraction(999, 1000)


# ---------------------------------------------------------------------------
# Variant validation
# ---------------------------------------------------------------------------

_AXIS_FIELDS = [
    ("family", Family),
    ("eps_placement", EpsPlacement),
    ("bias_correction_m", BiasCorrection),
    ("bias_correction_v", BiasCorrection),
    ("amsgrad", AmsGrad),
    ("weight_decay", spec.WeightDecay),
    ("nesterov", spec.Nesterov),
    ("sparse", spec.SparseSemantics),
    ("duplicates", spec.DuplicateIndices),
    ("hyper_precision", spec.HyperPrecision),
]


@pytest.mark.parametrize(("field", "axis"), _AXIS_FIELDS, ids=[f for f, _ in _AXIS_FIELDS])
def test_unknown_axis_value_lists_allowed_values(field, axis):
    with pytest.raises(VariantError) as info:
        Variant(**{field: "bogus"})
    message = str(info.value)
    assert f"{field}='bogus'" in message
    missing = [m.value for m in axis if m.value not in message]
    assert not missing, f"message {message!r} does not list {missing}"


def test_unknown_axis_name_lists_allowed_axes():
    with pytest.raises(VariantError, match=r"unknown variant axis 'eps'.*eps_placement"):
        Variant.from_axes({"eps": "eps_hat"})


def test_maximize_must_be_bool():
    with pytest.raises(VariantError, match=r"maximize='yes'"):
        Variant(maximize="yes")


def test_max_raw_v_uncorrected_rejects_power_v_correction():
    with pytest.raises(VariantError, match=r"bias_correction_v='power'.*'none'"):
        Variant(amsgrad=AmsGrad.MAX_RAW_V_UNCORRECTED)
    ok = Variant(amsgrad=AmsGrad.MAX_RAW_V_UNCORRECTED, bias_correction_v=BiasCorrection.NONE)
    assert ok.amsgrad is AmsGrad.MAX_RAW_V_UNCORRECTED


def test_radam_rejects_algorithm_1_eps():
    with pytest.raises(VariantError, match=r"eps_placement='algorithm_1'.*'eps_hat'"):
        Variant(family=Family.RADAM)
    ok = Variant(family=Family.RADAM, eps_placement=EpsPlacement.EPS_HAT)
    assert ok.family is Family.RADAM


def test_axis_strings_are_coerced_to_enums():
    variant = Variant(eps_placement="eps_hat", amsgrad="max_raw_v_then_correct")
    assert variant.eps_placement is EpsPlacement.EPS_HAT
    assert variant == Variant(
        eps_placement=EpsPlacement.EPS_HAT, amsgrad=AmsGrad.MAX_RAW_V_THEN_CORRECT
    )


# ---------------------------------------------------------------------------
# How hyperparameters are held (spec/holding.py), read by the oracle and impl
# ---------------------------------------------------------------------------


def test_every_hyper_precision_member_has_its_holding_facts():
    """A member missing from the table would be a KeyError in the oracle and in impl."""
    from adamspec.spec import holding

    assert set(holding.HOLDING_FORMAT) == set(spec.HyperPrecision)
    # binary64-first complements and the interpolation form exist only for numbers that
    # then meet a tensor of the parameter dtype
    assert all(holding.HOLDING_FORMAT[m] == holding.PARAM_DTYPE for m in holding.VIA_FLOAT64)
    assert holding.DECAY_BY_COMPLEMENT <= holding.VIA_FLOAT64


@pytest.mark.parametrize(
    ("name", "dtype", "held_in"),
    [
        ("paper.algorithm1", "float16", None),
        ("torch.Adam", "bfloat16", "float64"),
        ("onnx.Adam", "float16", "float32"),
        ("tf.v1.AdamOptimizer", "float16", "float16"),
        ("keras.Adam", "bfloat16", "bfloat16"),
        ("optax.adam", "float32", "float32"),
    ],
)
def test_holding_format_per_documented_variant(name, dtype, held_in):
    from adamspec.spec.formats import format_named
    from adamspec.spec.holding import holding_format

    got = holding_format(spec.entry(name).variant, format_named(dtype))
    assert (got.name if got is not None else None) == held_in


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_oracle_and_impl_hold_as_the_spec_says(dtype):
    """Both sides read spec/holding.py and hold the same exact values: the moment
    constants included, and ``ideal`` as the exact decimals (9/10, not binary64's 0.9)."""
    from fractions import Fraction

    from adamspec.impl._constants import moment_constants
    from adamspec.oracles.hyperparams import resolve
    from adamspec.spec.formats import format_named
    from adamspec.spec.holding import holding_format

    fmt = format_named(dtype)
    for e in spec.entries():
        want = resolve(e.hyper(), e.variant, fmt)
        assert want.held_in == holding_format(e.variant, fmt), e.name
        b1, b2, d1, d2, k1, k2 = moment_constants(e.variant, e.hyper(), fmt)
        expected = (want.beta1, want.beta2, want.moment_beta1, want.moment_beta2,
                    want.one_minus_beta1, want.one_minus_beta2)  # fmt: skip
        got = (b1, b2, d1, d2, k1, k2)
        assert all(Fraction(int(x.numerator), int(x.denominator)) == y
                   for x, y in zip(expected, got, strict=True)), e.name  # fmt: skip
        if e.variant.hyper_precision.value == "ideal":
            assert b1 == Fraction(9, 10) and b2 == Fraction(999, 1000), e.name


# ---------------------------------------------------------------------------
# Quotes against the installed framework sources (skipped where not installed)
# ---------------------------------------------------------------------------

# entry name -> (top-level package, file inside it); the quote's "; "-separated
# parts must each occur in that file, ignoring whitespace (line wrapping).
QUOTE_SOURCES = {
    "torch.Adam": ("torch", "optim/adam.py"),
    "torch.Adam[amsgrad]": ("torch", "optim/adam.py"),
    "torch.AdamW": ("torch", "optim/adamw.py"),
    "torch.SparseAdam": ("torch", "optim/sparse_adam.py"),
    "torch.RAdam": ("torch", "optim/radam.py"),
    "keras.Adam": ("keras", "src/optimizers/adam.py"),
    "keras.Adam[amsgrad]": ("keras", "src/optimizers/adam.py"),
    "keras.AdamW": ("keras", "src/optimizers/adamw.py"),
    "tf_keras.Adam": ("tf_keras", "src/optimizers/adam.py"),
    "tf_keras.Adam[adaptive_epsilon]": ("tf_keras", "src/optimizers/adam.py"),
    "tf.v1.AdamOptimizer": ("tensorflow", "python/training/adam.py"),
    "tf.raw.ApplyAdam": ("tensorflow", "python/ops/gen_training_ops.py"),
    "tf.raw.ApplyAdamWithAmsgrad": ("tensorflow", "python/ops/gen_training_ops.py"),
    "optax.adam": ("optax", "_src/alias.py"),
    "optax.adamw": ("optax", "_src/alias.py"),
    "optax.adam[nesterov]": ("optax", "_src/transform.py"),
    "optax.amsgrad": ("optax", "_src/transform.py"),
    "optax.amsgrad[bias_correction_nu=False]": ("optax", "_src/transform.py"),
    "mlx.Adam": ("mlx", "optimizers/optimizers.py"),
    "mlx.Adam[bias_correction]": ("mlx", "optimizers/optimizers.py"),
    "mlx.AdamW": ("mlx", "optimizers/optimizers.py"),
    "paddle.Adam[amsgrad]": ("paddle", "optimizer/adam.py"),
    "paddle.Adam[lazy_mode]": ("paddle", "optimizer/adam.py"),
}


def _installed_source(package: str, relpath: str) -> str:
    found = importlib.util.find_spec(package)  # locates without importing
    if found is None or not found.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    path = Path(next(iter(found.submodule_search_locations))) / relpath
    if not path.is_file():
        pytest.skip(f"{package} has no {relpath} in this version")
    return path.read_text(encoding="utf-8")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("name", sorted(QUOTE_SOURCES))
def test_quote_is_verbatim_in_installed_source(name):
    source = _squash(_installed_source(*QUOTE_SOURCES[name]))
    missing = [
        part for part in CATALOG[name].citation.quote.split("; ") if _squash(part) not in source
    ]
    assert not missing, f"{name}: not found in {'/'.join(QUOTE_SOURCES[name])}: {missing}"


@pytest.mark.parametrize("name", ["onnx.Adam", "onnx.Adam[norm_coefficient_post]"])
def test_onnx_quote_is_verbatim_in_operator_schema(name):
    defs = pytest.importorskip("onnx.defs")
    doc = _squash(defs.get_schema("Adam", 1, "ai.onnx.preview.training").doc)
    missing = [p for p in CATALOG[name].citation.quote.split("; ") if _squash(p) not in doc]
    assert not missing, f"{name}: not in the ONNX Adam-1 schema doc: {missing}"
