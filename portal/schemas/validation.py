"""Validating JSON-shaped data against the API's models: field errors as JSON pointers (RFC 6901), control
characters refused everywhere. Used by the machine API and by the pull importer alike."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
import pydantic
from pydantic_core import PydanticCustomError

from portal.errors import FieldError, InvalidInput

M = TypeVar("M", bound=pydantic.BaseModel)


def refusal(message: str) -> PydanticCustomError:
    """For a model's own validators: an error whose message is exactly ours (a plain ValueError would be
    reported as "Value error, ...")."""
    return PydanticCustomError("invalid", message)


def pointer(location: tuple[int | str, ...]) -> str:
    """("lines", 0, "total") -> "/lines/0/total" (RFC 6901 escaping)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in location)


def field_errors(exc: pydantic.ValidationError, prefix: str = "") -> list[FieldError]:
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        # Tagged unions and function validators add their own names to the location; keep the field path.
        location = tuple(part for part in error["loc"] if not (isinstance(part, str) and "[" in part))
        errors.append(FieldError(prefix + pointer(location), error["msg"]))
    return errors


# C0 control characters other than tab, line feed and carriage return: NUL cannot be stored in PostgreSQL
# text at all, and the others only ever arrive by mistake or malice.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def control_character_errors(data: Any, path: str = "") -> list[FieldError]:
    if isinstance(data, str):
        return [FieldError(path, "must not contain control characters")] if _CONTROL.search(data) else []
    if isinstance(data, dict):
        errors = []
        for key, value in data.items():
            child = path + pointer((key,))
            if _CONTROL.search(key):
                errors.append(FieldError(child, "must not contain control characters"))
            errors += control_character_errors(value, child)
        return errors
    if isinstance(data, list):
        return [error for i, value in enumerate(data) for error in control_character_errors(value, f"{path}/{i}")]
    return []


def validate(model: type[M], data: Any, prefix: str = "", context: dict[str, Any] | None = None) -> M:
    """Validate JSON-shaped data in JSON mode (so "2026-01-31" is a date and "12" is not a number); `context`
    reaches the model's validators (e.g. whether connectors may call private networks)."""
    if errors := control_character_errors(data, prefix):
        raise InvalidInput("The request has invalid fields.", errors)
    try:
        return model.model_validate_json(orjson.dumps(data), context=context)
    except pydantic.ValidationError as exc:
        raise InvalidInput("The request has invalid fields.", field_errors(exc, prefix)) from exc


# What a control character (see _CONTROL) can look like in JSON text: a \u0000-\u001f or \u007f escape, a \b
# or \f escape, or a raw DEL (JSON allows no other raw control character in a string).
_JSON_CONTROL = re.compile(rb"\\u00[01][0-9A-Fa-f]|\\u007[Ff]|\\[bf]|\x7f")


def may_contain_control_characters(json_text: bytes) -> bool:
    """False only if the JSON text has no string with a control character, so control_character_errors
    would find nothing: a quick look at the bytes instead of a walk over every string. True can be a false
    alarm (an escaped backslash before "b"); then ask control_character_errors."""
    if b"\x7f" in json_text:
        return True
    # Text without a single escape, the usual case, is told apart by one memchr-speed scan; the regular
    # expression, ten times slower on a large batch, is only for text that has escapes.
    return b"\\" in json_text and _JSON_CONTROL.search(json_text) is not None


@functools.cache
def _list_adapter(model: type[M]) -> pydantic.TypeAdapter[list[M]]:
    return pydantic.TypeAdapter(list[model])  # type: ignore[valid-type]  # a list type built at run time


def validate_each(model: type[M], items: Sequence[Any], prefix: str, positions: Sequence[int] | None = None,
                  encoded: Sequence[bytes] | None = None) -> list[M | InvalidInput]:
    """Validate each item on its own, as `validate(model, items[i], f"{prefix}/{positions[i]}")` would (the
    positions default to 0, 1, 2...): one bad item does not stop the others. A list that is valid throughout
    (the usual batch) is validated in one call, one JSON encoding and one trip into pydantic-core instead of
    one per item; only a list with an error is gone through item by item, to tell which items fail and why.
    `encoded`, if the caller has them, are the items' JSON encodings (in any key order: for a valid list
    the result is the same, and errors are found on the items themselves)."""
    payload = b"[" + b",".join(encoded) + b"]" if encoded is not None else orjson.dumps(items)
    if not may_contain_control_characters(payload):
        try:
            return list(_list_adapter(model).validate_json(payload))
        except pydantic.ValidationError:
            pass
    results: list[M | InvalidInput] = []
    for index, item in enumerate(items):
        try:
            results.append(validate(model, item, f"{prefix}/{positions[index] if positions else index}"))
        except InvalidInput as exc:
            results.append(exc)
    return results
