"""Mixed precision: which dtype each role of an Adam step is stored in.

Most Adam kernels written for accelerators keep 16-bit params, float32 moments and often
a float32 *master* copy of the params (DeepSpeed's CPU/GPU Adam, apex FusedAdam, Megatron's
distributed optimizer, Keras's ``mixed_bfloat16``/``mixed_float16`` policies). A
:class:`Precision` names the format of every role:

* ``param``: the params the model computes with (and what the optimizer hands back);
* ``grad``: the gradients the optimizer receives;
* ``state``: ``m``, ``v`` and ``v_max`` (and accumulated beta powers);
* ``master``: optional master weights. When present the update is computed on the master,
  the master is rounded to its dtype, and the param is the master rounded to the param
  dtype (``spec/ADAM.md``, "Mixed precision").

A uniform precision (every role in one dtype, no master) is named by its dtype, so
``"float32"`` still means what it always meant; the common mixes have preset names
(:data:`PRESETS`); any other is written ``param=bfloat16,state=float32,master=float32``.

Data and validation only; the roundings are the oracles'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adamspec.spec.formats import FORMATS


class PrecisionError(ValueError):
    """An unknown preset or role, an unknown dtype, or an incoherent mix."""


#: The roles a precision assigns a dtype to, in the order they are written.
ROLES = ("param", "grad", "state", "master")


@dataclass(frozen=True)
class Precision:
    """The dtype of each role (names of :data:`adamspec.spec.formats.FORMATS`).

    ``grad`` and ``state`` default to ``param``; ``master`` is None when the update is
    computed on the params themselves.
    """

    param: str
    grad: str = ""
    state: str = ""
    master: str | None = None

    def __post_init__(self) -> None:
        if not self.grad:
            object.__setattr__(self, "grad", self.param)
        if not self.state:
            object.__setattr__(self, "state", self.param)
        for role in ROLES:
            value = getattr(self, role)
            if role == "master" and value is None:
                continue
            if value not in FORMATS:
                raise PrecisionError(
                    f"{role}={value!r} is not a dtype; allowed: {', '.join(FORMATS)}"
                )
        if self.master is not None and _wider(self.param, self.master):
            raise PrecisionError(
                f"master={self.master!r} is narrower than param={self.param!r}; a master copy "
                f"must hold every param value: allowed: {', '.join(_at_least(self.param))}"
            )

    @property
    def uniform(self) -> bool:
        """Every role in the param's dtype and no master: the classic one-dtype Adam."""
        return self.master is None and self.grad == self.param and self.state == self.param

    @property
    def compute(self) -> str:
        """The dtype the update is computed for: the master's when there is one.

        Hyperparameters "held in the param dtype" are held in this one (a master-weight
        kernel forms its update in the master's arithmetic)."""
        return self.master or self.param

    @property
    def name(self) -> str:
        """The dtype for a uniform precision, the preset's name, else ``role=dtype,...``."""
        if self.uniform:
            return self.param
        for preset, roles in PRESETS.items():
            if roles == self:
                return preset
        return self.roles_text()

    def roles_text(self) -> str:
        """Every role written out, ``param=bfloat16,grad=bfloat16,state=float32,master=none``."""
        return ",".join(f"{r}={getattr(self, r) or 'none'}" for r in ROLES)

    def __str__(self) -> str:
        return self.name


def _wider(a: str, b: str) -> bool:
    """Whether format ``a`` holds values ``b`` cannot: more precision or more range."""
    fa, fb = FORMATS[a], FORMATS[b]
    return fa.precision > fb.precision or fa.emax > fb.emax or fa.emin < fb.emin


def _at_least(param: str) -> list[str]:
    return [n for n in FORMATS if not _wider(param, n)]


#: The common mixes by name (issue 17): 16-bit params with float32 moments, with or
#: without a float32 master copy.
PRESETS: dict[str, Precision] = {
    "bf16-fp32state": Precision("bfloat16", state="float32"),
    "bf16-fp32master": Precision("bfloat16", state="float32", master="float32"),
    "fp16-fp32master": Precision("float16", state="float32", master="float32"),
}


def precision_named(text: Any) -> Precision:
    """The precision ``text`` names: a dtype, a preset, ``role=dtype,...`` (roles of
    :data:`ROLES`; ``master=none`` for none), or a :class:`Precision` itself.

    Raises :class:`PrecisionError` with one line naming the bad value and what is allowed.
    """
    if isinstance(text, Precision):
        return text
    if not isinstance(text, str) or not text.strip():
        raise PrecisionError(f"precision={text!r} is not a name; {_allowed()}")
    text = text.strip()
    if text in FORMATS:
        return Precision(text)
    if text in PRESETS:
        return PRESETS[text]
    if "=" not in text:
        raise PrecisionError(f"precision={text!r} is unknown; {_allowed()}")
    roles: dict[str, Any] = {}
    for part in text.split(","):
        role, sep, value = (s.strip() for s in part.partition("="))
        if not sep or role not in ROLES:
            raise PrecisionError(
                f"precision role {role!r} in {text!r} is unknown; allowed roles: {', '.join(ROLES)}"
            )
        if role in roles:
            raise PrecisionError(f"precision role {role!r} is given twice in {text!r}")
        roles[role] = None if role == "master" and value == "none" else value
    if "param" not in roles:
        raise PrecisionError(f"precision={text!r} names no param dtype (param=...)")
    return Precision(**roles)


def _allowed() -> str:
    return (
        f"allowed: a dtype ({', '.join(FORMATS)}), a preset ({', '.join(PRESETS)}) "
        f"or role=dtype,... with roles {', '.join(ROLES)}"
    )


__all__ = [
    "PRESETS",
    "ROLES",
    "Precision",
    "PrecisionError",
    "precision_named",
]
