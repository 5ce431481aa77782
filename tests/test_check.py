"""`adamspec check`: a user's kernel against its claimed variant, exit codes and robustness.

The kernels (tests/kernels/) follow impl.adapters.kernel_protocol's functional form; each runs
in a worker process, so crashes and hangs end only their case. user_kernels.py holds the dense
ones, printing_kernel.py prints from C and Python, once_per_process.py cannot be executed twice
in a process, load_failures.py cannot be imported, sparse_kernels.py has the sparse-rows
form.
"""

from __future__ import annotations

import builtins
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from adamspec.harness.check import check
from adamspec.harness.problems import problem, suite

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "tests" / "kernels" / "user_kernels.py"


def _check(name: str, tmp_path: Path, kernels: Path = KERNELS, **kw):
    kw.setdefault("suite", "quick")
    return check(f"{kernels}:{name}", kw.pop("variant", "paper.algorithm1"), out=tmp_path,
                 progress=lambda line: None, **kw)  # fmt: skip


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adamspec.harness.cli", "check", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)  # fmt: skip


def test_a_conforming_kernel_exits_0_with_reports_and_junit(tmp_path):
    done = _cli(f"{KERNELS}:adam", "--variant", "paper.algorithm1", "--suite", "quick",
                "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CONFORMS to paper.algorithm1" in done.stdout
    for name in ("summary.csv", "results.parquet", "report.md", "report.html", "junit.xml"):
        assert (tmp_path / name).exists(), name


def test_a_kernel_off_its_claim_exits_1_naming_the_axis_and_a_counterexample(tmp_path):
    done = _cli(f"{KERNELS}:adam_eps_hat", "--variant", "paper.algorithm1", "--suite",
                "quick", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DOES NOT CONFORM to paper.algorithm1" in done.stdout
    assert "epsilon placement" in done.stdout
    assert "minimal counterexample" in done.stdout
    assert list((tmp_path / "counterexamples").glob("*.py"))


def test_without_a_claim_the_fingerprint_picks_the_reference(tmp_path):
    result = _check("adam_eps_hat", tmp_path, variant=None)
    assert not result.claimed
    assert result.conforms, [r["detail"] for r in result.tables.summary]
    assert result.variant in {"paper.eps_hat", "tf.raw.ApplyAdam", "keras.Adam", "tf_keras.Adam"}


@pytest.mark.parametrize(
    ("kernel", "kwargs", "needle", "steps_kept"),
    [
        ("raises_at_step_3", {}, "kernel gave up at step 3", 2),
        ("hangs_at_step_2", {"timeout_s": 2.0}, "did not return within 2 s", 1),
        ("segfaults_at_step_2", {}, "worker died", 1),
        ("wrong_dtype", {}, "has dtype float64, expected float32", 0),
        ("wrong_shape", {}, "expected (2, 2)", 0),
    ],
)
def test_a_broken_kernel_is_reported_and_the_run_goes_on(tmp_path, kernel, kwargs, needle,
                                                         steps_kept):  # fmt: skip
    result = _check(kernel, tmp_path, **kwargs)
    assert not result.conforms
    typical = next(r for r in result.tables.summary if r["case"] == "typical")
    assert typical["verdict"] == "error" and needle in typical["detail"], typical["detail"]
    assert typical["steps"] == steps_kept  # what it computed before failing is kept
    # every case was attempted: a failure in one does not stop the others
    assert {r["case"] for r in result.tables.summary} >= {"typical", "keras-doc", "tiny-near-eps"}


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("no_colon_here", "must be module:object or path/to/file.py:object"),
        ("tests/kernels/missing.py:adam", "no such file"),
        (f"{KERNELS}:nothing", "has no 'nothing'"),
        (f"{KERNELS}:NOT_A_KERNEL", "is a int, not callable"),
        ("no_such_module_xyz:step", "cannot import 'no_such_module_xyz'"),
    ],
)
def test_a_target_that_cannot_be_loaded_is_one_line_exit_2(tmp_path, target, needle):
    done = _cli(target, "--suite", "quick", "--out", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variant", "needle"),
    [
        ("adam.nope", "variant='adam.nope' is not in the catalog"),
        (
            "eps_placement=eps_hatt",
            "eps_placement='eps_hatt' is not a EpsPlacement; allowed: "
            "algorithm_1, eps_hat, eps_hat_adaptive, eps_root",
        ),
        ("weight_decays=l2", "unknown variant axis 'weight_decays'; allowed: family, "),
        ("maximize=yes", "maximize='yes' is not allowed; allowed: true, false"),
    ],
)
def test_an_unknown_variant_or_axis_value_is_one_line_exit_2(tmp_path, variant, needle):
    done = _cli(f"{KERNELS}:adam", "--variant", variant, "--out", str(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


# ------------------------------------------------------------------ what a kernel prints

PRINTING = ROOT / "tests" / "kernels" / "printing_kernel.py"


def _summary_csv(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "summary.csv", newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def test_a_kernel_printing_from_c_to_fd_1_and_2_conforms_and_its_lines_are_kept(tmp_path):
    done = _cli(f"{PRINTING}:printing_adam", "--variant", "paper.algorithm1", "--suite", "quick",
                "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CONFORMS to paper.algorithm1" in done.stdout
    assert "step 1" not in done.stdout + done.stderr  # none of it reaches adamspec's console
    rows = _summary_csv(tmp_path)
    for case, row in rows.items():
        if row["verdict"] == "skipped":  # sparse-rows: the kernel takes dense gradients only
            assert "sparse = True" in row["detail"], row
            continue
        printed = row["kernel_output"].split(" | ")
        t = problem(case).start_step + 1  # the discriminating problems start late
        sources = ("C write(1)", "C write(2)", "C printf", "C fprintf(stderr)", "os.write(1)",
                   "os.write(2)", "print")  # fmt: skip
        assert {f"{s}: step {t}" for s in sources} <= set(printed), (case, printed)
    assert {r["verdict"] for r in rows.values()} == {"pass", "skipped"}


def test_a_kernel_file_runs_once_per_worker_process_and_never_in_the_harness(tmp_path):
    result = _check("registered_adam", tmp_path,
                    kernels=ROOT / "tests" / "kernels" / "once_per_process.py")  # fmt: skip
    # executing the file twice in one process raises: every case ran in a worker that
    # executed it once (the old harness executed it again for each case: "skipped" on all)
    assert result.conforms, [r["detail"] for r in result.tables.summary]
    assert {r["verdict"] for r in result.tables.summary} == {"pass", "skipped"}
    assert "_adamspec_test_custom_ops" not in vars(builtins)  # not executed in this process


def test_a_kernel_that_cannot_be_imported_is_an_error_with_the_full_reason(tmp_path):
    failing = ROOT / "tests" / "kernels" / "load_failures.py"
    done = _cli(f"{failing}:step", "--suite", "quick", "--out", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    rows = _summary_csv(tmp_path)
    assert len(rows) == len(suite("quick")) and {r["verdict"] for r in rows.values()} == {"error"}
    reason = (
        f"cannot load the kernel: importing '{failing}' raised OSError: "
        f"{failing.parent / 'libadam_missing.so'}: cannot open shared object file: No such file "
        "or directory (at kernels/load_failures.py:14, raised in ctypes/__init__.py:"
    )
    for row in rows.values():
        assert row["detail"].startswith(reason), row["detail"]  # whole in summary.csv
        assert row["kernel_output"] == "loading the AVX-512 Adam library"
    # the console shortens it and says where the full text is; no fingerprint without a step
    assert f"the full text is the detail column of {tmp_path}/summary.csv" in done.stdout
    assert "fingerprint:" not in done.stdout
    assert "DOES NOT CONFORM to any variant (none claimed, and no step ran" in done.stdout
    assert (tmp_path / "fingerprints.csv").read_text().count("\n") == 1  # the header only


# ------------------------------------------------------------------ the sparse-rows form

SPARSE = ROOT / "tests" / "kernels" / "sparse_kernels.py"
SPARSE_MOMENTUM, DECAY = "sparse momentum", "weight-decay coupling or scaling"


@pytest.mark.parametrize(
    ("kernel", "variant"),
    [("lazy_sparse_adam", "torch.SparseAdam"), ("dense_sparse_adam", "tf_keras.Adam")],
)
def test_a_sparse_kernel_conforms_to_its_own_variant_on_the_sparse_problems(tmp_path, kernel,
                                                                             variant):  # fmt: skip
    result = _check(kernel, tmp_path, variant=variant, kernels=SPARSE)
    assert result.conforms, [(r["case"], r["detail"]) for r in result.tables.summary]
    sparse = next(r for r in result.tables.summary if r["case"] == "sparse-rows")
    assert (sparse["verdict"], sparse["steps"]) == ("pass", 4)  # measured, not skipped


@pytest.mark.parametrize(
    ("kernel", "variant", "caught"),
    [
        # lazy where the claim decays every row: only the sparse cases (the quick suite's
        # and its discriminating one), named sparse momentum
        ("lazy_sparse_adam", "paper.eps_hat", {"sparse-rows": SPARSE_MOMENTUM,
                                               "disc-sparse": SPARSE_MOMENTUM}),
        # the same kernel claimed as tf_keras.Adam: also its weight decay, which it lacks
        ("lazy_sparse_adam", "tf_keras.Adam",
         {"sparse-rows": SPARSE_MOMENTUM, "disc-sparse": SPARSE_MOMENTUM,
          "weight-decay": DECAY, "disc-weight-decay": DECAY}),
        # dense-equivalent where the claim is lazy (torch.SparseAdam has no weight decay)
        ("dense_sparse_adam", "torch.SparseAdam",
         {"sparse-rows": SPARSE_MOMENTUM, "disc-sparse": SPARSE_MOMENTUM,
          "weight-decay": DECAY, "disc-weight-decay": DECAY}),
    ],
)  # fmt: skip
def test_a_sparse_kernel_off_its_claim_is_caught_on_the_sparse_problem(tmp_path, kernel, variant,
                                                                       caught):  # fmt: skip
    result = _check(kernel, tmp_path, variant=variant, kernels=SPARSE)
    failing = {r["case"]: r["category"] for r in result.tables.summary if r["verdict"] != "pass"}
    assert failing == caught, [(r["case"], r["detail"]) for r in result.tables.summary]


SCALE_KERNELS = ROOT / "tests" / "kernels" / "scale_kernels.py"


def test_a_kernel_with_torchs_float32_arithmetic_conforms_except_the_dtypes_range(tmp_path):
    """The false alarm of issue 15: g*g overflowing float32 on `huge` and `mixed-scales` is
    the dtype's range, not a discrepancy; --strict-range makes it fail."""
    from dataclasses import replace

    from adamspec.harness.check import verdict_text

    result = check(f"{SCALE_KERNELS}:torch_like", "torch.Adam", out=tmp_path, suite="default",
                   progress=lambda line: None)  # fmt: skip
    verdicts = {r["case"]: r["verdict"] for r in result.tables.summary}
    assert {c for c, v in verdicts.items() if v == "range"} == {"huge", "mixed-scales"}
    assert set(verdicts.values()) == {"pass", "range", "skipped"}  # skipped: no sparse path
    assert result.tier == "conforms except the dtype's range" and result.conforms
    assert not result.tables.counterexamples  # a range case is not a discrepancy to shrink
    text = verdict_text(result, tmp_path)
    assert text.startswith("fingerprint: ")  # the kernel's own formula, claim or not
    verdict = text.splitlines()[1]
    assert verdict.startswith("CONFORMS to torch.Adam except the dtype's range: 14/18 cases")
    range_lines = [line for line in text.splitlines() if line.startswith("  range: ")]
    assert [line.split(":")[1].strip() for line in range_lines] == ["huge", "mixed-scales"]
    assert all("g*g overflows at" in line for line in range_lines)
    strict = replace(result, strict_range=True)
    assert not strict.conforms
    strict_verdict = verdict_text(strict, tmp_path).splitlines()[1]
    assert strict_verdict.startswith("DOES NOT CONFORM to torch.Adam (--strict-range)")
