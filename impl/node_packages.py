"""The TF.js Node packages: where they live, whether they are there, how to install them.

TF.js runs under Node.js from npm packages (``@tensorflow/tfjs-core`` and
``@tensorflow/tfjs-backend-cpu``), pinned by the lock file shipped inside the package
(``adamspec/impl/adapters/tfjs_node/package-lock.json``). They are installed once per user,
outside any checkout or site-packages, into :func:`tfjs_home`:

* ``$ADAMSPEC_TFJS_HOME`` when set (a shared or read-only location a team prepares);
* otherwise ``$XDG_CACHE_HOME/adamspec/tfjs`` (``~/.cache/adamspec/tfjs``).

``adamspec setup tfjs`` installs them there with ``npm ci`` from the pinned lock file (the
Makefile runs it in a checkout); the TF.js adapter runs its worker with ``NODE_PATH`` at
``<home>/node_modules``. Nothing here imports a framework or starts Node.js except
:func:`install`, so checking availability costs a few file reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The npm project (package.json and the pinned package-lock.json), shipped as package data.
MANIFEST_DIR = Path(__file__).resolve().parent / "adapters" / "tfjs_node"
#: The packages the TF.js adapter requires, as the lock file names them.
PACKAGES = ("@tensorflow/tfjs-core", "@tensorflow/tfjs-backend-cpu")
#: The command that installs them, for skip reasons and ``adamspec doctor``.
SETUP_COMMAND = "adamspec setup tfjs"
HOME_VARIABLE = "ADAMSPEC_TFJS_HOME"


class NodeMissing(RuntimeError):
    """Node.js or npm is not on PATH; the message says what is needed."""


def tfjs_home() -> Path:
    """Where the TF.js packages are (or would be) installed (see the module docstring)."""
    explicit = os.environ.get(HOME_VARIABLE, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "adamspec" / "tfjs"


def node_modules() -> Path:
    """The ``node_modules`` folder the TF.js worker resolves ``require()`` in."""
    return tfjs_home() / "node_modules"


def pinned_versions() -> dict[str, str]:
    """Package -> exact version, from the shipped package.json."""
    manifest = json.loads((MANIFEST_DIR / "package.json").read_text(encoding="utf-8"))
    return {name: manifest["dependencies"][name] for name in PACKAGES}


@dataclass(frozen=True)
class TfjsStatus:
    """Whether Node.js and the pinned packages are usable, and what to run if not."""

    node: str | None  # node's version, None when it is not on PATH
    installed: dict[str, str]  # package -> installed version (only those found)
    home: Path

    @property
    def ready(self) -> bool:
        return self.node is not None and self.installed == pinned_versions()

    @property
    def problem(self) -> str | None:
        """What is missing (None when ready)."""
        if self.node is None:
            return "node not found on PATH"
        for name, version in pinned_versions().items():
            have = self.installed.get(name)
            if have != version:
                found = f"is {have}" if have else "missing"
                return f"{name} {version} {found} in {self.home / 'node_modules'}"
        return None

    @property
    def reason(self) -> str | None:
        """Why TF.js cannot run here, naming what fixes it (None when ready)."""
        if self.node is None:
            return f"node not found on PATH (install Node.js >= 18 and npm, then `{SETUP_COMMAND}`)"
        problem = self.problem
        return None if problem is None else f"{problem}: run `{SETUP_COMMAND}`"


def _version_of(command: str) -> str | None:
    path = shutil.which(command)
    if path is None:
        return None
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip().lstrip("v") or None


def node_version() -> str | None:
    """``node --version`` without the ``v``, None when Node.js is not on PATH."""
    return _version_of("node")


def npm_version() -> str | None:
    """``npm --version``, None when npm is not on PATH."""
    return _version_of("npm")


def status() -> TfjsStatus:
    """Node.js and the installed versions of :data:`PACKAGES` under :func:`tfjs_home`."""
    installed = {}
    for name in PACKAGES:
        manifest = node_modules() / name / "package.json"
        try:
            installed[name] = json.loads(manifest.read_text(encoding="utf-8"))["version"]
        except (OSError, ValueError, KeyError):
            continue
    return TfjsStatus(node_version(), installed, tfjs_home())


def install(home: Path | None = None, *, quiet: bool = True) -> TfjsStatus:
    """Install the pinned packages into ``home`` (default :func:`tfjs_home`) with ``npm ci``.

    Idempotent: when the pinned versions are already there nothing runs. Raises
    :class:`NodeMissing` without Node.js or npm, ``subprocess.CalledProcessError`` when npm
    fails (its output is on the caller's terminal).
    """
    if home is not None:
        os.environ[HOME_VARIABLE] = str(home)
    current = status()
    if current.ready:
        return current
    npm = shutil.which("npm")
    if current.node is None or npm is None:
        raise NodeMissing(
            "Node.js >= 18 and npm are needed for TF.js (install them, e.g. from "
            "https://nodejs.org or your system's packages), then rerun "
            f"`{SETUP_COMMAND}`"
        )
    target = tfjs_home()
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(MANIFEST_DIR / name, target / name)
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
    if quiet:
        command.append("--loglevel=error")
    subprocess.run(command, cwd=target, check=True)
    return status()


__all__ = [
    "HOME_VARIABLE",
    "MANIFEST_DIR",
    "PACKAGES",
    "SETUP_COMMAND",
    "NodeMissing",
    "TfjsStatus",
    "install",
    "node_modules",
    "node_version",
    "npm_version",
    "pinned_versions",
    "status",
    "tfjs_home",
]
