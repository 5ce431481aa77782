"""Running a counterexample script as a user would, and reading what it printed.

Shared by tests/test_counterexample.py (scripts of searched counterexamples) and
tests/test_repro_scripts.py (one fixed step per adapter).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from adamspec.harness.counterexample import Counterexample
from adamspec.impl import node_packages

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
#: Where the TF.js adapter's worker finds @tensorflow/* (it runs with cwd at the checkout).
#: Seconds one script may take (a framework import is the slow part).
SCRIPT_TIMEOUT_S = 180


def run_script(path: Path) -> str:
    """Run a script as a user would (``python file.py``, ``node file.js``); its stdout.

    Python runs from the checkout's ``.venv`` with ``tests/`` on ``PYTHONPATH`` (the
    toy adapters live there); JavaScript with ``NODE_PATH`` at the TF.js packages.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    if path.suffix == ".js":
        command = ["node", str(path)]
        env["NODE_PATH"] = str(node_packages.node_modules())
    else:
        command = [str(PYTHON) if PYTHON.exists() else sys.executable, str(path)]
    done = subprocess.run(
        command, cwd=path.parent, env=env, capture_output=True, text=True,
        timeout=SCRIPT_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def printed(stdout: str, component: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The implementation's and the oracle's values a script printed for ``component``,
    and its verdict (``matches`` or ``DIFFERS from``)."""
    match = re.search(
        rf"^{component}: got \[(.*)\] (matches|DIFFERS from) adamspec oracle \[(.*)\]$",
        stdout,
        re.M,
    )
    assert match, f"no verdict line for {component}:\n{stdout}"

    def parse(text: str) -> np.ndarray:
        return np.array([float.fromhex(h) for h in text.split(", ")], dtype=np.float64)

    return parse(match.group(1)), parse(match.group(3)), match.group(2)


def bits(a: np.ndarray) -> np.ndarray:
    """The binary64 bits of every value (so -0.0 and NaN payloads compare exactly)."""
    return np.asarray(a, dtype=np.float64).ravel().view(np.int64)


def component(ce: Counterexample, name: str) -> np.ndarray:
    """What the adapter computed for ``name`` in the counterexample's step."""
    after = ce.after
    arrays = {"param": after.params, "m": after.m, "v": after.v, "v_max": after.v_max,
              "master": after.master}  # fmt: skip
    return arrays[name][0]


def assert_script_reproduces(ce: Counterexample, stdout: str) -> None:
    """One verdict line per measured component, printing bit for bit what the adapter
    computed and what the oracle gives, with the verdict that comparison implies."""
    for name in ce.oracle:
        got, oracle, verdict = printed(stdout, name)
        assert (bits(got) == bits(component(ce, name))).all(), (name, got)
        assert (bits(oracle) == bits(ce.oracle[name])).all(), (name, oracle)
        same = bits(got).tolist() == bits(oracle).tolist()
        assert verdict == ("matches" if same else "DIFFERS from"), (name, verdict)
        if ce.budget.multiple(name, ce.errors[name].ulp, ce.errors[name].scaled) > 1:
            assert verdict == "DIFFERS from", (name, stdout)
