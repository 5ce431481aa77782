"""``adamspec gate``: exit codes, baseline and strict, JUnit, Markdown, resume, determinism,
bad configs, and the pytest plugin, on the toy implementations and the quick suite."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from toy_adapters import register_toys

from adamspec.harness import cli, gate
from adamspec.harness.gate import GateConfigError, load_config, run_gate
from adamspec.harness.problems import DISCRIMINATING, SUITES, problem
from adamspec.harness.run import Tables

pytest_plugins = ("pytester",)

register_toys()
# An in-process pytest run (pytester) forgets the modules it imported, and pandas' parquet
# engine registers its pyarrow extension types once per process: a second run writing
# reports would fail to register them again. Imported here, at collection, before any run.
pd.DataFrame({"x": [1]}).to_parquet(io.BytesIO())
ROOT = Path(__file__).resolve().parents[1]
QUICK_CASES = [p.name for p in SUITES["quick"]]
#: Quick cases the toys skip (they have no weight decay).
DECAY_CASES = [p.name for p in SUITES["quick"] if "weight_decay" in p.hyper]
#: Quick cases where the toy with eps moved is off (eps matters there).
EPS_CASES = ["tiny-near-eps", "disc-eps"]
#: Quick cases where toy.raises reaches its third step (it raises there).
RAISING_CASES = [p.name for p in SUITES["quick"]
                 if p.start_step == 0 and p.steps >= 3 and p.name not in DECAY_CASES]  # fmt: skip
EPS_REASON = "eps added to sqrt(v) before the bias correction"
EPS_LINK = "https://example.org/issues/1"

_REAL_COMPUTE = gate.compute
_MEMO: dict = {}


def _memo_compute(config, progress=None, checkpoint=None, executor=None):
    """The engine once per implementation and configuration for the whole module: the
    gate's logic is what these tests vary (the determinism and resume tests run it for real)."""
    merged = Tables()
    for name in config.implementations:
        one = replace(config, implementations=(name,), jobs=1)
        if one.key() not in _MEMO:
            _MEMO[one.key()] = _REAL_COMPUTE(one, progress=lambda line: None)
        merged.extend(_MEMO[one.key()])
    return merged


@pytest.fixture
def memo(monkeypatch):
    monkeypatch.setattr(gate, "compute", _memo_compute)
    # report.html's plots take a second per gate and are tested in test_reports
    monkeypatch.setattr("adamspec.reports.html.render_html", lambda tables, meta: "<html></html>\n")


