"""Checks of the environment that `make setup` builds: pins, torch build, TF.js under Node."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from needs import PINNED, frameworks_required, missing

from adamspec.impl import node_packages

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
TORCH_PIN = "2.13.0"
PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = PIN_RE.match(line)
        assert m, f"constraints.txt: not an exact pin: {raw!r}"
        pins[_canon(m.group(1))] = m.group(2)
    return pins


def test_constraints_pin_everything_exactly():
    pins = _read_pins()
    for name in (
        "torch",
        "tensorflow-cpu",
        "tf-keras",
        "keras",
        "jax",
        "jaxlib",
        "optax",
        "numpy",
        "mpmath",
        "gmpy2",
        "onnx",
        "mlx",
        "mlx-cpu",
        "paddlepaddle",
        "pytest",
        "ruff",
    ):
        assert name in pins, f"constraints.txt lacks a pin for {name}"
    # The local CPU wheel is torch-2.13.0+cpu; the pin must be the public version so that
    # pip resolves it to that wheel (a bare `torch` would pull a multi-GB CUDA build).
    assert pins["torch"] == TORCH_PIN
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["torch"] == [f"torch=={TORCH_PIN}"]


def test_installed_versions_match_constraints():
    mismatched = []
    for name, want in _read_pins().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            if frameworks_required():
                mismatched.append(f"{name}: not installed, constraints.txt {want}")
            continue  # a user's own pytest without the extras: nothing to compare
        if have.split("+", 1)[0] != want:
            mismatched.append(f"{name}: installed {have}, constraints.txt {want}")
    assert not mismatched, "environment out of sync, rerun `make setup`:\n" + "\n".join(mismatched)


@pytest.mark.needs("torch")
def test_torch_is_the_pinned_cpu_build():
    import torch

    assert torch.__version__.split("+", 1)[0] == TORCH_PIN
    assert torch.version.cuda is None, f"CUDA torch build installed ({torch.version.cuda})"
    x = torch.tensor([1.0], requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    (x * x).sum().backward()
    opt.step()
    assert abs(x.item() - 0.9) < 1e-6


_TFJS_SCRIPT = r"""
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
  // tfjs-core alone registers neither gradient functions nor chained ops (x.square()),
  // so feed the gradient explicitly, as the harness does: d(x^2)/dx = 2 at x = 1.
  const x = tf.variable(tf.scalar(1.0));
  const opt = tf.train.adam(0.1, 0.9, 0.999, 1e-8);
  opt.applyGradients({[x.name]: tf.scalar(2.0)});
  console.log(JSON.stringify({
    backend: tf.getBackend(),
    core: tf.version_core,
    cpu: require('@tensorflow/tfjs-backend-cpu/package.json').version,
    dtype: x.dtype,
    x: x.dataSync()[0],
  }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.needs("tfjs")
def test_tfjs_adam_one_step_under_node():
    node = shutil.which("node")
    proc = subprocess.run(
        [node, "-e", _TFJS_SCRIPT],
        env={**os.environ, "NODE_PATH": str(node_packages.node_modules())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    wanted = json.loads((node_packages.MANIFEST_DIR / "package.json").read_text())["dependencies"]
    assert out["core"] == wanted["@tensorflow/tfjs-core"]
    assert out["cpu"] == wanted["@tensorflow/tfjs-backend-cpu"]
    assert out["backend"] == "cpu"
    assert out["dtype"] == "float32"
    # g=2: m_hat=2, v_hat=4, step = 0.1 * 2 / (2 + 1e-8).
    assert abs(out["x"] - 0.9) < 1e-6, out


def test_node_packages_pinned_exactly():
    pkg = json.loads((node_packages.MANIFEST_DIR / "package.json").read_text())
    lock = json.loads((node_packages.MANIFEST_DIR / "package-lock.json").read_text())
    for name, ver in pkg["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", ver), f"{name} not pinned exactly: {ver}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == ver


@pytest.mark.skipif(not frameworks_required(), reason="only CI and `make test` require them all")
def test_every_pinned_framework_is_installed():
    """The install `make test` and CI made holds every framework the suite drives."""
    assert not missing(*PINNED), "; ".join(missing(*PINNED))
