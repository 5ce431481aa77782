"""TensorFlow.js ``tf.train.adam`` on the CPU backend, driven in a long-lived Node process.

The Python side speaks JSON lines to ``tfjs_worker.js`` (protocol documented at the top
of that file): one request per line, one response per line, float32 arrays as base64 of
their little-endian bytes so that every value crosses the pipe bit for bit.

Hyperparameters are sent as the binary64 nearest the exact decimal, i.e. what a user
writing ``tf.train.adam(0.001, 0.9, 0.999, 1e-7)`` in JavaScript passes. TF.js rounds
them to float32 where it builds scalar tensors (``mul(m, beta1)``, ``-learningRate``,
``+ epsilon``) but forms ``1 - beta1`` and ``1 - beta2`` in binary64 *before* that
rounding, so those two coefficients are fl32(1 - beta) rather than 1 - fl32(beta).

State extras ``beta1_power``/``beta2_power`` are the powers the last step divided by
(``beta^step``; 1 at step 0). TF.js's private ``accBeta1``/``accBeta2`` hold the power the
*next* step will use, so the two differ by one float32 multiplication by beta; the worker
tracks the used value and rebuilds ``accBeta = fl32(power * beta)`` on ``set_state``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from adamspec.impl import node_packages
from adamspec.impl._constants import round_fraction
from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported
from adamspec.impl.adapters.repro import (
    Program,
    StepToReproduce,
    float32_literal,
    python_float,
)
from adamspec.spec.formats import FLOAT32
from adamspec.spec.hyper import Schedule

WORKER = Path(__file__).with_name("tfjs_worker.js")
#: Seconds to wait for the worker to start (loading tfjs-core) or answer one request.
TIMEOUT_S = 60.0
STDERR_TAIL = 40


def _encode(x: Any) -> str:
    arr = np.ascontiguousarray(np.asarray(x, dtype="<f4"))
    return base64.b64encode(arr.tobytes()).decode("ascii")


def _decode(text: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
    return arr.reshape(shape)


def _drain(proc: subprocess.Popen, tail: deque[str]) -> None:
    """Keep the last lines of the worker's stderr (a pipe left unread could fill and block)."""
    for line in proc.stderr:
        tail.append(line.rstrip("\n"))


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the worker (also the weakref.finalize callback for leaked adapters)."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


