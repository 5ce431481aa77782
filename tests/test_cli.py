"""The ``adamspec`` CLI: variants, oracle cases, and one-line errors with exit code 2."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from adamspec import spec
from adamspec.harness.cli import main

BASE_CASE = {
    "variant": "paper.algorithm1",
    "dtype": "float32",
    "hyper": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "params": [1.0, "0x1.99999ap-4", -2.5],
    "grads": [[0.5, -2, 1e-30], [0.25, "0x1p-149", 3]],
    "state": {"m": [0, 0, 0], "v": [0, 0, 0], "v_max": [0, 0, 0], "step": 0},
}


def run_cli(args, stdin: str | None = None, capsys=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_variants_lists_every_catalog_entry(capsys):
    code, out, _ = run_cli(["variants"], capsys=capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(spec.CATALOG)


def test_variants_json_has_name_family_axes_source(capsys):
    code, out, _ = run_cli(["variants", "--json"], capsys=capsys)
    rows = json.loads(out)
    assert code == 0 and len(rows) == len(spec.CATALOG)
    for row in rows:
        assert {"name", "family", "axes", "source"} <= set(row)
        assert spec.Variant.from_axes(row["axes"]) == spec.entry(row["name"]).variant
    by_name = {r["name"]: r for r in rows}
    assert by_name["keras.Adam"]["axes"]["eps_placement"] == "eps_hat"
    assert by_name["torch.RAdam"]["family"] == "radam"


def test_oracle_answers_a_case_from_stdin(capsys, monkeypatch):
    code, out, err = run_cli(
        ["oracle", "-", "--digits", "25"], json.dumps(BASE_CASE), capsys, monkeypatch
    )
    assert code == 0, err
    answer = json.loads(out)
    assert [s["step"] for s in answer["steps"]] == [1, 2]
    first = answer["steps"][0]
    assert set(first) >= {"step", "param", "m", "v", "v_max"}
    # step 1, coordinate 0: 1 - lr * g / (|g| + eps), exactly (see test_oracle for the proof)
    expected = 1 - Fraction(1, 1000) * Fraction(1, 2) / (Fraction(1, 2) + Fraction(1, 10**8))
    exact = first["param"]["exact"][0]
    assert len(exact.replace("-", "").replace(".", "").lstrip("0")) <= 25  # trailing zeros dropped
    assert abs(Fraction(exact) - expected) < Fraction(1, 10**24)
    rounded = float.fromhex(first["param"]["rounded"][0])
    assert np.float32(rounded) == np.float32(float(expected))
    assert first["m"]["exact"][0] == "0.05"  # ideal hyperparameters: 0.1 * 0.5 exactly


def test_oracle_reads_a_case_file(tmp_path, capsys):
    path = tmp_path / "case.json"
    path.write_text(json.dumps({**BASE_CASE, "hyper_mode": "ideal"}))
    code, out, _ = run_cli(["oracle", str(path)], capsys=capsys)
    assert code == 0 and json.loads(out)["hyper_mode"] == "ideal"


def test_missing_state_and_hyper_take_documented_defaults(capsys, monkeypatch):
    case = {k: v for k, v in BASE_CASE.items() if k not in ("state", "hyper")}
    case["variant"] = "keras.Adam"
    code, out, _ = run_cli(["oracle", "-"], json.dumps(case), capsys, monkeypatch)
    answer = json.loads(out)
    assert code == 0
    # keras holds hyperparameters in the variable dtype: eps is float32(1e-7)
    assert answer["held_in"] == "float32"
    assert float.fromhex(answer["hyper"]["eps"]) == float(np.float32(1e-7))


BAD_CASES = [
    pytest.param({"beta1": 1.5}, "hyper", "beta1=1.5", id="beta1-out-of-range"),
    pytest.param({"lr": -1}, "hyper", "lr=-1", id="negative-lr"),
    pytest.param({"eps": "nan"}, "hyper", "eps=", id="nan-eps"),
    pytest.param({"betas": 0.9}, "hyper", "case.hyper.betas", id="unknown-hyper"),
    pytest.param("paper.algo", "variant", "paper.algorithm1", id="unknown-variant"),
    pytest.param("float8", "dtype", "allowed: float64, float32, float16, bfloat16", id="bad-dtype"),
    pytest.param([1.0, "0x1.0000001p0", 2], "params", "case.params[1]", id="inexact-hex"),
    pytest.param([1.0, True, 2], "params", "case.params[1]=True", id="bool-param"),
    pytest.param([[1, 2, 3], [1, 2]], "grads", "case.grads[1]", id="grad-shape"),
    pytest.param([], "grads", "case.grads", id="no-grads"),
    pytest.param({"step": -1}, "state", "case.state.step=-1", id="negative-step"),
    pytest.param({"mm": [0, 0, 0]}, "state", "case.state.mm", id="unknown-state"),
    pytest.param("maybe", "hyper_mode", "case.hyper_mode='maybe'", id="bad-hyper-mode"),
]


@pytest.mark.parametrize(("value", "field", "message"), BAD_CASES)
def test_malformed_cases_exit_2_with_one_line_naming_the_field(
    value, field, message, capsys, monkeypatch
):
    case = {**BASE_CASE, field: value}
    code, out, err = run_cli(["oracle", "-"], json.dumps(case), capsys, monkeypatch)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err


def test_invalid_json_and_missing_file_exit_2(capsys, monkeypatch):
    code, _, err = run_cli(["oracle", "-"], "{not json", capsys, monkeypatch)
    assert code == 2 and "not valid JSON" in err
    code, _, err = run_cli(["oracle", "/nonexistent/case.json"], capsys=capsys)
    assert code == 2 and "/nonexistent/case.json" in err


def test_bad_digits_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["oracle", "-", "--digits", "0"])
    assert exit_info.value.code == 2
    assert "--digits" in capsys.readouterr().err


def test_run_list_names_every_registered_implementation(capsys):
    from adamspec.impl.adapters import REGISTRY, load_registry

    load_registry()
    code, out, _ = run_cli(["run", "--list"], capsys=capsys)
    assert code == 0
    assert set(out.split()) >= {n for n in REGISTRY if not n.startswith("toy.")}


@pytest.mark.skipif(
    shutil.which("adamspec") is None
    and not __import__("pathlib").Path(sys.prefix, "bin", "adamspec").exists(),
    reason="console script adamspec not installed",
)
def test_console_script_is_installed():
    exe = shutil.which("adamspec") or str(__import__("pathlib").Path(sys.prefix, "bin", "adamspec"))
    result = subprocess.run(
        [exe, "variants", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert {r["name"] for r in json.loads(result.stdout)} == set(spec.CATALOG)


def test_bench_impl_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, _ = run_cli(
        ["bench", "impl", "--size", "4096", "--repeats", "1", "--json", str(out)], capsys=capsys
    )
    assert code == 0 and "ratio" in stdout
    report = json.loads(out.read_text())
    assert report["size"] == 4096 and report["dtype"] == "float32"
    names = [r["name"] for r in report["results"]]
    assert names[0] == "adamspec (auto)" and report["results"][0]["ratio_to_ours"] == 1.0
    assert any(name.startswith("torch.optim.Adam(fused=True)") for name in names)
    for r in report["results"]:
        assert {"name", "median_s", "params_per_s", "ratio_to_ours"} <= set(r)
        if r["median_s"] is not None:
            assert r["params_per_s"] == pytest.approx(4096 / r["median_s"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0"], "--size=0 must be a positive integer"),
        (["--size", "many"], "--size='many' is not an integer"),
        (["--dtype", "int8"], "invalid choice: 'int8'"),
    ],
    ids=["size=0", "size=many", "dtype=int8"],
)
def test_bench_rejects_bad_arguments_with_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "impl", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_oracle_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "oracle.json"
    code, stdout, _ = run_cli(["bench", "oracle", "--size", "4096", "--check-size", "400",
                               "--repeats", "1", "--json", str(out)], capsys=capsys)  # fmt: skip
    assert code == 0 and "fallback rate" in stdout
    report = json.loads(out.read_text())
    keys = {"mpmath_steps_per_s", "fast_steps_per_s", "speedup", "fallback_rate", "mismatches",
            "checked"}  # fmt: skip
    assert keys <= set(report)
    assert report["mismatches"] == 0 and report["checked"] > 0


@pytest.mark.parametrize("command", ["run", "check", "gate"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0"], "--size=0 is out of range: allowed 1..1073741824"),
        (["--steps", "-3"], "--steps=-3 is out of range: allowed 1..1073741824"),
        (["--steps", "2.5"], "--steps='2.5' is not an integer (1..1073741824)"),
        (["--size", str(2**31)], f"--size={2**31} is out of range: allowed 1..1073741824"),
    ],
    ids=["size=0", "steps<0", "steps=2.5", "size=2^31"],
)
def test_size_and_steps_are_checked_before_any_work(command, args, message, capsys, tmp_path):
    target = {"run": [], "check": ["tests/kernels/user_kernels.py:adam"], "gate": ["gate.toml"]}
    with pytest.raises(SystemExit) as exit_info:
        main([command, *target[command], *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["run", "check"])
def test_an_unknown_suite_is_one_line_listing_the_suites(command, capsys, tmp_path):
    target = ["tests/kernels/user_kernels.py:adam"] if command == "check" else []
    with pytest.raises(SystemExit) as exit_info:
        main([command, *target, "--suite", "huge", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--suite='huge' is unknown; allowed: quick, default, discriminating, long, scale" in err
