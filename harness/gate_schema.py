"""The gate config's schema: what each key of the TOML file may hold, and the one-line
errors that say so.

One pydantic model per table (:class:`GateTable`, ``BudgetTable``, :class:`ImplementationTable`,
:class:`BaselineTable`, and :class:`GateDocument` for the file) declares each key's type,
range or allowed values, its default, the keys that are required and those that exclude
each other; no other key is allowed and no value is converted (TOML says what type each
one is). Each field type carries a :class:`Says`, the phrase its error message uses, so a
check and its explanation are declared together; :func:`validated` turns pydantic's first
error into ``file: key: message``, naming the key and what is allowed.

What depends on the registry or on the rest of the config (implementation globs, user
kernels, the gate's own suites and dtypes in a baseline entry) is checked by
:mod:`adamspec.harness.gate_config` after the schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from adamspec.harness.budgets import DEFAULT
from adamspec.harness.problems import DTYPES, SUITES
from adamspec.spec.catalog import entries
from adamspec.spec.precision import PrecisionError, precision_named

#: Hypothesis examples per stage of each minimal-counterexample search (the engine's
#: default is 100; a gate only needs a small script, and fast).
GATE_COUNTEREXAMPLE_EXAMPLES = 30

#: The verdicts a baseline entry may name.
VERDICTS = ("discrepancy", "range", "error", "skipped")
_CATALOG = tuple(e.name for e in entries())


class GateConfigError(ValueError):
    """A bad gate config; the one-line message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Says:
    """What a value of the type it annotates must be, as its error message words it:
    ``{value!r} must be {phrase}`` (the phrase is ``str.format``-ed with the context
    :func:`validated` is given)."""

    phrase: str


def _config_error(message: str, key: str | None = None) -> PydanticCustomError:
    """An error a validator raises; ``key`` is the table's key it is about, if not the one
    being validated."""
    return PydanticCustomError("config", "{message}", {"message": message, "key": key})


def _integer(low: int, high: int) -> Any:
    return Annotated[int, Field(ge=low, le=high), Says(f"an integer in [{low}, {high}]")]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise _config_error(f"{values!r} lists a value twice")
    return values


def _one_of(choices: Sequence[str]) -> Any:
    """One of ``choices`` (an error lists them)."""
    return Literal[tuple(choices)]


def _one_or_more(choices: Sequence[str]) -> Any:
    """One of ``choices``, or a non-empty list of them without repeats."""
    return Annotated[
        list[_one_of(choices)],
        BeforeValidator(_as_list),
        Field(min_length=1),
        AfterValidator(_unique),
        Says(f"a string or a non-empty list of: {', '.join(choices)}"),
    ]


Text = Annotated[str, StringConstraints(pattern=r"\S"), Says("a non-empty string")]


def _named_precisions(values: list[str]) -> list[str]:
    """Each precision by the name reports give it (a preset's for its roles written out);
    an unknown one is an error naming it and what is allowed."""
    named = []
    for value in values:
        try:
            named.append(precision_named(value).name)
        except PrecisionError as exc:
            raise _config_error(str(exc)) from None
    return named


#: ``gate.precisions``: dtypes, presets or ``role=dtype,...``, one run each, like ``dtypes``.
Precisions = Annotated[
    list[Text],
    BeforeValidator(_as_list),
    Field(min_length=1),
    AfterValidator(_named_precisions),
    AfterValidator(_unique),
    Says(
        "a string or a non-empty list of precisions: dtypes, presets (bf16-fp32state, "
        "bf16-fp32master, fp16-fp32master) or role=dtype,... strings"
    ),
]


def _of_this_gate(what: str) -> Any:
    """One of the gate's own suites, dtypes or precisions: the schema checks a non-empty string, the
    config which; the message lists them (``what``: their name in the context)."""
    return Annotated[
        str, StringConstraints(pattern=r"\S"), Says(f"a non-empty string; allowed: {{{what}}}")
    ]


