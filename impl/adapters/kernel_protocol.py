"""Bring your own kernel: the smallest protocol a user's Adam must follow to be checked.

Two forms, both given to ``adamspec check`` as ``module:object`` or ``path/file.py:object``.

**Functional** (any callable): one tensor per call, NumPy in, NumPy out::

    def step(param, grad, state, hyper):
        # param, grad: arrays of the checked dtype; state: KernelState(m, v, v_max, step)
        # with step = steps taken so far; hyper: KernelHyper with floats, lr for this step
        ...
        return new_param, KernelState(m, v, v_max, state.step + 1)   # or a dict

A kernel that needs every tensor at once (a global clip norm) sets the attribute
``multi_tensor = True``: it then gets lists of arrays (params, grads, state.m, ...).

**Stateful object** (a class): ``cls(hyper)`` (a :class:`KernelHyper`, lr of step 1),
then ``obj.step(params, grads) -> params`` (lists, one array per tensor),
``obj.get_state() -> KernelState`` and ``obj.set_state(KernelState)`` (lists per tensor).

**Sparse rows** (either form). A kernel with the attribute ``sparse = True`` also runs
the sparse problems (an embedding table's gradient): there, the gradient of that tensor is
a :class:`adamspec.spec.SparseRows` instead of an array::

    grad.indices    # int64 array (n,): the rows looked up; may repeat, not sorted
    grad.values     # array (n, *param.shape[1:]) of the checked dtype: one row per index
    grad.num_rows   # param.shape[0]

(the other tensors' gradients stay dense). The kernel returns the whole param and state as
for a dense step. Whether rows absent from ``indices`` keep their moments and params
(lazy, as ``torch.optim.SparseAdam``) or decay as if their gradient were zero (dense-
equivalent, as TensorFlow and Keras), and whether repeated rows are summed before the
square, is what the check measures against the claimed variant's ``sparse`` and
``duplicates`` axes. Without the attribute a kernel declines the sparse problems (skipped).

**Mixed precision** (either form). A kernel that keeps its arrays in more than one dtype
declares it with the attribute ``precision`` on the function or class: a dict of roles,
``precision = {"state": "float32", "master": "float32"}`` (roles ``grad``, ``state``: m, v
and v_max, ``master``; the param dtype is the checked ``--dtype``), or a name that fixes
the param dtype too: a preset (``"bf16-fp32state"``, ``"bf16-fp32master"``,
``"fp16-fp32master"``) or ``"param=bfloat16,state=float32,master=float32"``
(:mod:`adamspec.spec.precision`). ``adamspec check`` says the same with ``--precision``,
``--grad-dtype``, ``--state-dtype`` and ``--master-dtype``; a role said by both must be said
alike (:func:`kernel_precision`). The kernel then gets the param in the param dtype, the
gradient in the grad dtype, ``state.m``/``v``/``v_max`` in the state dtype and, where a
master is kept, ``state.master``: at the start an exact copy of the params in the master
dtype. It returns the master beside m and v (``KernelState(m, v, v_max, step, master)``);
the harness measures it like the param, and the param must be the new master rounded to
the param dtype (``spec/ADAM.md``, "Mixed precision").

Returned arrays may be NumPy, CuPy or torch (CUDA) tensors, or anything ``np.asarray``
reads; they are converted at this boundary and checked: a wrong shape, a dtype other than
its role's, or a missing master where one is kept raises :class:`KernelContractError`
(reported as an error of that case, naming the array and its role; NaN results are
measured, not errors). Raising NotImplementedError declines a configuration (the case is reported
as skipped, with the message).

**Where it runs.** The harness runs the kernel in a worker process with a per-call timeout
(:func:`register_target`), so a crash or a hang ends only that case. The kernel's file or
module is executed once per worker process. Everything it prints, from Python or from C,
C++ or CUDA code writing to file descriptors 1 and 2, is captured apart from the harness's
messages, and its first lines are attached to the case (``kernel_output`` in summary.csv).
A kernel whose code raises while it loads (an import or a build step failing) is an error
of every case, with the full reason; a TARGET that names nothing loadable (no such file,
module or object) is a usage error.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import (
    REGISTRY,
    Adapter,
    AdapterInfo,
    KernelLoadError,
    State,
    Unsupported,
    numpy_dtype,
    register,
    torch_to_numpy,
)
from adamspec.spec.formats import FORMATS
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper
from adamspec.spec.precision import ROLES, Precision, PrecisionError, precision_named


class TargetError(ValueError):
    """A TARGET that cannot be loaded; the message is one line naming it."""


class KernelContractError(RuntimeError):
    """A kernel result that breaks the protocol (shape, dtype, missing state)."""


@dataclass(frozen=True)
class KernelState:
    """Optimizer state handed to and returned by a kernel: arrays (lists of arrays for
    multi-tensor and object kernels); ``v_max`` None unless AMSGrad; ``step`` = steps taken;
    ``master`` the master weights, None unless the precision keeps them."""

    m: Any
    v: Any
    v_max: Any = None
    step: int = 0
    master: Any = None


@dataclass(frozen=True)
class KernelHyper:
    """Hyperparameters as the binary64 floats a user types; ``lr`` is this step's rate."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    eps_root: float