@pytest.fixture
def registry():
    """Kernels a test registers are gone after it."""
    from adamspec.impl.adapters import REGISTRY

    saved = dict(REGISTRY)
    yield REGISTRY
    REGISTRY.clear()
    REGISTRY.update(saved)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def config_text(impls=("toy.none",), baseline=(), strict=False, **gate_keys) -> str:
    keys = {"suite": "quick", "seed": 0, "strict": strict, **gate_keys}
    lines = ["[gate]"] + [f"{k} = {_toml(v)}" for k, v in keys.items()]
    for name in impls:
        lines += ["[[implementation]]", f"name = {_toml(name)}"]
    for entry in baseline:
        lines.append("[[baseline]]")
        lines += [f"{k} = {_toml(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, text: str, name: str = "gate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def gate_run(tmp_path: Path, text: str, **kwargs) -> tuple[int, Path]:
    out = tmp_path / "out"
    code = run_gate(write_config(tmp_path, text), out=out, progress=lambda line: None, **kwargs)
    return code, out


def junit_cases(path: Path) -> list[ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return list(root.iter("testcase"))


EPS_BASELINE = {
    "implementation": "toy.eps_moved",
    "case": "*-eps",
    "dtype": "float32",
    "reason": EPS_REASON,
    "link": EPS_LINK,
}

# ------------------------------------------------------------------------ exit codes


def test_conforming_implementation_passes_through_the_cli(memo, tmp_path, capsys):
    path = write_config(tmp_path, config_text(["toy.none"]))
    out, junit = tmp_path / "out", tmp_path / "ci" / "junit.xml"
    code = cli.main(["gate", str(path), "--out", str(out), "--junit", str(junit)])
    assert code == 0
    assert "adamspec gate: passed" in capsys.readouterr().out
    for name in ("report.md", "junit.xml", "gate.json", "quick-float32/summary.csv",
                 "quick-float32/report.md", "quick-float32/results.parquet"):  # fmt: skip
        assert (out / name).is_file(), name
    assert junit.read_bytes() == (out / "junit.xml").read_bytes()
    cases = junit_cases(junit)
    assert [c.get("name") for c in cases] == [f"{c}[float32]" for c in QUICK_CASES]
    assert {c.get("classname") for c in cases} == {"toy.none"}
    assert not (out / gate.CHECKPOINT_FOLDER).exists()  # cleared once the reports are written
    assert json.loads((out / "gate.json").read_text())["passed"] is True


def test_new_discrepancy_fails_and_the_summary_names_it(memo, tmp_path):
    code, out = gate_run(tmp_path, config_text(["toy.eps_moved"]))
    assert code == 1
    md = (out / "report.md").read_text()
    assert "failed" in md and "### New discrepancies" in md
    new_rows = [line for line in md.splitlines() if line.startswith("| toy.eps_moved")]
    assert len(new_rows) == len(EPS_CASES) and "tiny-near-eps" in new_rows[0]
    assert all("epsilon placement" in row for row in new_rows)
    script = new_rows[0].split("`")[1]  # the counterexample, relative to the output folder
    assert script.startswith("quick-float32/counterexamples/") and (out / script).is_file()
    failures = [c for c in junit_cases(out / "junit.xml") if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == [f"{c}[float32]" for c in EPS_CASES]
    assert "epsilon placement" in failures[0].find("failure").get("message")
    data = json.loads((out / "gate.json").read_text())
    assert data["passed"] is False and data["new"][0]["counterexample"] == script


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ({}, 0),
        ({"case": "*eps"}, 0),  # globs
        ({"verdict": "discrepancy", "category": "epsilon*"}, 0),
        ({"category": "bias correction"}, 1),  # names another bug: the discrepancy is new
        ({"verdict": "error"}, 1),
    ],
    ids=["exact", "glob", "category", "other-category", "other-verdict"],
)
def test_baselined_discrepancy_passes_with_reason_and_link(memo, tmp_path, entry, code):
    got, out = gate_run(tmp_path, config_text(["toy.eps_moved"], [{**EPS_BASELINE, **entry}]))
    assert got == code
    if code == 0:
        (case,) = [c for c in junit_cases(out / "junit.xml") if c.get("name").startswith("tiny")]
        skipped = case.find("skipped")
        assert skipped.get("type") == "xfail"
        assert EPS_REASON in skipped.get("message") and EPS_LINK in skipped.get("message")
        md = (out / "report.md").read_text()
        assert "### Baselined" in md and EPS_LINK in md and "### New" not in md


def test_crash_is_an_error_unless_baselined(memo, tmp_path):
    code, out = gate_run(tmp_path, config_text(["toy.raises"]))
    assert code == 1
    errors = [c for c in junit_cases(out / "junit.xml") if c.find("error") is not None]
    assert [c.get("name") for c in errors] == [f"{c}[float32]" for c in RAISING_CASES]
    assert "gave up" in errors[0].find("error").get("message")
    entry = {"implementation": "toy.*", "verdict": "error", "reason": "raises at step 3"}
    code, _ = gate_run(tmp_path, config_text(["toy.raises"], [entry]))
    assert code == 0


@pytest.mark.parametrize("strict", [True, False])
def test_stale_baseline_entry_fails_only_under_strict(memo, tmp_path, strict):
    fixed = {"implementation": "toy.none", "case": "typical", "reason": "was a bug",
             "link": "https://example.org/issues/2"}  # fmt: skip
    text = config_text(["toy.none", "toy.eps_moved"], [EPS_BASELINE, fixed], strict=strict)
    code, out = gate_run(tmp_path, text)
    assert code == (1 if strict else 0)
    data = json.loads((out / "gate.json").read_text())
    assert [e["entry"] for e in data["stale"]] == ["baseline[1]"]
    assert data["counts"]["baselined"] == len(EPS_CASES) and data["counts"]["new"] == 0
    md = (out / "report.md").read_text()
    assert "### Stale baseline entries" in md and "toy.none / typical" in md
    stale = [c for c in junit_cases(out / "junit.xml") if c.get("classname") == "adamspec.baseline"]
    assert len(stale) == 1
    assert (stale[0].find("failure") is not None) == strict


def test_junit_has_one_testcase_per_implementation_and_case(memo, tmp_path):
    impls = ["toy.none", "toy.eps_moved", "toy.raises"]
    code, out = gate_run(tmp_path, config_text(impls, [EPS_BASELINE]))
    assert code == 1  # toy.raises
    root = ET.parse(out / "junit.xml").getroot()
    cases = list(root.iter("testcase"))
    pairs = [(c.get("classname"), c.get("name")) for c in cases]
    assert len(pairs) == len(set(pairs)) == len(impls) * len(QUICK_CASES)
    assert {c for c, _ in pairs} == set(impls)
    suite = root.find("testsuite")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases) == 0
    errors, skipped = len(RAISING_CASES), 3 * len(DECAY_CASES) + len(EPS_CASES)  # + xfails
    assert int(suite.get("errors")) == sum(c.find("error") is not None for c in cases) == errors
    n_skipped = sum(c.find("skipped") is not None for c in cases)
    assert int(suite.get("skipped")) == n_skipped == skipped


