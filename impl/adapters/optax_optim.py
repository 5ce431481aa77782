"""optax (JAX) Adam family: adam, adam(eps_root), adam(nesterov), adamw, amsgrad.

Each adapter builds ``optax.<fn>(learning_rate, b1, b2, eps, ...)`` with the
hyperparameters as Python floats (as a user writes them) and drives it on CPU
with a jitted ``tx.update`` + ``optax.apply_updates``, the usual train-step
form. The optimizer state is located by field name with ``optax.tree.get`` /
``optax.tree.set`` (``mu`` -> m, ``nu`` -> v, ``nu_max`` -> v_max, every
``count`` -> step), so lock-step runs start from exactly the given arrays.

Dtypes: float32, bfloat16 and float16 only. float64 would need
``jax_enable_x64``, a process-wide switch that also changes how optax forms
its bias correction (``1 - b**count`` is computed in the default float dtype,
float32 without x64): the adapter never turns it on and refuses to run if
something else did (:class:`~adamspec.impl.adapters.base.Unsupported`), so its numbers
always describe the default configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from adamspec.impl.adapters.base import Adapter, AdapterInfo, State, Unsupported
from adamspec.impl.adapters.repro import Program, StepToReproduce, keyword_literal, value_literal
from adamspec.spec.hyper import Hyper, Schedule

#: Steps covered by the learning-rate table of a schedule (the last value holds afterwards).
SCHEDULE_STEPS = 10_000


class OptaxAdam(Adapter):
    """``optax.<fn>`` over a list of jnp arrays (one pytree leaf per tensor).

    options: ``fn`` (``adam``, ``adamw``, ``amsgrad``), ``eps_root`` (a decimal
    string; the hyperparameter must agree, see :meth:`_eps_root`), ``jit``
    (default True: one compiled update; False runs op by op) and any other
    keyword of ``fn`` (``nesterov``, ``bias_correction_nu``).
    """

    framework = "optax"
    dtypes = ("float32", "bfloat16", "float16")

    def _build(self) -> None:
        from adamspec.impl.frameworks import require

        require("jax")
        import jax
        import jax.numpy as jnp
        import optax

        if jax.config.jax_enable_x64:
            raise Unsupported(
                f"{self.name}: jax_enable_x64 is on in this process; the adapter describes "
                "optax's default float32 configuration (bias corrections in float32)"
            )
        self.jax, self.jnp, self.optax = jax, jnp, optax
        self.cpu = jax.devices("cpu")[0]
        options = dict(self.options)
        fn_name = options.pop("fn")
        use_jit = options.pop("jit", True)
        if use_jit and jax.config.jax_disable_jit:
            raise Unsupported(f"{self.name}: jax_disable_jit is on: jax.jit would run eagerly")
        options.pop("eps_root", None)
        fn = getattr(optax, fn_name)
        import inspect

        accepted = inspect.signature(fn).parameters
        for key in options:
            if key not in accepted:
                raise Unsupported(
                    f"{self.name}: optax {optax.__version__} optax.{fn_name} has no "
                    f"{key!r} argument (needs optax >= 0.2.7 for bias_correction_nu)"
                )
        h = self.hyper
        learning_rate, eps_root = self._learning_rate(), self._eps_root()
        if fn_name != "adamw" and h.weight_decay:
            raise Unsupported(f"{self.name} has no weight decay (got {float(h.weight_decay)})")
        self.amsgrad = fn_name == "amsgrad"
        self.tx = fn(**_constructor_kwargs(fn_name, h, learning_rate, eps_root, options))
        self.np_dtype = np.dtype(jnp.dtype(self.dtype))
        zeros = [jnp.zeros(s, self.np_dtype) for s in self.shapes]
        self.params = jax.device_put(zeros, self.cpu)
        self.opt_state = jax.device_put(self.tx.init(self.params), self.cpu)
        self._step = 0

        def update(params, opt_state, grads):
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        self._update = jax.jit(update) if use_jit else update

    def _eps_root(self) -> Fraction:
        """The eps_root to build with: the option, which the hyperparameter must match.

        A registered ``eps_root`` option names the configuration; building it with a
        different ``hyper.eps_root`` would silently disagree with the oracle, so a
        mismatch is Unsupported (pass ``eps_root=<option>`` in the hyperparameters).
        """
        option = self.options.get("eps_root")
        if option is None:
            return self.hyper.eps_root
        want = Fraction(option)
        if self.hyper.eps_root != want:
            raise Unsupported(
                f"{self.name} is built with eps_root={option}; the hyperparameters say "
                f"eps_root={float(self.hyper.eps_root)!r}: pass eps_root={option!r}"
            )
        return want

    def _learning_rate(self) -> Any:
        """A float, or for a :class:`Schedule` a jnp-traceable ``count -> lr_at(count + 1)``."""
        h = self.hyper
        if not isinstance(h.lr, Schedule):
            return float(h.lr)
        jnp = self.jnp
        table = jnp.asarray(
            [float(h.lr_at(t)) for t in range(1, SCHEDULE_STEPS + 1)], dtype=jnp.float32
        )
        return lambda count: table[jnp.minimum(count, SCHEDULE_STEPS - 1)]

    # -- protocol -------------------------------------------------------------------
    def _device(self, arrays: Sequence[np.ndarray]) -> list[Any]:
        jnp = self.jnp
        return [
            self.jax.device_put(jnp.asarray(np.asarray(a, dtype=self.np_dtype)), self.cpu)
            for a in arrays
        ]

    def set_state(self, state: State) -> None:
        jnp = self.jnp
        self.params = self._device(state.params)
        fields: dict[str, Any] = {
            "count": jnp.asarray(state.step, dtype=jnp.int32),
            "mu": self._device(state.m),
            "nu": self._device(state.v),
        }
        if self.amsgrad:
            if state.v_max is None:
                raise ValueError(f"{self.name} uses AMSGrad: the state needs v_max")
            fields["nu_max"] = self._device(state.v_max)
        fresh = self.tx.init(self.params)
        # every `count` (the Adam state's and a schedule's) is the number of steps taken
        self.opt_state = self.jax.device_put(self.optax.tree.set(fresh, **fields), self.cpu)
        self._step = state.step

    def _host(self, arrays: Sequence[Any]) -> list[np.ndarray]:
        return [np.array(np.asarray(a), dtype=self.np_dtype, copy=True) for a in arrays]

    def get_state(self) -> State:
        get = self.optax.tree.get
        return State(
            self._host(self.params),
            self._host(get(self.opt_state, "mu")),
            self._host(get(self.opt_state, "nu")),
            self._host(get(self.opt_state, "nu_max")) if self.amsgrad else None,
            self._step,
        )

    def step(self, grads: Sequence[Any]) -> None:
        self.check_grads(grads)
        self.params, self.opt_state = self._update(self.params, self.opt_state, self._device(grads))
        self._step += 1

    @classmethod
    def reproduction_program(cls, step: StepToReproduce) -> Program:
        """``optax.<fn>`` with its state set by field name, one (jitted) update on the CPU."""
        h, options = step.hyper, dict(step.info.options)
        fn = options.pop("fn")
        use_jit = options.pop("jit", True)
        options.pop("eps_root", None)  # the adapter requires hyper.eps_root to equal it
        kwargs = _constructor_kwargs(fn, h, float(step.lr), h.eps_root, options)
        before = step.before
        fields = [
            f"count=jnp.asarray({step.step}, dtype=jnp.int32)",
            f"mu=[{value_literal(before.m[0])}]",
            f"nu=[{value_literal(before.v[0])}]",
        ]
        results = {
            "param": "params[0]",
            "m": 'optax.tree.get(opt_state, "mu")[0]',
            "v": 'optax.tree.get(opt_state, "nu")[0]',
        }
        if fn == "amsgrad":
            fields.append(f"nu_max=[{value_literal(before.v_max[0])}]")
            results["v_max"] = 'optax.tree.get(opt_state, "nu_max")[0]'
        run = "jax.jit(update)" if use_jit else "update"
        body = [
            f"tx = optax.{fn}({keyword_literal(kwargs)})",
            f"params = [{value_literal(before.params[0])}]",
            "# every `count` is the number of steps taken; mu, nu (and nu_max) are the moments",
            "opt_state = optax.tree.set(",
            "    tx.init(params),",
            *[f"    {f}," for f in fields],
            ")",
            "",
            "",
            "def update(params, opt_state, grads):",
            "    updates, opt_state = tx.update(grads, opt_state, params)",
            "    return optax.apply_updates(params, updates), opt_state",
            "",
            "",
            f"params, opt_state = {run}(params, opt_state, [{step.grad_literal()}])",
        ]
        imports = [
            "import os",
            "",
            'os.environ.setdefault("JAX_PLATFORMS", "cpu")  # adamspec runs optax on the CPU',
            "import jax",
            "import jax.numpy as jnp",
            "import optax",
        ]
        helpers = [
            f"DTYPE = jnp.{step.dtype}",
            "",
            "",
            "def value(hexes, shape):",
            "    return jnp.asarray(exact(hexes, shape), dtype=DTYPE)",
        ]
        return Program(imports, helpers, body, results)


def _constructor_kwargs(
    fn: str, h: Hyper, learning_rate: Any, eps_root: Fraction, options: dict[str, Any]
) -> dict[str, Any]:
    """``optax.<fn>``'s keywords as the adapter and its scripts pass them (only adamw takes
    weight_decay); ``options`` last, without ``fn``, ``jit`` and ``eps_root``."""
    kwargs: dict[str, Any] = {
        "learning_rate": learning_rate,
        "b1": float(h.beta1),
        "b2": float(h.beta2),
        "eps": float(h.eps),
        "eps_root": float(eps_root),
    }
    if fn == "adamw":
        kwargs["weight_decay"] = float(h.weight_decay)
    kwargs.update(options)
    return kwargs


_FACTORY = "adamspec.impl.adapters.optax_optim:OptaxAdam"


def _jitted_and_eager(name: str, documented: str, options: dict[str, Any]) -> list[AdapterInfo]:
    """The usual train step is jitted: ``name`` is the compiled implementation, its
    op-by-op twin ``name(jit=False)`` the eager counterpart."""
    eager = AdapterInfo(f"{name}(jit=False)", "optax", documented, _FACTORY,
                        {**options, "jit": False})  # fmt: skip
    jitted = AdapterInfo(name, "optax", documented, _FACTORY, options,
                         eager_counterpart=eager.name)  # fmt: skip
    return [jitted, eager]


INFOS = [
    *_jitted_and_eager("optax.adam", "optax.adam", {"fn": "adam"}),
    AdapterInfo(
        "optax.adam(eps_root=1e-8)",
        "optax",
        "optax.adam",
        _FACTORY,
        {"fn": "adam", "eps_root": "1e-8"},
    ),
    AdapterInfo(
        "optax.adam(nesterov=True)",
        "optax",
        "optax.adam[nesterov]",
        _FACTORY,
        {"fn": "adam", "nesterov": True},
    ),
    *_jitted_and_eager("optax.adamw", "optax.adamw", {"fn": "adamw"}),
    AdapterInfo("optax.amsgrad", "optax", "optax.amsgrad", _FACTORY, {"fn": "amsgrad"}),
    AdapterInfo(
        "optax.amsgrad(bias_correction_nu=False)",
        "optax",
        "optax.amsgrad[bias_correction_nu=False]",
        _FACTORY,
        {"fn": "amsgrad", "bias_correction_nu": False},
    ),
]
