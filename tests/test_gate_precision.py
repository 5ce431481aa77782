"""Mixed precision in ``adamspec run`` and ``adamspec gate``: every row, report and JUnit case
names its precision; the gate runs ``precisions = [...]`` beside ``dtypes``; bad precisions
are one line and exit 2. On adamspec[torch.Adam] (which runs the presets with a float32
master) and a planted toy that keeps no master copy, over the quick suite."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from toy_mixed import register_mixed_toys

from adamspec.harness import cli
from adamspec.harness.gate import GateConfigError, load_config, run_gate
from adamspec.harness.problems import SUITES
from adamspec.reports import read_tables

OURS = "adamspec[torch.Adam]"
pytest_plugins = ("pytester",)
# pandas registers pyarrow's extension types once per process; an in-process pytester run
# forgets the modules it imported (see test_gate.py): write a parquet file at collection.
pd.DataFrame({"x": [1]}).to_parquet(io.BytesIO())

#: A planted mixed-precision kernel (tests/toy_mixed.py): it computes each update on the
#: 16-bit param and widens it into the master (it keeps no master copy of its own).
TOY = "toy-mixed.master_absent"
MIXED = "bf16-fp32master"
QUICK_CASES = [p.name for p in SUITES["quick"]]
#: The quick cases the toy runs (it has no weight decay and no sparse path).
TOY_CASES = [p.name for p in SUITES["quick"] if "weight_decay" not in p.hyper and not p.sparse]


register_mixed_toys()


def gate_config(tmp_path: Path, impls: Sequence[str], **gate_keys: Any) -> Path:
    keys = {"suite": "quick", "seed": 0, **gate_keys}
    lines = ["[gate]"] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    for name in impls:
        lines += ["[[implementation]]", f"name = {json.dumps(name)}"]
    path = tmp_path / "gate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def junit_names(path: Path, outcome: str | None = None) -> list[tuple[str, str]]:
    """(classname, name) of every test case (with ``outcome``: those with that child)."""
    cases = ET.parse(path).getroot().iter("testcase")
    return [
        (c.get("classname"), c.get("name"))
        for c in cases
        if outcome is None or c.find(outcome) is not None
    ]


# ------------------------------------------------------------------------ the gate


def test_a_gate_over_a_dtype_and_a_preset_names_the_precision_everywhere(tmp_path, capsys):
    """adamspec[torch.Adam] passes float32 and bf16-fp32master (its float32 master path);
    every JUnit case, summary row and report names the precision of its run."""
    path = gate_config(tmp_path, [OURS], dtypes=["float32"], precisions=[MIXED])
    out = tmp_path / "out"
    code = run_gate(path, out=out, progress=lambda line: None)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "adamspec gate: passed: 0 new" in printed
    expected = [(OURS, f"{c}[{p}]") for c in QUICK_CASES for p in ("float32", MIXED)]
    assert junit_names(out / "junit.xml") == expected
    assert not junit_names(out / "junit.xml", "failure")
    mixed = read_tables(out / f"quick-{MIXED}")
    summary = mixed["summary"]
    assert set(summary["dtype"]) == {"bfloat16"} and set(summary["precision"]) == {MIXED}
    assert set(summary["verdict"]) == {"pass"} and list(summary["case"]) == sorted(QUICK_CASES)
    # the master is measured as a component of its own, in float32 ULPs
    results = mixed["results"]
    assert set(results["precision"]) == {MIXED} and "master" in set(results["component"])
    assert set(mixed["fingerprints"]["precision"]) == {MIXED}
    assert set(read_tables(out / "quick-float32")["summary"]["precision"]) == {"float32"}
    report = (out / "report.md").read_text()
    assert "dtypes float32 · precisions bf16-fp32master (param bfloat16, grad bfloat16, " in report
    engine_md = (out / f"quick-{MIXED}" / "report.md").read_text()
    assert "**Precision:** bf16-fp32master (param bfloat16, grad bfloat16, state float32, " in (
        engine_md
    )
    assert "; ULPs of each component in its own dtype" in engine_md
    uniform_md = (out / "quick-float32" / "report.md").read_text()
    assert "**Precision:** float32\n" in uniform_md and "its own dtype" not in uniform_md
    meta = json.loads((out / f"quick-{MIXED}" / "meta.json").read_text())
    assert (meta["dtype"], meta["precision"]) == ("bfloat16", MIXED)


def test_a_toy_without_its_master_copy_fails_only_the_mixed_run(tmp_path, capsys):
    """Skipped in float32 (it runs only mixes), caught in bf16-fp32master: exit 1, the
    failures named case[bf16-fp32master], the verdict lines and gate.json naming it too."""
    path = gate_config(tmp_path, [TOY], precisions=["float32", MIXED])
    out = tmp_path / "out"
    code = run_gate(path, out=out, progress=lambda line: None)
    printed = capsys.readouterr().out
    assert code == 1, printed
    failed = junit_names(out / "junit.xml", "failure")
    assert failed and {name for _, name in failed} <= {f"{c}[{MIXED}]" for c in TOY_CASES}
    uniform = [n for _, n in junit_names(out / "junit.xml", "skipped") if n.endswith("[float32]")]
    assert uniform == [f"{c}[float32]" for c in QUICK_CASES]
    assert f"new discrepancy: {TOY} " in printed and f" [{MIXED}]: " in printed
    verdict = json.loads((out / "gate.json").read_text())
    assert {row["precision"] for row in verdict["new"]} == {MIXED}
    assert {row["dtype"] for row in verdict["new"]} == {"bfloat16"}
    summary = read_tables(out / f"quick-{MIXED}")["summary"]
    off = summary[summary["verdict"] == "discrepancy"]
    # the lead's classification names the bug (harness/classify.py, MASTER_WEIGHTS)
    assert set(off["category"]) == {"master weights"}, off[["case", "category", "detail"]]
    assert set(off["worst_component"]) <= {"param", "master"}


def test_a_baseline_entry_names_a_precision(tmp_path, capsys):
    """precision = "bf16-fp32master" baselines the mixed run's rows; dtype = "bfloat16"
    would name the bfloat16 run only (this gate has none: a config error)."""
    text = gate_config(tmp_path, [TOY], precisions=["float32", MIXED]).read_text()
    entry = f'[[baseline]]\nimplementation = "{TOY}"\nreason = "no master copy"\n'
    path = tmp_path / "gate.toml"
    path.write_text(text + entry + f'precision = "{MIXED}"\n')
    assert load_config(path).baseline[0].precision == MIXED
    code = run_gate(path, out=tmp_path / "out", progress=lambda line: None)
    assert code == 0, capsys.readouterr().out
    path.write_text(text + entry + 'dtype = "bfloat16"\n')
    with pytest.raises(GateConfigError, match=r"baseline\[0\]\.dtype: 'bfloat16' is unknown"):
        load_config(path)


BAD_PRECISIONS = {
    "unknown-preset": (
        '"bf16-fp64master"',
        "gate.precisions: precision='bf16-fp64master' is unknown; allowed: a dtype (",
    ),
    "unknown-role": (
        '["param=bfloat16,moments=float32"]',
        "gate.precisions: precision role 'moments' in 'param=bfloat16,moments=float32' is "
        "unknown; allowed roles: param, grad, state, master",
    ),
    "narrow-master": (
        '["param=float32,master=bfloat16"]',
        "gate.precisions: master='bfloat16' is narrower than param='float32'",
    ),
    "empty": ("[]", "gate.precisions: [] must be a string or a non-empty list of precisions"),
    "not-a-string": ("[3]", "gate.precisions[0]: 3 must be a non-empty string"),
    "twice-by-two-names": (
        '["bf16-fp32master", "param=bfloat16,state=float32,master=float32"]',
        "lists a value twice",
    ),
    "also-a-dtype": (
        '["float32"]\ndtypes = ["float32"]',
        "gate.precisions: 'float32' is in gate.dtypes too; list each run once",
    ),
}


@pytest.mark.parametrize(("value", "needle"), BAD_PRECISIONS.values(), ids=BAD_PRECISIONS.keys())
def test_a_bad_precision_is_one_line_naming_it_and_exit_2(tmp_path, capsys, value, needle):
    path = tmp_path / "gate.toml"
    path.write_text(f'[gate]\nprecisions = {value}\n[[implementation]]\nname = "{OURS}"\n')
    with pytest.raises(GateConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and needle in message and "\n" not in message
    assert cli.main(["gate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_precisions_alone_replace_the_float32_run_and_dtypes_add_to_them(tmp_path):
    alone = load_config(gate_config(tmp_path, [OURS], precisions=[MIXED]))
    assert alone.runs == [("quick", MIXED)]
    assert alone.folder("quick", MIXED) == f"quick-{MIXED}"
    both = load_config(gate_config(tmp_path, [OURS], dtypes=["float32"], precisions=[MIXED]))
    assert both.runs == [("quick", "float32"), ("quick", MIXED)]
    roles = load_config(gate_config(tmp_path, [OURS], precisions=["param=bfloat16,state=float32"]))
    assert roles.precisions == ("bf16-fp32state",)  # the preset's name, as rows give it
    odd = load_config(gate_config(tmp_path, [OURS], precisions=["param=float16,state=float32"]))
    (name,) = odd.precisions
    assert name == "param=float16,grad=float16,state=float32,master=none"
    assert odd.folder("quick", name) == "quick-param_float16_grad_float16_state_float32_master_none"


def test_pytest_plugin_ids_name_the_precision(pytester, tmp_path):
    path = gate_config(tmp_path, [OURS], precisions=[MIXED])
    result = pytester.runpytest(
        f"--adamspec={path}", f"--adamspec-out={tmp_path / 'out'}", "-v", "-k", "typical"
    )
    # (not fnmatch_lines: the brackets of the name would be a character class)
    assert f"adamspec::{OURS}::typical::{MIXED} PASSED" in result.stdout.str()
    assert result.ret == 0


# ------------------------------------------------------------------------ adamspec run


@pytest.mark.needs("torch")
def test_run_precision_on_a_tiny_suite(tmp_path, capsys):
    """``adamspec run --precision``: rows, JUnit names and the console name the precision;
    implementations that do not run it are skipped, in one console line."""
    out = tmp_path / "out"
    args = ["run", "--suite", "quick", "--precision", MIXED, "--out", str(out),
            "--impl", OURS, "--impl", "torch.Adam(foreach=*)", "--steps", "2",
            "--progress", "plain"]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "precision: bf16-fp32master (param bfloat16, grad bfloat16, state float32, " in printed
    (skipped,) = [line for line in printed.splitlines() if line.startswith("skipped")]
    assert skipped.startswith(
        f"skipped, every case (2): does not run precision {MIXED}; its mixed precisions: none"
    ) and skipped.endswith("torch.Adam(foreach=False), torch.Adam(foreach=True)")
    summary = pd.read_csv(out / "summary.csv", dtype=str, keep_default_na=False)
    assert list(summary.columns[4:6]) == ["dtype", "precision"]
    assert set(zip(summary["dtype"], summary["precision"], strict=True)) == {("bfloat16", MIXED)}
    ours = summary[summary["implementation"] == OURS]
    assert set(ours["verdict"]) == {"pass"}
    names = junit_names(out / "junit.xml")
    assert (OURS, f"typical[{MIXED}]") in names and len(names) == 3 * len(QUICK_CASES)
    assert json.loads((out / "meta.json").read_text())["precision"] == MIXED


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--precision", "bf16-fp64master"],
         "adamspec run: error: --precision: precision='bf16-fp64master' is unknown; allowed: "),
        (["--precision", "param=bfloat16,state=int8"],
         "adamspec run: error: --precision: state='int8' is not a dtype; allowed: "),
        (["--precision", "bf16-fp32master", "--dtype", "bfloat16"],
         "adamspec run: error: --dtype=bfloat16 and --precision=bf16-fp32master both name"),
    ],
)  # fmt: skip
def test_run_bad_precision_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    code = cli.main(["run", "--quick", "--out", str(tmp_path / "out"), "--impl", OURS, *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(needle) and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_a_mixed_run_resumes_from_its_own_checkpoint_only(tmp_path, monkeypatch):
    """A precision is part of the run's configuration: its finished tasks are reused by the
    same precision (no task recomputed, the same rows), never by the uniform run."""
    import adamspec.harness.run as run_module
    from adamspec.harness.run import Checkpoint, RunConfig, run

    config = RunConfig(implementations=(OURS,), suite="quick", dtype=MIXED, separation=False,
                       counterexample_examples=0, steps=2)  # fmt: skip
    checkpoint = Checkpoint(tmp_path / "ckpt", config)
    first = run(config, progress=lambda line: None, checkpoint=checkpoint)
    assert {row["precision"] for row in first.summary} == {MIXED}

    def must_not_run(*args: Any) -> None:
        raise AssertionError(f"recomputed: {args[:2]}")

    monkeypatch.setattr(run_module, "fingerprint_task", must_not_run)
    monkeypatch.setattr(run_module, "case_task", must_not_run)
    again = run(config, progress=lambda line: None, checkpoint=checkpoint)
    assert repr(again.summary) == repr(first.summary) and repr(again.results) == repr(first.results)
    uniform = Checkpoint(tmp_path / "ckpt", replace(config, dtype="bfloat16"))
    assert uniform.load(("fingerprint", OURS)) is None