def kernel_hyper(hyper: Hyper, t: int) -> KernelHyper:
    return KernelHyper(
        float(hyper.lr_at(t)),
        float(hyper.beta1),
        float(hyper.beta2),
        float(hyper.eps),
        float(hyper.weight_decay),
        float(hyper.eps_root),
    )


def _parts(target: str) -> tuple[str, str, bool]:
    """``target`` as (where, attribute, whether ``where`` is a file path)."""
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise TargetError(f"TARGET {target!r} must be module:object or path/to/file.py:object")
    return where, attr, where.endswith(".py") or os.sep in where or "/" in where


def check_target(target: str) -> None:
    """What can be checked of ``target`` without running any of its code: its form, and that
    a file it names exists (raises :class:`TargetError`)."""
    where, _, is_path = _parts(target)
    if is_path and not os.path.isfile(where):
        raise TargetError(f"TARGET {target!r}: no such file {where!r}")


#: What :func:`load_target` executed in this process, by file path or module name: the
#: module, or the KernelLoadError its execution raised (a kernel file runs once per process).
_LOADED: dict[str, ModuleType | KernelLoadError] = {}


def load_target(target: str) -> Any:
    """The object ``target`` names: ``package.module:attr`` or ``path/to/file.py:attr``.

    The file or module is executed once per process: a second load returns the same object,
    or raises the same error. A TARGET that names nothing loadable (bad form, missing file
    or module, missing or non-callable attribute) raises :class:`TargetError`; code that
    raises while it is executed raises :class:`KernelLoadError` with the full reason.
    """
    check_target(target)
    where, attr, is_path = _parts(target)
    key = os.path.abspath(where) if is_path else where
    if key not in _LOADED:
        try:
            _LOADED[key] = _execute_file(target, key) if is_path else _import_module(target, where)
        except KernelLoadError as exc:
            _LOADED[key] = exc
    module = _LOADED[key]
    if isinstance(module, KernelLoadError):
        raise module
    try:
        obj = getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
        raise TargetError(
            f"TARGET {target!r}: {where!r} has no {attr!r}; it defines {', '.join(public)}"
        ) from None
    if not callable(obj):
        raise TargetError(f"TARGET {target!r}: {attr!r} is a {type(obj).__name__}, not callable")
    return obj


def _execute_file(target: str, path: str) -> ModuleType:
    name = f"adamspec_kernel_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"TARGET {target!r}: {path!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise KernelLoadError(_load_failure(f"importing {path!r}", exc, path)) from None
    return module


def _import_module(target: str, where: str) -> ModuleType:
    if os.getcwd() not in sys.path:  # a user's module next to where they run adamspec
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (where == exc.name or where.startswith(exc.name + ".")):
            raise TargetError(f"TARGET {target!r}: cannot import {where!r} ({exc})") from None
        raise KernelLoadError(_load_failure(f"importing {where!r}", exc, None)) from None
    except Exception as exc:
        raise KernelLoadError(_load_failure(f"importing {where!r}", exc, None)) from None


def _load_failure(what: str, exc: BaseException, path: str | None) -> str:
    """The full reason a kernel did not load, on one line: the exception with every line of
    its message, and where it was raised (the kernel's own line, and the innermost frame
    when that is elsewhere, e.g. in ctypes)."""
    message = " | ".join(line.rstrip() for line in str(exc).strip().splitlines()) or "(no message)"
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f.filename == path] if path else []
    own = own or [f for f in frames if "importlib" not in f.filename]
    shown = [f for f in (own[-1] if own else None, frames[-1] if frames else None) if f]
    places = list(dict.fromkeys(f"{_short(f.filename)}:{f.lineno}" for f in shown))
    where = f" (at {', raised in '.join(places)})" if places else ""
    return f"cannot load the kernel: {what} raised {type(exc).__name__}: {message}{where}"


