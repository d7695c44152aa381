"""Decoding JSON that arrives from outside (REST bodies, gRPC ``input``/``payload``/metadata).

Three things the standard decoder lets through or turns into crashes are refused here with a
message the caller can act on:

* nesting deeper than :data:`MAX_JSON_DEPTH` (the decoder recurses and raises
  ``RecursionError`` at about a thousand levels; a few hundred levels would later blow up
  encoders and CEL instead);
* bytes that are not UTF-8;
* NUL characters (``\\u0000``) in any string or key, which PostgreSQL cannot store in
  ``jsonb`` or ``text``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "JsonInputError", "decode_json"]

MAX_JSON_DEPTH = 100


class JsonInputError(ValueError):
    """The value cannot be accepted; ``str(exc)`` says why, naming the field."""


def _deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _has_nul(value: Any) -> bool:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode_json(raw: str | bytes, *, what: str) -> Any:
    """The decoded value of ``raw``; :class:`JsonInputError` names ``what`` and the reason."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonInputError(f"{what} is not UTF-8") from None
    else:
        text = raw
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonInputError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise JsonInputError(f"{what} is not valid JSON: {exc}") from None
    # the walks cost time only for documents that could fail them
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise JsonInputError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    if "\\u0000" in text and _has_nul(value):
        raise JsonInputError(f"{what} must not contain NUL characters (\\u0000)")
    return value
