"""Idempotency keys (pure): the workflow-level configuration and the key of one trigger.

A workflow registered with ``idempotency`` (``IdempotencyConfig{expression, ttl_ms, method}``)
derives a key for every run from a CEL expression over ``input`` and
``additional_metadata``. Keys are per tenant, not per workflow (as Hatchet's are): two
workflows whose expressions yield the same key share it. While a run holds a key, a trigger
yielding the same key creates nothing and is answered with the holder.

* ``TTL``: the key is held for ``ttl_ms`` after the claim, whatever the run does.
* ``STATUS``: the key is released when the run finishes (completed, failed or cancelled);
  ``ttl_ms`` is the fallback lifetime of a run that never finishes.

There is no per-trigger key on the wire: the engine always derives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hewer.engine.core.cel import CelError, check, evaluate
from hewer.engine.core.definition import InvalidDefinition

# The key is part of a btree primary key, whose entries must stay well under a page.
MAX_KEY_BYTES = 1024
# Ten years: beyond that a timestamp arithmetic overflow is nearer than any sensible use.
MAX_TTL_MS = 10 * 366 * 24 * 3600 * 1000
KEY_VARIABLES = ("input", "additional_metadata")


class InvalidIdempotencyConfig(InvalidDefinition):
    """A registration's ``idempotency`` the engine refuses; the message names the field."""


class IdempotencyKeyError(ValueError):
    """A trigger whose key cannot be derived (evaluation error, not a string, too long)."""


class IdempotencyMethod(StrEnum):
    TTL = "TTL"
    STATUS = "STATUS"


# the proto enum's numbers, in case a client sends the number instead of the name
_METHOD_NUMBERS = {0: IdempotencyMethod.TTL, 1: IdempotencyMethod.STATUS}


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyConfig:
    expression: str
    ttl_ms: int
    method: IdempotencyMethod

    @property
    def release_on_finish(self) -> bool:
        return self.method is IdempotencyMethod.STATUS


def parse_idempotency(workflow: str, definition: Mapping[str, Any]) -> IdempotencyConfig | None:
    """The ``idempotency`` of a registration (the proto as a dict), or None when absent.

    Raises :class:`InvalidIdempotencyConfig` for an expression that does not compile, a
    TTL that is not a positive number of milliseconds, or an unknown method.
    """
    raw = definition.get("idempotency")
    if raw is None:
        return None
    where = f"workflow {workflow!r} idempotency"
    if not isinstance(raw, Mapping):
        raise InvalidIdempotencyConfig(f"{where}: must be an object, got {type(raw).__name__}")
    expression = str(raw.get("expression", "") or "")
    if not expression.strip():
        raise InvalidIdempotencyConfig(f"{where}: the key expression is required")
    try:
        check(expression)
    except CelError as exc:
        raise InvalidIdempotencyConfig(f"{where}: key expression {expression!r}: {exc}") from None
    ttl_ms = _ttl_ms(where, raw.get("ttl_ms", 0))
    return IdempotencyConfig(
        expression=expression, ttl_ms=ttl_ms, method=_method(where, raw.get("method"))
    )


def _ttl_ms(where: str, raw: Any) -> int:
    # int64 fields arrive as strings in the proto's JSON form
    try:
        ttl_ms = int(raw)
    except (TypeError, ValueError):
        raise InvalidIdempotencyConfig(f"{where}: ttl_ms must be an integer, got {raw!r}") from None
    if ttl_ms <= 0:
        raise InvalidIdempotencyConfig(
            f"{where}: ttl_ms must be positive (the key's lifetime, or for the STATUS method "
            f"its fallback lifetime), got {ttl_ms}"
        )
    if ttl_ms > MAX_TTL_MS:
        raise InvalidIdempotencyConfig(
            f"{where}: ttl_ms must be at most {MAX_TTL_MS} (ten years), got {ttl_ms}"
        )
    return ttl_ms


def _method(where: str, raw: Any) -> IdempotencyMethod:
    if raw is None or raw == "":
        return IdempotencyMethod.TTL  # the proto default, omitted from its JSON form
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in _METHOD_NUMBERS:
        return _METHOD_NUMBERS[raw]
    try:
        return IdempotencyMethod(str(raw))
    except ValueError:
        raise InvalidIdempotencyConfig(
            f"{where}: unknown method {raw!r} (expected TTL or STATUS)"
        ) from None


def idempotency_key(
    config: IdempotencyConfig,
    *,
    input: Mapping[str, Any],
    additional_metadata: Mapping[str, Any],
) -> str:
    """The key of one trigger; :class:`IdempotencyKeyError` when it cannot be derived.

    Unlike Hatchet, which drops such a trigger silently, the caller refuses the trigger with
    this message: a run the user asked for neither appears nor fails without a word.
    """
    variables = {"input": dict(input), "additional_metadata": dict(additional_metadata)}
    where = f"idempotency key expression {config.expression!r}"
    try:
        value = evaluate(config.expression, variables)
    except CelError as exc:
        raise IdempotencyKeyError(f"{where} could not be evaluated: {exc}") from None
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise IdempotencyKeyError(f"{where} must evaluate to a string, got {kind} {value!r}")
    if not value:
        raise IdempotencyKeyError(f"{where} evaluated to an empty string")
    if len(value.encode()) > MAX_KEY_BYTES:
        raise IdempotencyKeyError(f"{where} evaluated to a key longer than {MAX_KEY_BYTES} bytes")
    return value


def first_of_each_key(keys: Sequence[str]) -> tuple[list[int], dict[int, int]]:
    """Split a batch's keys into the first position of each key and the repeats.

    Returns ``(firsts, repeats)``: ``firsts`` are positions whose key appears there for the
    first time (in order); ``repeats`` maps every later position to the first position of
    its key. Within one trigger call the earliest request wins, as later ones would collide
    with it anyway.
    """
    seen: dict[str, int] = {}
    firsts: list[int] = []
    repeats: dict[int, int] = {}
    for position, key in enumerate(keys):
        if key in seen:
            repeats[position] = seen[key]
        else:
            seen[key] = position
            firsts.append(position)
    return firsts, repeats


@dataclass(frozen=True, slots=True, kw_only=True)
class Collision:
    """A trigger refused because its key is held: the run it would have been, the holder."""

    key: str
    requested_run_id: str
    existing_run_id: str