Flag = Annotated[bool, Says("true or false")]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False), Says("a positive number of seconds")]


class _Table(BaseModel):
    """A TOML table: its keys are the fields, in the order an error lists them; no other
    key is allowed, and no value is converted (TOML says what type each one is)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: The message for a required key that is missing (``str.format``-ed with the context).
    MISSING: ClassVar[Mapping[str, str]] = {}


class GateTable(_Table):
    name: Text = "adamspec gate"
    suite: _one_or_more(tuple(SUITES)) = ["default"]
    dtypes: _one_or_more(DTYPES) = ["float32"]
    # more runs beside the dtypes' (without dtypes: instead of float32), one per precision
    precisions: Precisions = []
    seed: _integer(0, 2**63 - 1) = 0
    strict: Flag = False
    fingerprint_suite: _one_of(tuple(SUITES)) = "discriminating"
    counterexample_examples: _integer(0, 10_000) = GATE_COUNTEREXAMPLE_EXAMPLES
    fail_on_skipped: Flag = False
    # range cases (over budget only where the dtype cannot hold the exact values): the
    # second tier, "conforms except the dtype's range", passes unless this says "fail"
    range: _one_of(("pass", "fail")) = "pass"
    # "register" itself would shadow BaseModel.register (an ABC's classmethod)
    hooks: Annotated[list[Text], Says("a list of 'module:callable' strings")] = Field(
        default=[], alias="register"
    )


# [budget]: one ULP count per component, used for both of the engine's measures (ULPs of the
# result and ULPs of the operands' scale), so 0 means correctly rounded.
BudgetTable = create_model(
    "BudgetTable",
    __base__=_Table,
    **{name: (_integer(0, 2**62), ulp) for name, ulp in DEFAULT.ulp.items()},
)


class ImplementationTable(_Table):
    name: Text | None = None
    target: Text | None = None
    variant: _one_of(_CATALOG) | None = None
    timeout_s: Seconds = 60.0

    @model_validator(mode="after")
    def _a_name_or_a_kernel(self) -> ImplementationTable:
        if (self.name is None) == (self.target is None):
            raise _config_error(
                "give exactly one of name (a registered implementation glob) "
                "or target (a user kernel, 'module:object' or 'file.py:object')"
            )
        if self.name is not None:
            for key in ("variant", "timeout_s"):
                if key in self.model_fields_set:
                    raise _config_error(
                        "only a user kernel (target = ...) takes it; "
                        "a registered implementation has its documented variant",
                        key,
                    )
        elif self.variant is None:
            allowed = shown(_CATALOG)
            raise _config_error(
                f"a user kernel must claim a variant; allowed: {allowed}", "variant"
            )
        return self


class BaselineTable(_Table):
    implementation: Text
    case: Text = "*"
    suite: _of_this_gate("suites") | None = None
    dtype: _of_this_gate("dtypes") | None = None
    precision: _of_this_gate("precisions") | None = None
    verdict: _one_of(VERDICTS) | None = None
    category: Text | None = None
    reason: Text
    link: Text = ""

    MISSING: ClassVar[Mapping[str, str]] = {
        "implementation": "required: a glob of this gate's implementations: {implementations}",
        "reason": "every baseline entry needs a reason (and a link)",
    }


class GateDocument(_Table):
    """The whole file. Implementations and baseline entries are only tables here:
    :class:`ImplementationTable` reads each after the ``register`` hooks ran (they add
    implementations), :class:`BaselineTable` after the implementations are resolved."""

    gate: GateTable = GateTable()
    budget: BudgetTable = BudgetTable()  # type: ignore[valid-type]
    implementation: Annotated[
        list[dict[str, Any]], Says("a non-empty array of [[implementation]] tables")
    ] = []
    baseline: Annotated[list[dict[str, Any]], Says("an array of [[baseline]] tables")] = []


NO_IMPLEMENTATION = (
    "at least one [[implementation]] table is required, "
    "with name = 'glob of `adamspec run --list`' or target = "
    "'module:object' and variant = 'catalog name'"
)


# ------------------------------------------------------------------------------- messages


def _toml_type(value: Any) -> str:
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
    }.get(type(value), type(value).__name__)


def shown(names: Sequence[str], limit: int = 40) -> str:
    """``names`` for a message: comma-separated, the first ``limit`` and a count."""
    head = ", ".join(names[:limit])
    return head + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def unknown(value: Any, allowed: Sequence[str]) -> str:
    """The message for a value that is not one of ``allowed``."""
    if isinstance(value, str) and value.strip():
        return f"{value!r} is unknown; allowed: {shown(allowed)}"
    return f"{value!r} must be a non-empty string; allowed: {shown(allowed)}"


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) is Union:
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    return annotation


def _keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The model's fields by their TOML key, in order."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _walk(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[Any, list[Any], Any]:
    """The type at ``loc`` (unwrapped), its metadata and the model that holds its key."""
    annotation: Any = model
    metadata: list[Any] = []
    owner: Any = model
    for part in loc:
        if isinstance(part, int):  # an element of list[X]
            (annotation,) = get_args(annotation)
            metadata = []
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner = annotation
            info = _keys(owner).get(part)
            if info is None:  # an unknown key
                return None, [], owner
            annotation, metadata = info.annotation, list(info.metadata)
        annotation = _strip_optional(annotation)
        if get_origin(annotation) is Annotated:
            annotation, *extra = get_args(annotation)
            metadata += extra
    return annotation, metadata, owner


def _key(prefix: Sequence[str | int], loc: Sequence[str | int], data: Any) -> str:
    """``gate.dtypes[1]``; a single string given where a list is allowed is not indexed."""
    parts = list(loc)
    if parts and isinstance(parts[-1], int) and isinstance(_at(data, parts[:-1]), str):
        parts.pop()
    key = ""
    for part in (*prefix, *parts):
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else part)
    return key


def _at(data: Any, parts: Sequence[str | int]) -> Any:
    for part in parts:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _message(
    error: Mapping[str, Any], model: type[BaseModel], context: Mapping[str, str]
) -> tuple[tuple[str | int, ...], str]:
    """The location of the key and the one-line message of a schema error."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    annotation, metadata, owner = _walk(model, loc)
    if kind == "config":
        sub = error["ctx"].get("key")
        return ((*loc, sub) if sub else loc), error["ctx"]["message"]
    if kind == "extra_forbidden":
        return loc, f"unknown key; allowed: {', '.join(_keys(owner))}"
    if kind == "missing":
        return loc, owner.MISSING.get(loc[-1], "required").format(**context)
    if kind in ("model_type", "dict_type"):
        return loc, f"must be a table, not {_toml_type(value)}"
    if kind == "literal_error":
        return loc, unknown(value, get_args(annotation))
    says = next((m for m in metadata if isinstance(m, Says)), None)
    if says is None:  # every field type carries a Says (tests/test_gate.py)
        return loc, str(error["msg"])
    return loc, f"{value!r} must be {says.phrase.format(**context)}"


def validated(
    model: type[BaseModel],
    data: Any,
    where: Path,
    prefix: tuple[str | int, ...] = (),
    context: Mapping[str, str] | None = None,
) -> Any:
    """``model`` read from ``data`` (found at ``prefix`` of the file), or a
    :class:`GateConfigError` for its first error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # an unknown key first: a misspelt key is also why a required one seems missing
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc, message = _message(first, model, context or {})
        raise config_error(where, _key(prefix, loc, data), message) from None


def config_error(where: Path, key: str, message: str) -> GateConfigError:
    """``file: key: message``."""
    return GateConfigError(f"{where}: {key}: {message}")