def test_several_dtypes_get_a_report_folder_each_and_budgets_apply(memo, tmp_path):
    code, out = gate_run(tmp_path, config_text(["toy.none"], dtypes=["float32", "float64"]))
    assert code == 1  # the toy rounds several times in float64: a few ULPs over the default
    for folder in ("quick-float32", "quick-float64"):
        assert (out / folder / "summary.csv").is_file()
    names = [c.get("name") for c in junit_cases(out / "junit.xml")]
    assert len(names) == 2 * len(QUICK_CASES) and "typical[float64]" in names
    new = json.loads((out / "gate.json").read_text())["new"]
    assert new and {r["dtype"] for r in new} == {"float64"}
    budget = "[budget]\nparam = 64\nm = 64\nv = 64\n"
    code, out = gate_run(tmp_path, budget + config_text(["toy.none"], dtypes="float64"))
    assert code == 0
    meta = json.loads((out / "quick-float64" / "meta.json").read_text())
    assert meta["budget_ulp"]["param"] == 64 and meta["budget_ulp"]["v_max"] == 3


# ------------------------------------------------------------------------ bad configs

BAD_CONFIGS = {
    "unknown-top-key": ("[gates]\nsuite = 'quick'\n", "gates: unknown key; allowed: gate,"),
    "unknown-gate-key": ("[gate]\nsute = 'quick'\n", "gate.sute: unknown key; allowed: name,"),
    "unknown-impl-key": (
        "[[implementation]]\nname = 'toy.none'\nvarient = 'x'\n",
        "implementation[0].varient: unknown key; allowed: name, target, variant",
    ),
    "unknown-baseline-key": (
        "[[implementation]]\nname = 'toy.none'\n[[baseline]]\nimplementation = 'toy.none'\n"
        "reason = 'r'\nlnk = 'x'\n",
        "baseline[0].lnk: unknown key; allowed: implementation, case",
    ),
    "unknown-suite": ("[gate]\nsuite = 'huge'\n", "gate.suite: 'huge' is unknown; allowed: quick"),
    "unknown-dtype": (
        "[gate]\ndtypes = ['float32', 'float33']\n",
        "gate.dtypes[1]: 'float33' is unknown; allowed: float64, float32, float16, bfloat16",
    ),
    "negative-budget": (
        "[budget]\nparam = -1\n[[implementation]]\nname = 'toy.none'\n",
        "budget.param: -1 must be an integer in [0,",
    ),
    "unknown-budget-component": (
        "[budget]\nw = 1\n",
        "budget.w: unknown key; allowed: param, m, v, v_max, ema, master",
    ),
    "seed-not-int": ("[gate]\nseed = 'zero'\n", "gate.seed: 'zero' must be an integer"),
    "strict-not-bool": ("[gate]\nstrict = 1\n", "gate.strict: 1 must be true or false"),
    "no-implementation": ("[gate]\nsuite = 'quick'\n", "implementation: at least one"),
    "unknown-pattern": (
        "[[implementation]]\nname = 'toy.nope*'\n",
        "implementation[0].name: 'toy.nope*' matches no implementation; allowed: ",
    ),
    "unknown-variant": (
        "[[implementation]]\ntarget = 'toy_adapters:register_toys'\nvariant = 'torch.Adamm'\n",
        "implementation[0].variant: 'torch.Adamm' is unknown; allowed: paper.algorithm1,",
    ),
    "missing-kernel-file": (
        "[[implementation]]\ntarget = 'no/such/kernel.py:step'\nvariant = 'torch.Adam'\n",
        "implementation[0].target: TARGET",
    ),
    "variant-on-registered": (
        "[[implementation]]\nname = 'toy.none'\nvariant = 'torch.Adam'\n",
        "implementation[0].variant: only a user kernel",
    ),
    "baseline-without-reason": (
        "[[implementation]]\nname = 'toy.none'\n[[baseline]]\nimplementation = 'toy.none'\n",
        "baseline[0].reason: every baseline entry needs a reason",
    ),
    "baseline-unknown-impl": (
        "[[implementation]]\nname = 'toy.none'\n[[baseline]]\nimplementation = 'toy.nonee'\n"
        "reason = 'r'\n",
        "baseline[0].implementation: 'toy.nonee' matches none of this gate's implementations: "
        "toy.none",
    ),
    "baseline-unknown-case": (
        "[gate]\nsuite = 'quick'\n[[implementation]]\nname = 'toy.none'\n[[baseline]]\n"
        "implementation = 'toy.none'\ncase = 'hgue'\nreason = 'r'\n",
        "baseline[0].case: 'hgue' matches no case of suite quick; allowed: typical,",
    ),
    "baseline-dtype-not-gated": (
        "[[implementation]]\nname = 'toy.none'\n[[baseline]]\nimplementation = 'toy.none'\n"
        "dtype = 'float16'\nreason = 'r'\n",
        "baseline[0].dtype: 'float16' is unknown; allowed: float32",
    ),
    "register-hook-missing": (
        "[gate]\nregister = ['no_such_module_xyz:register']\n",
        "gate.register[0]: TARGET",
    ),
    "invalid-toml": ("[gate\n", "invalid TOML"),
    # what the schema words more precisely than the hand-written checks did
    "implementation-not-an-array": (
        "implementation = 'toy.none'\n",
        "implementation: 'toy.none' must be a non-empty array of [[implementation]] tables",
    ),
    "baseline-not-an-array": (
        "baseline = 3\n[[implementation]]\nname = 'toy.none'\n",
        "baseline: 3 must be an array of [[baseline]] tables",
    ),
    "misspelt-key-before-missing-one": (
        "[[implementation]]\nname = 'toy.none'\n[[baseline]]\nimplementation = 'toy.none'\n"
        "reasn = 'r'\n",
        "baseline[0].reasn: unknown key; allowed: implementation, case, suite, dtype, precision, "
        "verdict,",
    ),
    "dtype-listed-twice": (
        "[gate]\ndtypes = ['float32', 'float32']\n",
        "gate.dtypes: ['float32', 'float32'] lists a value twice",
    ),
    "timeout-not-finite": (
        "[[implementation]]\ntarget = 'k.py:step'\nvariant = 'torch.Adam'\ntimeout_s = nan\n",
        "implementation[0].timeout_s: nan must be a positive number of seconds",
    ),
    "kernel-without-variant": (
        "[[implementation]]\ntarget = 'k.py:step'\n",
        "implementation[0].variant: a user kernel must claim a variant; allowed: paper.algorithm1,",
    ),
    "baseline-suite-not-a-string": (
        "[[implementation]]\nname = 'toy.none'\n[[baseline]]\nimplementation = 'toy.none'\n"
        "suite = 3\nreason = 'r'\n",
        "baseline[0].suite: 3 must be a non-empty string; allowed: default",
    ),
    "budget-not-a-table": ("budget = [1]\n", "budget: must be a table, not an array"),
}


