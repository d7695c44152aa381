"""What every custom resource's translation shares: the refusal, the API identity, field
validators and status conditions.

Nothing here does I/O, so unit tests cover it without a cluster or an engine. Invalid input
raises :class:`InvalidSpec` with a ``reason`` (CamelCase, for conditions and Events) and a
message that names the offending field; the per-kind modules (``workflow_specs``,
``cron_specs``, ``pool_specs``) build on these validators so every kind words its errors
the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from hewer.engine.core.durations import InvalidDuration, parse_duration

GROUP = "hewer.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class InvalidSpec(ValueError):
    """A resource the operator refuses; ``reason`` is a CamelCase word for conditions."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def resource_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


# -- conditions ---------------------------------------------------------------------------


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """``conditions`` with the one of ``type_`` replaced; ``lastTransitionTime`` changes only
    when the status does. ``status`` None means Unknown."""
    text = "Unknown" if status is None else ("True" if status else "False")
    out = [dict(c) for c in conditions or [] if c.get("type") != type_]
    previous = next((c for c in conditions or [] if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != text
    new: dict[str, Any] = {
        "type": type_,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (
            now_iso(now)
            if changed or previous is None
            else previous.get("lastTransitionTime", now_iso(now))
        ),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    out.sort(key=lambda c: (c.get("type") != "Ready", str(c.get("type"))))
    return out


def get_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


# -- small validators ---------------------------------------------------------------------


def check_duration(value: Any, where: str) -> str:
    """A Go duration string for the engine; an integer means seconds."""
    if isinstance(value, bool):
        raise InvalidSpec("InvalidDuration", f"{where}: expected a duration such as '30s'")
    if isinstance(value, int | float):
        if value <= 0:
            raise InvalidSpec("InvalidDuration", f"{where}: must be positive, got {value}")
        return f"{int(value)}s"
    text = str(value).strip()
    try:
        seconds = parse_duration(text)
    except InvalidDuration as exc:
        raise InvalidSpec("InvalidDuration", f"{where}: {exc}") from None
    if seconds <= 0:
        raise InvalidSpec("InvalidDuration", f"{where}: must be positive, got {text!r}")
    return text


def check_int(
    value: Any, where: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InvalidSpec("InvalidSpec", f"{where}: expected an integer, got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise InvalidSpec("InvalidSpec", f"{where}: must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidSpec("InvalidSpec", f"{where}: must be <= {maximum}, got {number}")
    return number


def check_str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidSpec("InvalidSpec", f"{where}: expected a list of non-empty strings")
    return list(value)


def validate_cron(expression: Any, where: str) -> str:
    text = str(expression or "").strip()
    if not text or not croniter.is_valid(text):
        raise InvalidSpec("InvalidSchedule", f"{where}: {text!r} is not a valid cron expression")
    return text


def check_priority(value: Any, where: str) -> int | None:
    if value is None:
        return None
    return check_int(value, where, minimum=1, maximum=3)
