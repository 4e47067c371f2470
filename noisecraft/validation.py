"""Pydantic validation errors as one line a user can act on: each bad field by its dotted path and what it
expects ("train.max_steps must be >= 1, got 0"), not pydantic's multi-line dump.

`check_field` validates one value against a model's field before the model is built, so a bad argument is
named as the caller passed it, in `backticks` (which the command line spells as its --option).

The bottom layer beside io: it imports nothing of noisecraft.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

#: pydantic's bound error types -> (the key of the bound in the error's ctx, its operator)
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}
_PREFIXES = ("Input should be ", "Value error, ", "Assertion failed, ")


def requirement(error: Mapping[str, Any]) -> str:
    """What one item of `ValidationError.errors()` expects: 'must be >= 1', 'must be a valid integer, ...'."""
    bound = _BOUNDS.get(error["type"])
    if bound is not None:
        key, op = bound
        limit = error["ctx"][key]
        return f"must be {op} {limit:g}" if isinstance(limit, float) else f"must be {op} {limit}"
    msg = str(error["msg"])
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            rest = msg[len(prefix):]
            return "must be " + rest if prefix == _PREFIXES[0] else rest
    return msg


#: location segments that name a branch of a union type (`str | list[float]`), not a field
_BRANCHES = {"str", "int", "float", "bool", "dict", "list", "none"}


def field_path(error: Mapping[str, Any]) -> str:
    """The dotted path of the field an error is about ('train.max_steps', 'sample.grid.0'); '' for the model
    as a whole. Union branches ('list[float]') are left out of the path."""
    return ".".join(str(p) for p in error["loc"]
                    if not str(p).startswith("function-") and "[" not in str(p) and str(p) not in _BRANCHES)


def _relevant(errors: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The errors that say what is wrong: a union branch that only says "not this type" is dropped when
    another branch of the same field got further (grid [nan, 0.5]: the list's NaN, not "not a string")."""
    def beaten(e: Mapping[str, Any]) -> bool:
        parent = e["loc"][:-1]
        return e["type"].endswith("_type") and any(
            d is not e and not d["type"].endswith("_type") and d["loc"][:len(parent)] == parent
            and len(d["loc"]) >= len(e["loc"]) for d in errors)

    return [e for e in errors if not beaten(e)]


def describe(err: ValidationError, name: Callable[[str], str] = str) -> str:
    """All errors of `err` in one line; `name` turns a field's dotted path into the name shown."""
    parts = []
    for error in _relevant(err.errors()):
        shown = name(field_path(error))
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key {shown!r}")
        elif error["type"] in ("value_error", "assertion_error"):  # a validator's own message says what it needs
            parts.append(f"{shown}: {requirement(error)}" if shown else requirement(error))
        else:
            parts.append(f"{shown} {requirement(error)}, got {error.get('input')!r}")
    return "; ".join(parts)


@functools.lru_cache(maxsize=256)
def _adapter(model: type[BaseModel], field: str) -> TypeAdapter:
    """The validator of one field, built once (building one costs about a third of a millisecond)."""
    info = model.model_fields[field]
    return TypeAdapter(Annotated[info.annotation, info])


def check_field(model: type[BaseModel], field: str, value: Any, name: str | None = None) -> Any:
    """`value` validated against `model`'s field `field` alone (its type and bounds), before the model is
    built; a ValueError names it as `name` (default: the field) in backticks. Returns the validated value."""
    info = model.model_fields.get(field)
    if info is None:
        raise ValueError(f"`{name or field}` is not a setting of {model.__name__}; expected one of "
                         f"{list(model.model_fields)}")
    try:
        return _adapter(model, field).validate_python(value)
    except ValidationError as err:
        shown = f"`{name or field}`"
        raise ValueError(describe(err, lambda path: f"{shown}.{path}" if path else shown)) from None


__all__ = ["check_field", "describe", "field_path", "requirement"]