def _short(path: str) -> str:
    """A source file as a reader recognizes it: its folder and name (ctypes/__init__.py)."""
    return "/".join(path.replace(os.sep, "/").split("/")[-2:])


def probe_target(target: str) -> dict[str, Any]:
    """Load ``target`` in this process (a worker, for :func:`register_target`) and say what
    it is: ``form`` "class" or "function", and ``precision`` its declaration as plain data
    (:func:`declaration_of`). Raises like :func:`load_target`."""
    obj = load_target(target)
    return {
        "form": "class" if inspect.isclass(obj) else "function",
        "precision": declaration_of(obj),
    }


# -- mixed precision: what a kernel declares, what the command line says ------------------

#: The roles a kernel's ``precision`` dict sets; the param dtype is the checked ``--dtype``.
DECLARED_ROLES = ("grad", "state", "master")


def declaration_of(obj: Any) -> str | dict[str, Any] | None:
    """A kernel's ``precision`` attribute as data that crosses a process boundary: None
    (nothing declared), a name (a preset such as ``"bf16-fp32master"``, a dtype or
    ``role=dtype,...``), a dict of roles, or the repr of anything else (which
    :func:`kernel_precision` then rejects, naming it)."""
    declared = getattr(obj, "precision", None)
    if declared is None or isinstance(declared, str):
        return declared
    if isinstance(declared, Mapping):
        return {str(k): None if v is None else str(v) for k, v in declared.items()}
    return repr(declared)


def _declared_roles(declared: str | dict[str, Any]) -> dict[str, str | None]:
    """The roles a declaration says (every role for a name: it fixes the param dtype)."""
    if isinstance(declared, str):
        return _every_role(precision_named(declared))
    unknown = [r for r in declared if r not in DECLARED_ROLES]
    if unknown:
        raise PrecisionError(
            f"role {unknown[0]!r} is not one a kernel declares; allowed: "
            f"{', '.join(DECLARED_ROLES)} (the param dtype is --dtype; a preset name fixes it too)"
        )
    roles = {r: None if r == "master" and v in (None, "none") else v for r, v in declared.items()}
    for role, value in roles.items():
        if value is not None and value not in FORMATS:
            raise PrecisionError(f"{role}={value!r} is not a dtype; allowed: {', '.join(FORMATS)}")
    return roles


def _every_role(precision: Precision) -> dict[str, str | None]:
    return {role: getattr(precision, role) for role in ROLES}


def kernel_precision(
    declared: str | dict[str, Any] | None = None,
    *,
    dtype: str | None = None,
    precision: str | None = None,
    grad_dtype: str | None = None,
    state_dtype: str | None = None,
    master_dtype: str | None = None,
) -> Precision:
    """The precision a kernel is checked in, from its declaration and the command line.

    Each source says some roles: the declaration (a dict: the roles it names; a name:
    every role), ``precision`` (``--precision``: every role), and each of ``dtype``
    (``--dtype``: the param), ``grad_dtype``, ``state_dtype``, ``master_dtype``
    (``"none"``: no master). A role said twice must be said alike, else a
    :class:`PrecisionError` names both; a role nobody says takes its default (param
    float32, grad and state the param's dtype, no master). An unknown role, dtype or
    preset, or a master narrower than the param, is a :class:`PrecisionError` too.
    """
    sources: list[tuple[str, dict[str, str | None]]] = []
    if declared is not None:
        try:
            roles = _declared_roles(declared)
        except PrecisionError as exc:
            raise PrecisionError(f"the kernel's precision = {declared!r}: {exc}") from None
        sources.append((f"the kernel's precision = {declared!r}", roles))
    if precision is not None:
        sources.append((f"--precision {precision}", _every_role(precision_named(precision))))
    flags = {"param": dtype, "grad": grad_dtype, "state": state_dtype, "master": master_dtype}
    for role, value in flags.items():
        if value is not None:
            flag = "--dtype" if role == "param" else f"--{role}-dtype"
            said = None if role == "master" and value == "none" else value
            sources.append((f"{flag} {value}", {role: said}))
    said_by: dict[str, tuple[str, str | None]] = {}
    for who, roles in sources:
        for role, value in roles.items():
            first = said_by.setdefault(role, (who, value))
            if first[1] != value:
                raise PrecisionError(
                    f"{who} makes {role} {value or 'none'}, but {first[0]} makes it "
                    f"{first[1] or 'none'}; say each role once, or alike"
                )
    value = {role: said[1] for role, said in said_by.items()}
    return Precision(
        value.get("param") or "float32",
        grad=value.get("grad") or "",
        state=value.get("state") or "",
        master=value.get("master"),
    )


