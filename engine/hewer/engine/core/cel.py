"""CEL (Common Expression Language) evaluation, as Hatchet uses it (pure; no I/O).

Hatchet evaluates user expressions in a few environments, each with its own variables:

* event filters and ``cel/debug``: ``input`` (event payload), ``additional_metadata``,
  ``payload`` (the filter's payload), ``event_id``, ``event_key`` -> bool
* incoming webhooks: ``input`` (request body), ``headers`` (lower-cased names) -> string

Expressions are compiled once and cached. :func:`check` is the compile step alone, used to
refuse an expression with a 400 before anything is stored. An evaluation error (a missing
key, a wrong type) is a :class:`CelError` carrying a short message; callers decide what it
means (a filter that does not match, a "failure" debug result, a 400 for a webhook).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

FILTER_VARIABLES = ("input", "additional_metadata", "payload", "event_id", "event_key")
WEBHOOK_VARIABLES = ("input", "headers")
MAX_EXPRESSION_LENGTH = 4096

_ENV = celpy.Environment()
# celpy's messages for undeclared names embed a dump of the whole activation; keep the name
_UNDECLARED = re.compile(r"undeclared reference to '([^']*)'")


class CelError(ValueError):
    """An expression that does not compile, fails to evaluate, or has the wrong type."""


@lru_cache(maxsize=2048)
def _program(expression: str) -> Any:
    if not expression.strip():
        raise CelError("expression is empty")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CelError(f"expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        return _ENV.program(_ENV.compile(expression))
    except Exception as exc:  # celpy raises parse errors of several classes
        message = " ".join(str(exc).split())
        raise CelError(f"invalid CEL expression: {message}") from None


def check(expression: str) -> None:
    """Raise :class:`CelError` unless ``expression`` compiles."""
    _program(expression)


def _message(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    found = _UNDECLARED.search(text)
    if found:
        return f"undeclared reference to '{found.group(1)}'"
    return " ".join(text.split())[:500]


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    """The value of ``expression`` over JSON-like ``variables``, as plain Python."""
    program = _program(expression)
    activation = {name: json_to_cel(value) for name, value in variables.items()}
    try:
        result = program.evaluate(activation)
    except CELEvalError as exc:
        raise CelError(_message(exc)) from None
    except Exception as exc:  # a celpy internal failure on odd input: still a user error
        raise CelError(_message(exc)) from None
    if isinstance(result, CELEvalError):
        raise CelError(_message(result))
    return _to_python(result)


def evaluate_bool(expression: str, variables: Mapping[str, Any]) -> bool:
    value = evaluate(expression, variables)
    if not isinstance(value, bool):
        raise CelError(f"expression did not evaluate to a boolean (got {_type_name(value)})")
    return value


def evaluate_string(expression: str, variables: Mapping[str, Any]) -> str:
    value = evaluate(expression, variables)
    if not isinstance(value, str):
        raise CelError(f"expression did not evaluate to a string (got {_type_name(value)})")
    return value


def filter_variables(
    *,
    input: Mapping[str, Any],
    additional_metadata: Mapping[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
    event_id: str = "",
    event_key: str = "",
) -> dict[str, Any]:
    return {
        "input": dict(input),
        "additional_metadata": dict(additional_metadata or {}),
        "payload": dict(payload or {}),
        "event_id": event_id,
        "event_key": event_key,
    }


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "double", str: "string", list: "list"}.get(
        type(value), "map" if isinstance(value, dict) else type(value).__name__
    )


def _to_python(value: Any) -> Any:
    """celpy values (subclasses of Python builtins) back to plain JSON-like Python."""
    if isinstance(value, celtypes.BoolType | bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return {str(_to_python(k)): _to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_python(v) for v in value]
    return value
