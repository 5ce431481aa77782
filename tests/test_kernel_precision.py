"""`adamspec check` of mixed-precision kernels (issue 17): declarations, flags, role checks.

The kernels (tests/kernels/mixed_precision.py) are NumPy kernels written from the paper's
Algorithm 1 as kernel authors write them, each declaring its precision: a correct one per
preset, two master-weight bugs, and two that break the contract (m in the wrong dtype, no
master returned). They run in worker processes on the quick suite, as `adamspec check` runs
them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adamspec.harness import cli
from adamspec.harness.check import check
from adamspec.impl.adapters.kernel_protocol import kernel_precision
from adamspec.spec.formats import FORMATS
from adamspec.spec.precision import PrecisionError, precision_named

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "tests" / "kernels" / "mixed_precision.py"
MASTER_WEIGHTS = "master weights"  # harness.classify's category for the two master bugs


def _check(name: str, out: Path, **kw):
    return check(f"{KERNELS}:{name}", "paper.algorithm1", suite="quick", out=out,
                 progress=lambda line: None, **kw)  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adamspec.harness.cli", "check", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)  # fmt: skip


def _ran(result) -> list[dict]:
    return [r for r in result.tables.summary if r["verdict"] != "skipped"]


# ----------------------------------------------------------------------- correct kernels


@pytest.mark.parametrize(
    ("kernel", "kwargs", "precision"),
    [
        ("bf16_fp32state", {}, "bf16-fp32state"),
        ("bf16_fp32master", {"dtype": "bfloat16"}, "bf16-fp32master"),  # a dict declaration
        ("fp16_fp32master", {}, "fp16-fp32master"),
        ("bf16_fp32master_all", {}, "bf16-fp32master"),  # the multi-tensor form
        ("Bf16MasterAdam", {}, "bf16-fp32master"),  # the stateful-object form
        ("undeclared_bf16_fp32state", {"precision": "bf16-fp32state"}, "bf16-fp32state"),
        ("undeclared_bf16_fp32state", {"dtype": "bfloat16", "state_dtype": "float32"},
         "bf16-fp32state"),
    ],
    ids=["bf16-fp32state", "bf16-fp32master-dict", "fp16-fp32master", "multi-tensor-form",
         "object-form",
         "flag-precision", "flag-state-dtype"],
)  # fmt: skip
def test_a_correct_kernel_of_each_preset_conforms(tmp_path, kernel, kwargs, precision):
    result = _check(kernel, tmp_path, **kwargs)
    assert result.conforms, [(r["case"], r["verdict"], r["detail"]) for r in result.tables.summary]
    ran = _ran(result)
    assert len(ran) >= 8 and {r["precision"] for r in ran} == {precision}
    assert {r["dtype"] for r in ran} == {precision_named(precision).param}
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["precision"] == precision_named(precision).roles_text()
    if "master" in precision:  # the master was measured, not only the param
        assert "master update" in result.power


def test_without_its_precision_a_mixed_kernel_breaks_the_one_dtype_contract(tmp_path):
    """The issue's first symptom, still what an undeclared kernel gets: one dtype for all."""
    result = _check("undeclared_bf16_fp32state", tmp_path, dtype="bfloat16")
    assert not result.conforms
    typical = next(r for r in result.tables.summary if r["case"] == "typical")
    assert typical["verdict"] == "error"
    needle = "state.m[0] has dtype float32, expected bfloat16 (the param's dtype)"
    assert needle in typical["detail"]


# ----------------------------------------------------------------------- master-weight bugs


@pytest.fixture(scope="module")
def master_rounded(tmp_path_factory):
    out = tmp_path_factory.mktemp("master_rounded")
    return _check("master_rounded_to_bf16", out), out


@pytest.mark.parametrize("kernel", ["master_rounded_to_bf16", "no_master_copy"])
def test_a_master_weight_bug_does_not_conform_and_is_named(tmp_path, master_rounded, kernel):
    result = master_rounded[0] if kernel == "master_rounded_to_bf16" else _check(kernel, tmp_path)
    assert not result.conforms
    ran = _ran(result)
    assert ran and all(r["verdict"] == "discrepancy" for r in ran), [
        (r["case"], r["verdict"], r["detail"][:200]) for r in ran
    ]
    assert {r["worst_component"] for r in ran} == {"master"}
    assert {r["category"] for r in ran} == {MASTER_WEIGHTS}