def kernel_declaration(name: str) -> str | dict[str, Any] | None:
    """What the kernel registered as ``name`` (:func:`register_target`) declares as its
    precision, as :func:`declaration_of` gives it (None if it did not load)."""
    options = REGISTRY[name].options
    return options.get("inner", options).get("declared")


def to_numpy(x: Any) -> np.ndarray:
    """An array from NumPy, CuPy (``.get()``), torch (``.detach().cpu()``) or array-likes."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch, CUDA or not
        return torch_to_numpy(x)
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def _field(state: Any, name: str) -> Any:
    if isinstance(state, dict):
        return state.get(name)
    return getattr(state, name, None)


class KernelAdapter(Adapter):
    """Drives a user kernel (either form) behind the adapter protocol.

    options: ``target`` (``module:object`` or ``file.py:object``) and ``amsgrad`` (whether
    the kernel keeps ``v_max``: the claimed variant's AMSGrad axis). It runs in any
    precision: the harness has already combined the kernel's declaration with the command
    line (:func:`kernel_precision`), and every returned array is checked against its role."""

    framework = ""
    dtypes = ("float64", "float32", "float16", "bfloat16")
    sparse = False

    def check_precision(self, precision: Precision) -> None:
        """Any: the kernel is handed the precision it declared (or the command line said)."""

    def _build(self) -> None:
        try:
            obj = load_target(self.options["target"])
        except TargetError as exc:  # loaded here but not where it was registered: not a decline
            raise KernelLoadError(f"cannot load the kernel: {exc}") from None
        self.version = self.options["target"]
        self.amsgrad = bool(self.options.get("amsgrad", False))
        self.is_object = inspect.isclass(obj)
        self.multi = bool(getattr(obj, "multi_tensor", False))
        self.sparse = bool(getattr(obj, "sparse", False))
        self.kernel = self._guarded(obj, kernel_hyper(self.hyper, 1)) if self.is_object else obj
        self.role_dtypes = {role: numpy_dtype(getattr(self.precision, role) or self.dtype)
                            for role in ROLES}  # fmt: skip
        self.params: list[np.ndarray] = []
        self.state: KernelState | None = None

    def _guarded(self, call: Any, *args: Any) -> Any:
        """Call into the kernel; NotImplementedError is how it declines a configuration."""
        try:
            return call(*args)
        except NotImplementedError as exc:
            raise Unsupported(f"{self.name}: {exc or 'not implemented'}") from None

    def set_state(self, state: State) -> None:
        self.params = [p.copy() for p in state.params]
        zeros = [np.zeros_like(m) for m in state.m]  # in the state dtype
        v_max = state.v_max if state.v_max is not None else (zeros if self.amsgrad else None)
        master = None
        if self.precision.master is not None:  # a state without one: the params, exactly
            given = state.master if state.master is not None else state.params
            master = [np.array(x, dtype=self.role_dtypes["master"]) for x in given]
        self.state = KernelState(
            [m.copy() for m in state.m],
            [v.copy() for v in state.v],
            None if v_max is None else [x.copy() for x in v_max],
            state.step,
            master,
        )
        if self.is_object:
            self._guarded(self.kernel.set_state, self.state)

    def get_state(self) -> State:
        if self.is_object:
            self.state = self._checked_state(self.kernel.get_state(), self.state.step)
        s = self.state
        return State(
            [p.copy() for p in self.params],
            [m.copy() for m in s.m],
            [v.copy() for v in s.v],
            None if s.v_max is None else [x.copy() for x in s.v_max],
            s.step,
            master=None if s.master is None else [x.copy() for x in s.master],
        )

    def step(self, grads: Sequence[Any]) -> None:
        if not self.sparse and any(isinstance(g, SparseRows) for g in grads):
            raise Unsupported(
                f"{self.name}: takes dense gradients only (a kernel with the attribute "
                "sparse = True gets SparseRows)"
            )
        self.check_grads(grads)
        grads = [self._gradient(g, s) for g, s in zip(grads, self.shapes, strict=True)]
        t = self.state.step
        if self.is_object:
            out = self._guarded(self.kernel.step, [p.copy() for p in self.params], grads)
            self.params = self._checked_params(out, "step(params, grads)")
            self.state = self._checked_state(self.kernel.get_state(), t + 1)
            return
        hyper = kernel_hyper(self.hyper, t + 1)
        if self.multi:
            params, state = _pair(
                self._guarded(self.kernel, list(self.params), grads, self.state, hyper)
            )
            self.params = self._checked_params(params, "step(...)[0]")
            self.state = self._checked_state(state, t + 1)
            return
        new_params, ms, vs, v_maxes, masters = [], [], [], [], []
        s = self.state
        for k, g in enumerate(grads):
            one = KernelState(
                s.m[k].copy(),
                s.v[k].copy(),
                None if s.v_max is None else s.v_max[k].copy(),
                t,
                None if s.master is None else s.master[k].copy(),
            )
            param, state = _pair(self._guarded(self.kernel, self.params[k].copy(), g, one, hyper))
            new_params.append(param)
            ms.append(_field(state, "m"))
            vs.append(_field(state, "v"))
            v_maxes.append(_field(state, "v_max"))
            masters.append(_field(state, "master"))
            _check_step(_field(state, "step"), t + 1)
        self.params = self._checked_params(new_params, "step(...)[0]")
        self.state = self._checked_state(
            KernelState(ms, vs, v_maxes if s.v_max is not None else None, t + 1, masters), t + 1
        )

    def _gradient(self, grad: Any, shape: tuple[int, ...]) -> Any:
        """A copy the kernel may overwrite: an array of the grad dtype, or SparseRows with
        int64 indices and value rows of the grad dtype."""
        dtype = self.role_dtypes["grad"]
        if isinstance(grad, SparseRows):
            indices = np.array(grad.indices, dtype=np.int64).reshape(-1)
            values = np.array(grad.values, dtype=dtype).reshape(len(indices), *shape[1:])
            return SparseRows(indices, values, grad.num_rows)
        return np.array(grad, dtype=dtype).reshape(shape)

    # -- the contract -----------------------------------------------------------------
    def _checked_params(self, params: Any, what: str) -> list[np.ndarray]:
        return self._arrays(params, what, "param")

    def _checked_state(self, state: Any, step: int) -> KernelState:
        if state is None:
            raise KernelContractError("the kernel returned no state (None)")
        m = self._arrays(_field(state, "m"), "state.m", "state")
        v = self._arrays(_field(state, "v"), "state.v", "state")
        v_max = None
        if self.amsgrad:
            v_max = self._arrays(_field(state, "v_max"), "state.v_max", "state")
        master = None
        if self.precision.master is not None:
            master = self._arrays(_field(state, "master"), "state.master", "master")
        given = _field(state, "step")
        _check_step(given, step)
        return KernelState(m, v, v_max, step, master)

    def _role(self, role: str) -> str:
        """Where the dtype a role's arrays must have comes from, for the contract errors."""
        if self.precision.uniform:
            return "the param's dtype"
        return f"the {role} dtype of {self.precision.name}"

    def _arrays(self, xs: Any, what: str, role: str) -> list[np.ndarray]:
        """``xs`` (one array or a list, one per tensor) as NumPy arrays, each checked to
        have its tensor's shape and ``role``'s dtype."""
        # a missing master is the kernel forgetting the precision it runs in: say which
        missing = f" ({self._role(role)} is {self.precision.master})" if role == "master" else ""
        if xs is None:
            raise KernelContractError(f"{what} is None{missing}")
        if not isinstance(xs, list | tuple):
            xs = [xs]
        if len(xs) != len(self.shapes):
            raise KernelContractError(f"{what} has {len(xs)} tensors, expected {len(self.shapes)}")
        out = []
        for k, (x, shape) in enumerate(zip(xs, self.shapes, strict=True)):
            if x is None:
                raise KernelContractError(f"{what}[{k}] is None{missing}")
            a = to_numpy(x)
            if a.shape != shape:
                raise KernelContractError(
                    f"{what}[{k}] has shape {a.shape}, expected {shape} (the param's shape)"
                )
            expected = getattr(self.precision, role)
            if a.dtype != self.role_dtypes[role]:
                raise KernelContractError(
                    f"{what}[{k}] has dtype {a.dtype}, expected {expected} ({self._role(role)})"
                )
            out.append(np.array(a, copy=True))
        return out


def _pair(result: Any) -> tuple[Any, Any]:
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise KernelContractError(
            f"the kernel returned {type(result).__name__}; expected (params, state)"
        )
    return result[0], result[1]


def _check_step(given: Any, expected: int) -> None:
    if given is not None and int(given) != expected:
        raise KernelContractError(f"state.step is {given!r} after the step, expected {expected}")


#: Default per-step limit for a user kernel (a first step may compile: JIT, CUDA).
STEP_TIMEOUT_S = 60.0


def register_target(
    target: str,
    documented: str,
    *,
    amsgrad: bool = False,
    timeout_s: float = STEP_TIMEOUT_S,
    in_process: bool = False,
) -> str:
    """Register ``target`` as an implementation (idempotent) and return its name.

    It runs in a worker process (a segfault or hang ends only the case it happened in,
    after ``timeout_s`` seconds per call) unless ``in_process``. The target is loaded first
    where it will run (in a worker, which is then kept for the cases: the file is executed
    once per worker process, never in this one), so a TARGET that names nothing loadable
    fails at once with :class:`TargetError`. A kernel whose code raises while it loads
    (or crashes, or hangs) is not a usage error: every case reports it as an error with
    the full reason. What the kernel declares as its precision is kept with the
    registration (:func:`kernel_declaration`).
    """
    check_target(target)
    absolute = _absolute(target)
    probed: dict[str, Any] = {}
    try:
        if in_process:
            probed = probe_target(absolute)
        else:
            from adamspec.impl.adapters.worker import call_in_worker

            probed = call_in_worker(
                f"{__name__}:probe_target", absolute, pool=absolute, timeout_s=timeout_s
            )
    except TargetError:
        raise
    except Exception:  # KernelLoadError, a crash or a hang: each case reports it
        pass
    name = f"kernel:{target}"
    if name in REGISTRY:
        return name
    inner = {"target": absolute, "amsgrad": amsgrad, "declared": probed.get("precision")}
    if in_process:
        info = AdapterInfo(
            name, "", documented, "adamspec.impl.adapters.kernel_protocol:KernelAdapter", inner
        )
    else:
        info = AdapterInfo(
            name,
            "",
            documented,
            "adamspec.impl.adapters.worker:ProcessAdapter",
            {
                "target": "adamspec.impl.adapters.kernel_protocol:KernelAdapter",
                "inner": inner,
                "timeout_s": timeout_s,
                "pool": absolute,  # a worker of its own: kernels never share a process
            },
        )
    register(info)
    return name


def _absolute(target: str) -> str:
    where, _, attr = target.rpartition(":")
    if where.endswith(".py") or "/" in where or os.sep in where:
        return f"{os.path.abspath(where)}:{attr}"
    return target


__all__ = [
    "DECLARED_ROLES",
    "STEP_TIMEOUT_S",
    "KernelAdapter",
    "KernelContractError",
    "KernelHyper",
    "KernelState",
    "TargetError",
    "check_target",
    "declaration_of",
    "kernel_declaration",
    "kernel_hyper",
    "kernel_precision",
    "load_target",
    "probe_target",
    "register_target",
    "to_numpy",
]
