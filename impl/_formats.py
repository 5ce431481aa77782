"""The dtypes our step accepts, as formats, and the error for what it does not support."""

from __future__ import annotations

from typing import Any

from adamspec.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FloatFormat


class UnsupportedError(ValueError):
    """A combination this implementation does not define (the message says which)."""


_FORMAT_OF_DTYPE = {
    "float64": FLOAT64,
    "float32": FLOAT32,
    "float16": FLOAT16,
    "bfloat16": BFLOAT16,
}


def format_of(array: Any) -> FloatFormat:
    """The format of ``array``'s dtype; :class:`UnsupportedError` names the allowed ones."""
    name = str(array.dtype)
    try:
        return _FORMAT_OF_DTYPE[name]
    except KeyError:
        raise UnsupportedError(
            f"dtype {name} is not supported; allowed: {', '.join(_FORMAT_OF_DTYPE)}"
        ) from None


__all__ = ["UnsupportedError", "format_of"]