def test_the_counterexample_script_builds_the_mixed_state_and_reproduces(master_rounded):
    result, out = master_rounded
    paths = sorted((out / "counterexamples").glob("*.py"))
    assert paths, result.tables.counterexamples
    script = paths[0].read_text()
    # each role in its own dtype: m and v float32, the master float32, the param bfloat16
    assert "DTYPE = ml_dtypes.bfloat16" in script
    assert ", np.float32)]," in script.split("m=[", 1)[1].splitlines()[0]
    assert "master=[value(" in script
    done = subprocess.run([sys.executable, str(paths[0])], capture_output=True, text=True,
                          cwd=out, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = {line.split(":", 1)[0]: line for line in done.stdout.splitlines()}
    assert set(shown) == {"param", "m", "v", "master"}, done.stdout
    assert "DIFFERS from adamspec oracle" in shown["master"], done.stdout


# ----------------------------------------------------------------------- contract errors


@pytest.mark.parametrize(
    ("kernel", "needle"),
    [
        ("m_in_bfloat16",
         "state.m[0] has dtype bfloat16, expected float32 (the state dtype of bf16-fp32master)"),
        ("forgets_master",
         "state.master[0] is None (the master dtype of bf16-fp32master is float32)"),
    ],
)  # fmt: skip
def test_an_array_off_its_role_is_an_error_row_naming_it(tmp_path, kernel, needle):
    result = _check(kernel, tmp_path)
    assert not result.conforms
    ran = _ran(result)
    assert ran and all(r["verdict"] == "error" for r in ran)
    assert all(needle in r["detail"] for r in ran), ran[0]["detail"]


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bf16_fp32state", "--precision", "bf16-fp32mastr"],
         "precision='bf16-fp32mastr' is unknown; allowed: a dtype (float64, float32, float16, "
         "bfloat16), a preset (bf16-fp32state, bf16-fp32master, fp16-fp32master)"),
        (["bf16_fp32state", "--precision", "param=bfloat16,stat=float32"],
         "precision role 'stat' in 'param=bfloat16,stat=float32' is unknown; allowed roles: "
         "param, grad, state, master"),
        (["bf16_fp32state", "--state-dtype", "float3"],
         "argument --state-dtype: invalid choice: 'float3'"),
        (["undeclared_bf16_fp32state", "--master-dtype", "bfloat16"],
         "master='bfloat16' is narrower than param='float32'; a master copy must hold every "
         "param value: allowed: float64, float32"),
        (["bf16_fp32state", "--dtype", "float32"],
         "--dtype float32 makes param float32, but the kernel's precision = 'bf16-fp32state' "
         "makes it bfloat16"),
        (["bf16_fp32master", "--dtype", "bfloat16", "--state-dtype", "float16"],
         "--state-dtype float16 makes state float16, but the kernel's precision = "
         "{'state': 'float32', 'master': 'float32'} makes it float32"),
        (["declares_an_unknown_preset"],
         "the kernel's precision = 'bf16-fp32mastr': precision='bf16-fp32mastr' is unknown"),
        (["declares_a_param_role"],
         "role 'param' is not one a kernel declares; allowed: grad, state, master"),
    ],
    ids=["unknown-preset", "unknown-role", "unknown-dtype", "narrow-master", "flag-vs-preset",
         "flag-vs-dict", "declared-unknown-preset", "declared-param-role"],
)  # fmt: skip
def test_a_bad_precision_is_one_line_exit_2_before_anything_runs(tmp_path, args, needle):
    kernel, *flags = args
    done = _cli(f"{KERNELS}:{kernel}", *flags, "--suite", "quick", "--out", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "summary.csv").exists()  # nothing ran, so nothing half-written


# ----------------------------------------------------------------------- the combination


@pytest.mark.parametrize(
    ("declared", "kwargs", "expected"),
    [
        (None, {}, "float32"),
        (None, {"dtype": "bfloat16"}, "bfloat16"),
        ("bf16-fp32master", {}, "bf16-fp32master"),
        ("bf16-fp32master", {"dtype": "bfloat16", "state_dtype": "float32"}, "bf16-fp32master"),
        ({"state": "float32"}, {"dtype": "bfloat16"}, "bf16-fp32state"),
        ({"state": "float32", "master": "float32"}, {"precision": "fp16-fp32master"},
         "fp16-fp32master"),
        ({"master": "none"}, {"dtype": "float16"}, "float16"),
        (None, {"precision": "bf16-fp32master", "master_dtype": "float32"}, "bf16-fp32master"),
        (None, {"dtype": "bfloat16", "grad_dtype": "float32", "state_dtype": "float32"},
         "param=bfloat16,grad=float32,state=float32,master=none"),
    ],
)  # fmt: skip
def test_declaration_and_flags_combine_role_by_role(declared, kwargs, expected):
    assert kernel_precision(declared, **kwargs).name == expected


@pytest.mark.parametrize(
    ("declared", "kwargs", "needle"),
    [
        ("bf16-fp32master", {"master_dtype": "none"},
         "--master-dtype none makes master none, but the kernel's precision = "
         "'bf16-fp32master' makes it float32"),
        (None, {"precision": "bf16-fp32master", "grad_dtype": "float32"},
         "--grad-dtype float32 makes grad float32, but --precision bf16-fp32master makes it "
         "bfloat16"),
        ({"state": "float3"}, {}, "state='float3' is not a dtype; allowed: float64, float32"),
        (["float32"], {}, "the kernel's precision = \"['float32']\""),
    ],
)  # fmt: skip
def test_a_role_said_twice_differently_names_both(declared, kwargs, needle):
    with pytest.raises(PrecisionError) as raised:
        kernel_precision(repr(declared) if isinstance(declared, list) else declared, **kwargs)
    assert needle in str(raised.value)


def test_the_role_flags_offer_every_dtype_the_spec_knows():
    assert set(cli._DTYPES) == set(FORMATS)


def test_the_readme_bf16_kernel_conforms_to_torch_adam(tmp_path):
    """README, "Check your own kernel": examples/bf16_adam.py on the default suite."""
    result = check(f"{ROOT / 'examples' / 'bf16_adam.py'}:bf16_adam", "torch.Adam",
                   out=tmp_path, progress=lambda line: None)  # fmt: skip
    assert result.conforms, [(r["case"], r["verdict"], r["detail"]) for r in result.tables.summary]
    ran = _ran(result)
    assert len(ran) == 16 and {r["precision"] for r in ran} == {"bf16-fp32state"}
    assert {r["dtype"] for r in ran} == {"bfloat16"}
