"""ONNX ai.onnx.preview.training Adam-1, run by the ``onnx`` package's reference evaluator.

One node ``Adam(R, T, X..., G..., V..., H...)`` with attributes ``alpha`` (beta1),
``beta`` (beta2), ``epsilon`` and ``norm_coefficient`` (coupled L2) or
``norm_coefficient_post`` (decoupled, after the step, not lr-scaled) is
evaluated by :class:`onnx.reference.ReferenceEvaluator`
(``onnx/reference/ops/aionnx_preview_training/op_adam.py``).

``T``: the operator text calls it "the number of training iterations
conducted" and computes ``R * sqrt(1 - beta**T) / (1 - alpha**T)``; the
oracle corrects step ``t`` (counted from 1) with ``beta^t``, so T must count
the step being taken: the adapter passes ``T = step + 1`` (option
``t_offset``, default 1). ``T = step`` would be off by one step, and ``T = 0``
switches bias correction off entirely.

Two tensors or more: the reference implementation casts every output of a
multi-tensor node to float32 (``xs.append(a.astype(np.float32))``), so a
float64 run builds one node per tensor (the operator says the rule "will be
applied independently to each of them", so this changes no arithmetic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported
from adamspec.impl.adapters.repro import (
    Program,
    StepToReproduce,
    keyword_literal,
    python_float,
    value_literal,
)
from adamspec.spec.hyper import Hyper, Schedule

DOMAIN = "ai.onnx.preview.training"


class OnnxAdam(Adapter):
    """The reference ONNX Adam over every tensor.

    options: ``norm_coefficient_post`` (True: ``hyper.weight_decay`` is the post
    coefficient; otherwise it is ``norm_coefficient``), ``t_offset`` (T = step +
    t_offset), ``per_tensor`` (one node per tensor; default: only for float64),
    ``lr_dtype`` (the type of R, default ``"float32"``; ``"param"`` for the
    parameter dtype).

    R has its own type parameter (T1, float or double) independent of the
    tensors' (T3); the catalog entry holds every hyperparameter in float32, as the
    attributes are, so R is a float32 scalar by default also for float64 tensors.
    """

    framework = "onnx"
    dtypes = ("float32", "float64")

    def _build(self) -> None:
        import onnx
        from onnx import TensorProto, helper
        from onnx.reference import ReferenceEvaluator

        h = self.hyper
        self.np_dtype = np.dtype(self.dtype)
        self.t_offset = int(self.options.get("t_offset", 1))
        lr_dtype = self.options.get("lr_dtype", "float32")
        self.lr_dtype = self.np_dtype if lr_dtype == "param" else np.dtype(lr_dtype)
        attrs = _attributes(h, bool(self.options.get("norm_coefficient_post", False)))
        for key in ("eps_root", "clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(h, key):
                raise Unsupported(f"{self.name} has no {key}")
        if h.use_ema:
            raise Unsupported(f"{self.name} has no EMA")
        elem = TensorProto.DOUBLE if self.dtype == "float64" else TensorProto.FLOAT
        lr_elem = TensorProto.DOUBLE if self.lr_dtype == np.float64 else TensorProto.FLOAT
        per_tensor = bool(self.options.get("per_tensor", self.dtype == "float64"))
        groups = (
            [[k] for k in range(len(self.shapes))]
            if per_tensor
            else [list(range(len(self.shapes)))]
        )
        self._sessions = []
        for group in groups:
            names = {role: [f"{role}{k}" for k in group] for role in "XGVH"}
            inputs = ["R", "T", *names["X"], *names["G"], *names["V"], *names["H"]]
            outputs = [f"{n}_new" for role in "XVH" for n in names[role]]
            node = helper.make_node("Adam", inputs, outputs, domain=DOMAIN, **attrs)
            value_infos = [
                helper.make_tensor_value_info("R", lr_elem, []),
                helper.make_tensor_value_info("T", TensorProto.INT64, []),
            ]
            for role in "XGVH":
                value_infos += [
                    helper.make_tensor_value_info(n, elem, self.shapes[k])
                    for n, k in zip(names[role], group, strict=True)
                ]
            out_infos = [
                helper.make_tensor_value_info(n, elem, self.shapes[group[i % len(group)]])
                for i, n in enumerate(outputs)
            ]
            graph = helper.make_graph([node], "adam", value_infos, out_infos)
            model = helper.make_model(
                graph,
                opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
            )
            onnx.checker.check_model(model)
            self._sessions.append((group, names, ReferenceEvaluator(model)))
        self._params = [np.zeros(s, self.np_dtype) for s in self.shapes]
        self._m = [p.copy() for p in self._params]
        self._v = [p.copy() for p in self._params]
        self._step = 0

    def _lr(self, t: int) -> float:
        h = self.hyper
        return float(h.lr_at(t)) if isinstance(h.lr, Schedule) else float(h.lr)

    def set_state(self, state: State) -> None:
        def dup(xs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return [np.array(x, dtype=self.np_dtype, copy=True) for x in xs]

        self._params, self._m, self._v = dup(state.params), dup(state.m), dup(state.v)
        self._step = state.step

    def get_state(self) -> State:
        return State(
            [p.copy() for p in self._params],
            [x.copy() for x in self._m],
            [x.copy() for x in self._v],
            None,
            self._step,
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        t = self._step + 1
        feeds_common = {
            "R": np.asarray(self._lr(t), dtype=self.lr_dtype),
            "T": np.asarray(self._step + self.t_offset, dtype=np.int64),
        }
        for group, names, session in self._sessions:
            feeds = dict(feeds_common)
            for role, source in (("X", self._params), ("G", grads), ("V", self._m), ("H", self._v)):
                for n, k in zip(names[role], group, strict=True):
                    feeds[n] = np.asarray(source[k], dtype=self.np_dtype)
            results = session.run(None, feeds)
            n = len(group)
            for i, k in enumerate(group):
                for store, j in ((self._params, i), (self._m, n + i), (self._v, 2 * n + i)):
                    out = np.asarray(results[j])
                    if out.dtype != self.np_dtype:
                        # the reference returns float64 for a one-tensor float32 node
                        # (NumPy promotes beta**T); the operator's output type is T3
                        out = out.astype(self.np_dtype)
                    store[k] = out
        self._step = t

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """One Adam node for the one tensor, checked and run by the reference evaluator."""
        h, options, before = step.hyper, step.info.options, step.before
        lr_dtype = options.get("lr_dtype", "float32")
        lr_dtype = step.dtype if lr_dtype == "param" else lr_dtype
        elem = {"float64": "TensorProto.DOUBLE"}.get(step.dtype, "TensorProto.FLOAT")
        lr_elem = {"float64": "TensorProto.DOUBLE"}.get(lr_dtype, "TensorProto.FLOAT")
        attrs = _attributes(h, bool(options.get("norm_coefficient_post", False)))
        t_value = step.step + int(options.get("t_offset", 1))
        shape = list(step.shape)
        body = [
            f"DOMAIN = {DOMAIN!r}".replace("'", '"'),
            "node = helper.make_node(",
            '    "Adam", ["R", "T", "X", "G", "V", "H"], ["X_new", "V_new", "H_new"], '
            "domain=DOMAIN,",
            f"    {keyword_literal(attrs)},",
            ")",
            "inputs = [",
            f'    helper.make_tensor_value_info("R", {lr_elem}, []),',
            '    helper.make_tensor_value_info("T", TensorProto.INT64, []),',
            f'    *[helper.make_tensor_value_info(n, {elem}, {shape!r}) for n in "XGVH"],',
            "]",
            f'outputs = [helper.make_tensor_value_info(n + "_new", {elem}, {shape!r}) '
            'for n in "XVH"]',
            "model = helper.make_model(",
            '    helper.make_graph([node], "adam", inputs, outputs),',
            '    opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],',
            ")",
            "onnx.checker.check_model(model)",
            "feeds = {",
            f'    "R": np.asarray({python_float(step.lr)}, dtype=np.{lr_dtype}),',
            f'    "T": np.asarray({t_value}, dtype=np.int64),  '
            "# the step being taken, counted from 1",
            f'    "X": {value_literal(before.params[0])},',
            f'    "G": {step.grad_literal()},',
            f'    "V": {value_literal(before.m[0])},',
            f'    "H": {value_literal(before.v[0])},',
            "}",
            "# the reference evaluator may return float64 for float32 inputs; the operator's",
            "# output type is the input's, so adamspec rounds it back as its adapter does",
            "results = ReferenceEvaluator(model).run(None, feeds)",
            "x, m, v = (np.asarray(r).astype(DTYPE) for r in results)",
        ]
        imports = [
            "import onnx",
            "from onnx import TensorProto, helper",
            "from onnx.reference import ReferenceEvaluator",
        ]
        helpers = [
            f"DTYPE = np.{step.dtype}",
            "",
            "",
            "def value(hexes, shape):",
            "    return exact(hexes, shape).astype(DTYPE)",
        ]
        return Program(imports, helpers, body, {"param": "x", "m": "m", "v": "v"})


def _attributes(h: Hyper, post: bool) -> dict[str, float]:
    """The Adam node's attributes; ``post``: weight decay as ``norm_coefficient_post``."""
    return {
        "alpha": float(h.beta1),
        "beta": float(h.beta2),
        "epsilon": float(h.eps),
        "norm_coefficient_post" if post else "norm_coefficient": float(h.weight_decay),
    }


_FACTORY = "adamspec.impl.adapters.onnx_ref:OnnxAdam"

INFOS = [
    AdapterInfo("onnx.Adam", "onnx", "onnx.Adam", _FACTORY, {}),
    AdapterInfo(
        "onnx.Adam(norm_coefficient_post)",
        "onnx",
        "onnx.Adam[norm_coefficient_post]",
        _FACTORY,
        {"norm_coefficient_post": True},
    ),
]
