"""``adamspec doctor`` and ``adamspec setup tfjs``: what this machine can test, and TF.js
installed outside any checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from needs import frameworks_required

from adamspec.harness import doctor
from adamspec.harness.cli import main
from adamspec.harness.run import RunConfig, run
from adamspec.impl import frameworks, node_packages

ADAMSPEC = str(Path(sys.executable).with_name("adamspec"))


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_has_every_framework_backend_runtime_compiler_and_gpu(capsys):
    code, out, _ = _cli(["doctor"], capsys)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[1:-1]]
    assert names[: len(frameworks.FRAMEWORKS)] == list(frameworks.FRAMEWORKS)
    assert {"keras[tensorflow]", "keras[jax]", "keras[torch]", "node", "npm", "tfjs", "cc",
            "gpu"} <= set(names)  # fmt: skip
    assert out.splitlines()[-1].endswith("adamspec's own, which need no framework)")


def test_json_rows_say_how_to_enable_what_is_missing(capsys):
    code, out, _ = _cli(["doctor", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["torch"]["enable"] == "pip install 'adamspec[torch]'"
    assert rows["tfjs"]["enable"] == "adamspec setup tfjs"
    assert rows["mlx"]["enable"] == "pip install 'adamspec[mlx]'"
    assert rows["paddle"]["enable"] == "pip install 'adamspec[paddle]'"
    # 3 configurations on 3 backends, Adam and AdamW compiled on tensorflow and jax, and
    # Adam and AdamW under the two mixed policies on 3 backends
    assert rows["keras"]["implementations"] == 25
    assert rows["paddle"]["implementations"] == 4
    for row in rows.values():
        assert row["available"] == bool(row["version"]) or row["name"] == "gpu"


def test_require_names_each_missing_item_and_exits_1(capsys, monkeypatch):
    real = frameworks.availability

    def without_onnx(name: str) -> frameworks.Availability:
        if name == "onnx":
            return frameworks.Availability(name, False, None, "onnx not installed")
        return real(name)

    monkeypatch.setattr(doctor, "availability", without_onnx)
    code, _, err = _cli(["doctor", "--require", "numba", "onnx"], capsys)
    assert code == 1
    assert err.strip().splitlines() == [
        "adamspec doctor: missing: onnx (pip install 'adamspec[onnx]')"
    ]


def test_require_of_what_is_there_exits_0(capsys):
    code, _, err = _cli(["doctor", "--require", "numba", "cc"], capsys)
    assert (code, err) == (0, "")


def test_require_of_an_unknown_name_is_one_line_listing_the_known_ones(capsys):
    code, out, err = _cli(["doctor", "--require", "nosuch"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("adamspec doctor: error: --require 'nosuch' is unknown; allowed: torch, ")
    assert "tfjs" in err and "gpu" in err


def test_setup_tfjs_without_npm_is_one_line_and_exit_2(tmp_path):
    bin_only = tmp_path / "bin"
    bin_only.mkdir()
    env = {**os.environ, "PATH": str(bin_only), "ADAMSPEC_TFJS_HOME": str(tmp_path / "tfjs")}
    done = subprocess.run(
        [sys.executable, "-m", "adamspec.harness.cli", "setup", "tfjs"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "Node.js >= 18 and npm are needed for TF.js" in done.stderr


@pytest.mark.needs("tfjs")
def test_setup_tfjs_installs_the_pinned_packages_into_a_home_of_ones_choice(tmp_path):
    if shutil.which("npm") is None and not frameworks_required():
        pytest.skip("npm not on PATH")  # CI and make test have it: the install below fails
    home = tmp_path / "tfjs home"
    done = subprocess.run(
        [ADAMSPEC, "setup", "tfjs", "--home", str(home)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"export ADAMSPEC_TFJS_HOME={home}" in done.stdout
    env = {**os.environ, "ADAMSPEC_TFJS_HOME": str(home)}
    rows = json.loads(
        subprocess.run(
            [ADAMSPEC, "doctor", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    tfjs = next(r for r in rows if r["name"] == "tfjs")
    assert tfjs["available"], tfjs
    assert tfjs["detail"] == str(home / "node_modules")
    assert tfjs["version"] == " ".join(
        f"{k.split('/')[-1]} {v}" for k, v in node_packages.pinned_versions().items()
    )


def test_without_the_packages_tfjs_rows_are_skipped_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMSPEC_TFJS_HOME", str(tmp_path / "empty"))
    tables = run(RunConfig(implementations=("tfjs.*",), suite="quick", separation=False),
                 progress=lambda line: None)  # fmt: skip
    assert tables.summary and {r["verdict"] for r in tables.summary} == {"skipped"}
    detail = tables.summary[0]["detail"]
    assert "@tensorflow/tfjs-core 4.22.0 missing in" in detail
    assert detail.endswith("run `adamspec setup tfjs`")