class TfjsAdam(Adapter):
    """``tf.train.adam(lr, beta1, beta2, epsilon)`` with one ``tf.variable`` per tensor."""

    framework = "tfjs"
    dtypes = ("float32",)  # the tfjs cpu backend computes in float32 only
    sparse = False

    def _build(self) -> None:
        self._check_hyper()
        node = shutil.which("node")
        if node is None:  # availability() checked this, but PATH may change
            raise RuntimeError("tfjs adapter: node not found on PATH")
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL)
        # require() finds the packages in their user-level home, wherever adamspec is installed
        env = {**os.environ, "NODE_PATH": str(node_packages.node_modules())}
        self._proc = subprocess.Popen(
            [node, str(WORKER)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self._finalizer = weakref.finalize(self, _stop, self._proc)
        # The drain thread must not reference self, or a leaked adapter is never collected.
        threading.Thread(target=_drain, args=(self._proc, self._stderr), daemon=True).start()
        self._schedule = isinstance(self.hyper.lr, Schedule)
        self._step = 0
        try:
            # Floats are the binary64 nearest each exact value (what a JS literal denotes).
            reply = self._call(
                "init",
                lr=float(self.hyper.lr_at(1)),
                beta1=float(self.hyper.beta1),
                beta2=float(self.hyper.beta2),
                epsilon=float(self.hyper.eps),
                shapes=[list(s) for s in self.shapes],
            )
            if reply.get("backend") != "cpu":
                raise Unsupported(f"tfjs backend is {reply.get('backend')!r}, expected 'cpu'")
        except BaseException:
            self._finalizer()
            raise
        self.version = reply.get("core", self.version)

    def _check_hyper(self) -> None:
        h = self.hyper
        if h.eps_root or h.weight_decay:
            raise Unsupported("tf.train.adam has no eps_root and no weight decay")
        if h.clipnorm is not None or h.clipvalue is not None or h.global_clipnorm is not None:
            raise Unsupported("tf.train.adam has no gradient clipping")
        if h.use_ema:
            raise Unsupported("tf.train.adam has no EMA of the parameters")

    # -- transport -------------------------------------------------------------------
    def _fail(self, what: str) -> RuntimeError:
        tail = "\n".join(self._stderr) or "(no stderr)"
        return RuntimeError(f"tfjs worker {what}; node stderr tail:\n{tail}")

    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        proc = self._proc
        if proc.poll() is not None:
            raise self._fail(f"is not running (exit code {proc.returncode}) for op={op}")
        try:
            proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            proc.wait(timeout=5)
            raise self._fail(f"died (exit code {proc.returncode}) before op={op}") from None
        line = self._readline(proc)
        if not line:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            raise self._fail(f"died (exit code {proc.returncode}) during op={op}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"tfjs worker op={op} failed: {reply.get('error')}")
        return reply

    def _readline(self, proc: subprocess.Popen) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(TIMEOUT_S)
        if reader.is_alive():
            proc.kill()
            raise self._fail(f"gave no answer within {TIMEOUT_S:.0f} s")
        return result[0] if result else ""

    # -- protocol ----------------------------------------------------------------------
    def _default_power(self, beta: Any, step: int) -> np.ndarray:
        # No power given: beta^step for beta as TF.js holds it (float32), rounded once.
        held = round_fraction(Fraction(beta), FLOAT32)
        return np.asarray(float(round_fraction(held**step, FLOAT32)), np.float32)

    def set_state(self, state: State) -> None:
        if state.v_max is not None:
            raise Unsupported("tf.train.adam has no AMSGrad (v_max)")
        p1 = state.extras.get("beta1_power")
        p2 = state.extras.get("beta2_power")
        self._call(
            "set_state",
            params=[_encode(x) for x in state.params],
            m=[_encode(x) for x in state.m],
            v=[_encode(x) for x in state.v],
            step=int(state.step),
            beta1_power=_encode(
                self._default_power(self.hyper.beta1, state.step) if p1 is None else p1
            ),
            beta2_power=_encode(
                self._default_power(self.hyper.beta2, state.step) if p2 is None else p2
            ),
        )
        self._step = int(state.step)

    def get_state(self) -> State:
        reply = self._call("get_state")
        return State(
            params=[_decode(t, s) for t, s in zip(reply["params"], self.shapes, strict=True)],
            m=[_decode(t, s) for t, s in zip(reply["m"], self.shapes, strict=True)],
            v=[_decode(t, s) for t, s in zip(reply["v"], self.shapes, strict=True)],
            v_max=None,
            step=int(reply["step"]),
            extras={
                "beta1_power": _decode(reply["beta1_power"], ()),
                "beta2_power": _decode(reply["beta2_power"], ()),
            },
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        fields: dict[str, Any] = {"grads": [_encode(g) for g in grads]}
        if self._schedule:  # tf.train.adam has a fixed rate: set its learningRate field
            fields["lr"] = float(self.hyper.lr_at(self._step + 1))
        self._call("step", **fields)
        self._step += 1

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._call("close")
            except RuntimeError:
                pass
        self._finalizer()

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """A Node.js script: ``tf.train.adam`` on the CPU backend, its weights and private
        beta-power accumulators set as the worker sets them, one ``applyGradients``."""
        h, before = step.hyper, step.before
        p1 = float32_literal(np.asarray(before.extras["beta1_power"], np.float32))
        p2 = float32_literal(np.asarray(before.extras["beta2_power"], np.float32))
        body = [
            "await tf.setBackend('cpu');",
            "await tf.ready();",
            f"const beta1 = {python_float(h.beta1)};",
            f"const beta2 = {python_float(h.beta2)};",
            f"const optimizer = tf.train.adam({python_float(step.lr)}, beta1, beta2, "
            f"{python_float(h.eps)});",
            f"const p = tf.variable({float32_literal(before.params[0])}, true, 'adamspec/p0');",
            "await optimizer.setWeights([",
            f"  {{name: 'iter', tensor: tf.scalar({step.step}, 'int32')}},",
            f"  {{name: 'adamspec/p0/m', tensor: {float32_literal(before.m[0])}}},",
            f"  {{name: 'adamspec/p0/v', tensor: {float32_literal(before.v[0])}}},",
            "]);",
            "// accBeta1/accBeta2 (private) hold the bias-correction powers the next step divides",
            "// by; TF.js forms them as float32 products, as adamspec's worker sets them",
            f"optimizer.accBeta1.assign(tf.mul({p1}, beta1));",
            f"optimizer.accBeta2.assign(tf.mul({p2}, beta2));",
            f"optimizer.applyGradients({{'adamspec/p0': {float32_literal(step.grads[0])}}});",
            "const weights = await optimizer.getWeights();  // [iter, m, v]",
        ]
        results = {
            "param": "p.dataSync()",
            "m": "weights[1].tensor.dataSync()",
            "v": "weights[2].tensor.dataSync()",
        }
        imports = [
            "const tf = require('@tensorflow/tfjs-core');",
            "require('@tensorflow/tfjs-backend-cpu');",
        ]
        helpers = [
            "// float32 values written as their IEEE-754 bits: exact",
            "function f32(bits, shape) {",
            "  return tf.tensor(new Float32Array(new Uint32Array(bits).buffer), shape, 'float32');",
            "}",
        ]
        usage = [
            "JavaScript (Node.js), not Python: run with",
            "  NODE_PATH=~/.cache/adamspec/tfjs/node_modules node <this file>",
            "(the folder `adamspec setup tfjs` installed; `adamspec doctor` shows it)",
        ]
        return Program(imports, helpers, body, results, language="javascript", usage=usage)


INFOS = [AdapterInfo("tfjs.adam", "tfjs", "tfjs.adam", "adamspec.impl.adapters.tfjs:TfjsAdam")]
