"""`adamspec check`: a user's kernel against its claimed variant, exit codes and robustness.

The kernels (tests/kernels/user_kernels.py) follow impl.adapters.kernel_protocol's functional form;
each runs in a worker process, so crashes and hangs end only their case.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adamspec.harness.check import check

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "tests" / "kernels" / "user_kernels.py"


def _check(name: str, tmp_path: Path, **kw):
    kw.setdefault("suite", "quick")
    return check(f"{KERNELS}:{name}", kw.pop("variant", "paper.algorithm1"), out=tmp_path,
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