@pytest.mark.parametrize(("text", "needle"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, needle):
    path = write_config(tmp_path, text, "ci-gate.toml")
    with pytest.raises(GateConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and needle in message, message
    assert "\n" not in message


TOY = ["[[implementation]]", "name = 'toy.none'"]


def _schema_keys() -> list[tuple[str, str]]:
    """(table, key) for every key of the schema, the table as an error names it."""
    from adamspec.harness import gate_schema as schema

    tables = {"": schema.GateDocument, "gate": schema.GateTable, "budget": schema.BudgetTable,
              "implementation[0]": schema.ImplementationTable,
              "baseline[0]": schema.BaselineTable}  # fmt: skip
    return [(t, f.alias or name) for t, m in tables.items() for name, f in m.model_fields.items()]


@pytest.mark.parametrize(("table", "key"), _schema_keys(), ids=lambda x: x or "file")
def test_every_key_of_the_schema_says_what_it_must_be(tmp_path, table, key):
    """A wrong value anywhere gets our wording (from the field type's ``Says``, its allowed
    values or its table), never pydantic's generic one."""
    wrong = "1.5" if (table, key) in (("", "gate"), ("", "budget")) else "{x = 1}"
    kernel = {"target": "'k.py:step'", "variant": "'torch.Adam'", key: wrong}
    entry = {"implementation": "'toy.none'", "reason": "'r'", key: wrong}
    lines = {
        "": [f"{key} = {wrong}", *([] if key == "implementation" else TOY)],
        "gate": [f"[gate]\n{key} = {wrong}", *TOY],
        "budget": [f"[budget]\n{key} = {wrong}", *TOY],
        "implementation[0]": ["[[implementation]]", *(f"{k} = {v}" for k, v in kernel.items())],
        "baseline[0]": [*TOY, "[[baseline]]", *(f"{k} = {v}" for k, v in entry.items())],
    }[table]
    path = write_config(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(GateConfigError) as info:
        load_config(path)
    where = f"{table}.{key}" if table else key
    message = str(info.value)
    assert message.startswith(f"{path}: {where}: ") and " must be " in message, message
    assert "Input should" not in message and "\n" not in message


def test_budget_table_sets_components_for_the_config(tmp_path):
    text = "[budget]\nv = 0\nparam = 7\n[[implementation]]\nname = 'toy.none'\n"
    budget = load_config(write_config(tmp_path, text)).budget
    assert list(budget.ulp.items()) == [
        ("param", 7), ("m", 2), ("v", 0), ("v_max", 3), ("ema", 2), ("master", 2)
    ]  # fmt: skip
    assert budget.scaled["v"] == 0.0 and budget.reasons["param"] == "gate config gate.toml [budget]"
    assert "[budget]" not in budget.reasons["m"]


def test_bad_config_exits_2_through_the_cli(tmp_path, capsys):
    assert cli.main(["gate", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adamspec gate: error: ") and "missing.toml: no such config file" in err
    assert len(err.splitlines()) == 1


def test_user_kernel_claims_a_variant_and_relative_paths_follow_the_config(tmp_path, registry):
    kernels = tmp_path / "ci" / "kernels"
    kernels.mkdir(parents=True)
    (kernels / "my_adam.py").write_text(
        "def step(param, grad, state, hyper):\n    raise NotImplementedError\n"
    )
    text = (
        "[[implementation]]\ntarget = 'kernels/my_adam.py:step'\n"
        "variant = 'torch.Adam[amsgrad]'\ntimeout_s = 5\n"
        "[[baseline]]\nimplementation = 'kernels/my_adam.py:step'\nreason = 'r'\n"
    )
    config = load_config(write_config(tmp_path / "ci", text))
    (name,) = config.implementations
    assert name.startswith("kernel:") and name.endswith("my_adam.py:step")
    info = registry[name]
    assert info.documented == "torch.Adam[amsgrad]"
    assert info.options["inner"]["amsgrad"] is True and info.options["timeout_s"] == 5.0
    # a fresh worker process would not have the registration: its cases run in this process
    from adamspec.impl.adapters import static_names

    assert name not in static_names()


# ------------------------------------------------------------------------ determinism, resume


def test_same_seed_and_config_give_byte_identical_reports(tmp_path):
    text = config_text(["toy.eps_moved"], [EPS_BASELINE], seed=5, counterexample_examples=10)
    path = write_config(tmp_path, text)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert run_gate(path, out=out, progress=lambda line: None) == 0
    for name in ("quick-float32/summary.csv", "junit.xml", "report.md", "gate.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_resume_after_a_killed_gate_keeps_finished_implementations(tmp_path):
    impls = ["toy.none", "toy.raises", "toy.eps_moved"]
    text = config_text(impls, register=["toy_adapters:register_toys"], counterexample_examples=5)
    path = write_config(tmp_path, text)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    command = [sys.executable, "-m", "adamspec.harness.cli", "gate", str(path), "--out", str(out)]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    folder = out / gate.CHECKPOINT_FOLDER
    deadline = time.monotonic() + 120
    while not list(folder.glob("*.pickle")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the gate finished before it could be killed"
    kept = len(list(folder.glob("*.pickle")))
    assert kept >= 1 and not (out / "report.md").exists()
    done = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr  # toy.raises and toy.eps_moved are not baselined
    assert f"resumed {kept} finished tasks" in done.stderr
    # only the unfinished tasks ran again: each implementation's fingerprint, cases and
    # counterexample search, less those kept
    ran = re.findall(r"^\[tasks +\d+/(\d+),", done.stderr, re.MULTILINE)
    assert ran and int(ran[-1]) == 3 * (len(QUICK_CASES) + 2) - kept, done.stderr
    assert not folder.exists()
    cases = junit_cases(out / "junit.xml")
    assert len(cases) == 3 * len(QUICK_CASES)


# ------------------------------------------------------------------------ pytest plugin


@pytest.fixture
def plugin_args(request) -> list[str]:
    """-p the plugin only where its entry point is not installed (it would load twice)."""
    if request.config.pluginmanager.has_plugin("adamspec"):
        return []
    return ["-p", "adamspec.harness.pytest_plugin"]


def test_pytest_plugin_turns_the_config_into_items(memo, pytester, plugin_args, monkeypatch):
    calls = []

    def counted(config, progress=None, checkpoint=None, executor=None):
        calls.append((config.implementations, config.suite, config.dtype))
        return _memo_compute(config, progress, checkpoint)

    monkeypatch.setattr(gate, "compute", counted)
    fixed = {"implementation": "toy.none", "case": "typical", "reason": "was a bug"}
    text = config_text(["toy.none", "toy.eps_moved", "toy.raises"], [EPS_BASELINE, fixed],
                       strict=True)  # fmt: skip
    path = write_config(pytester.path, text)
    result = pytester.runpytest_inprocess(
        *plugin_args, "--adamspec", str(path), "--adamspec-out", "ce", "-v", "-rxs",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    n, d, e = len(QUICK_CASES), len(DECAY_CASES), len(EPS_CASES)
    r = len(RAISING_CASES)
    # each toy skips the d decay cases; none: n-d pass; eps_moved: n-d-e pass + e xfail;
    # raises: r errors, the rest pass; baseline 0 passes, the stale baseline 1 fails
    result.assert_outcomes(passed=(n - d) + (n - d - e) + (n - d - r) + 1, failed=r + 1,
                           skipped=3 * d, xfailed=e)  # fmt: skip
    result.stdout.fnmatch_lines([  # registry order
        "adamspec::toy.raises::typical::float32 FAILED*",
        "adamspec::toy.none::typical::float32 PASSED*",
        "adamspec::toy.eps_moved::tiny-near-eps::float32 XFAIL*",
        "adamspec::baseline::0 PASSED*",
        "adamspec::baseline::1 FAILED*",
    ], consecutive=False)  # fmt: skip
    text = result.stdout.str()
    assert f"baselined (baseline[0]): {EPS_REASON} ({EPS_LINK})" in text
    assert "toy.raises on typical [float32]: error" in text and "gave up" in text
    assert "stale baseline entry baseline[1] (toy.none / typical)" in text
    assert "Traceback" not in text
    # one engine run per implementation, not per item
    assert sorted(calls) == [((name,), "quick", "float32")
                             for name in ("toy.eps_moved", "toy.none", "toy.raises")]  # fmt: skip


def test_pytest_plugin_reports_new_discrepancies_with_the_counterexample(
    memo, pytester, plugin_args
):
    path = write_config(pytester.path, config_text(["toy.eps_moved"]))
    result = pytester.runpytest_inprocess(
        *plugin_args, "--adamspec", str(path), "--adamspec-out", "ce",
        "-k", "tiny", "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(failed=1)  # -k selects among the gate's items
    text = result.stdout.str()
    assert "category: epsilon placement" in text
    script = next(line for line in text.splitlines() if line.startswith("counterexample: "))
    assert (pytester.path / script.split()[1]).is_file()


def test_pytest_plugin_writes_the_reports_adamspec_gate_writes(
    memo, pytester, plugin_args, tmp_path
):
    fixed = {"implementation": "toy.none", "case": "typical", "reason": "was a bug"}
    text = config_text(["toy.none", "toy.eps_moved", "toy.raises"], [EPS_BASELINE, fixed],
                       strict=True)  # fmt: skip
    path = write_config(pytester.path, text)
    args = [*plugin_args, "--adamspec", str(path), "-p", "no:cacheprovider"]
    result = pytester.runpytest_inprocess(*args, "--adamspec-out", "out")
    result.stdout.fnmatch_lines(["adamspec gate reports: out/report.md, junit.xml and gate.json*"])
    assert run_gate(path, out=tmp_path / "gate", progress=lambda line: None) == 1
    out = pytester.path / "out"
    for name in ("report.md", "junit.xml", "gate.json", "quick-float32/summary.csv",
                 "quick-float32/results.parquet"):  # fmt: skip
        assert (out / name).read_bytes() == (tmp_path / "gate" / name).read_bytes(), name
    assert json.loads((out / "quick-float32" / "meta.json").read_text())["command"] == (
        "pytest --adamspec"
    )
    # -k computes only what it selects, and the reports say only what was computed
    pytester.runpytest_inprocess(*args, "--adamspec-out", "some", "-k", "toy.none")
    data = json.loads((pytester.path / "some" / "gate.json").read_text())
    assert data["counts"] == {"pass": len(QUICK_CASES) - len(DECAY_CASES),
                              "skipped": len(DECAY_CASES), "baselined": 0, "new": 0, "stale": 1,
                              "unverified": 1}  # fmt: skip
    assert [e["entry"] for e in data["unverified"]] == ["baseline[0]"]  # toy.eps_moved: not run
    assert "1 implementations" in (pytester.path / "some" / "report.md").read_text()
    # nothing computed, nothing written
    pytester.runpytest_inprocess(*args, "--adamspec-out", "none", "-k", "no_such_item")
    assert not (pytester.path / "none").exists()


def test_pytest_plugin_does_nothing_without_the_option(pytester, plugin_args):
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.runpytest_inprocess(*plugin_args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_pytest_plugin_bad_config_is_a_usage_error(pytester, plugin_args):
    path = write_config(pytester.path, "[gate]\nsuite = 'huge'\n")
    result = pytester.runpytest_inprocess(*plugin_args, "--adamspec", str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--adamspec: *gate.toml: gate.suite: 'huge' is unknown*"])


def test_the_documented_config_is_valid(tmp_path, registry):
    doc = (ROOT / "docs" / "ci.md").read_text()
    text = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "fused_adam.py").write_text("def step(p, g, s, h):\n    return p, s\n")
    config = load_config(write_config(tmp_path, text))
    assert config.strict and config.dtypes == ("float32", "bfloat16")
    assert config.precisions == ("bf16-fp32master",)
    assert "torch.Adam(foreach=False)" in config.implementations
    assert config.budget.ulp["v"] == 4 and config.baseline[0].case == "huge"


@pytest.mark.parametrize(("keys", "code"), [({}, 0), ({"range": "fail"}, 1)], ids=["pass", "fail"])
def test_range_cases_pass_the_gate_unless_range_is_fail(memo, tmp_path, keys, code):
    """g*g formed in float32 overflows on `huge` and `mixed-scales` only: the tier "conforms
    except the dtype's range" passes the gate by default; `range = "fail"` fails them."""
    got, out = gate_run(tmp_path, config_text(["toy.square_overflows"], suite="default", **keys))
    assert got == code
    (huge,) = [c for c in junit_cases(out / "junit.xml") if c.get("name") == "huge[float32]"]
    data = json.loads((out / "gate.json").read_text())
    if code == 0:
        assert huge.find("failure") is None
        assert "g*g overflows" in huge.find("system-out").text
        assert data["counts"]["new"] == 0
    else:
        assert huge.find("failure").get("type") == "range"
        new = [(r["case"], r["verdict"]) for r in data["new"]]
        assert new == [("huge", "range"), ("mixed-scales", "range")]


def test_a_range_baseline_entry_needs_range_fail(tmp_path):
    entry = {"implementation": "toy.square_overflows", "verdict": "range", "reason": "float32"}
    text = config_text(["toy.square_overflows"], [entry], suite="default")
    with pytest.raises(
        GateConfigError, match=r"'range' only fails the gate .* gate\.range = \"fail\""
    ):
        load_config(write_config(tmp_path, text))
    load_config(write_config(tmp_path, config_text(["toy.square_overflows"], [entry],
                                                   suite="default", range="fail")))  # fmt: skip


def test_size_and_steps_resize_the_gates_runs(memo, tmp_path):
    code, out = gate_run(tmp_path, config_text(["toy.none"]), size=40, steps=2)
    assert code == 0
    summary = pd.read_csv(out / "quick-float32" / "summary.csv")
    ran = summary[summary["verdict"] != "skipped"]
    kept = ran["case"].isin(DISCRIMINATING)  # chosen to separate variants: left as they are
    assert set(ran.loc[~kept, "steps"]) == {2}
    assert kept.any() and all(ran.loc[kept, "steps"] == [problem(c).steps for c in ran[kept].case])
    results = pd.read_parquet(out / "quick-float32" / "results.parquet")
    typical = results[(results["case"] == "typical") & (results["mode"] == "lockstep")]
    assert set(typical["coordinates"]) == {80}  # two tensors of 40
    meta = json.loads((out / "quick-float32" / "meta.json").read_text())
    assert (meta["size"], meta["steps"]) == (40, 2)
