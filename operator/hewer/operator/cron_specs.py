"""CronTrigger and RateLimit resources -> engine REST bodies.

Both kinds map one-to-one onto a single engine object named after the resource, so their
translations are small; they live together here. Pure (no I/O); invalid input raises
:class:`InvalidSpec` naming the offending field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from hewer.operator.spec_common import (
    InvalidSpec,
    check_int,
    check_priority,
    now_iso,
    validate_cron,
)

CRON_METADATA_KEY = "hewer.dev/cron-trigger"
DURATIONS = ("SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")


# -- CronTrigger ----------------------------------------------------------------------------


def cron_name(namespace: str, name: str) -> str:
    """The engine-side cron name of a CronTrigger (namespaces contain no dots)."""
    return f"{namespace}.{name}"


def cron_request(spec: Mapping[str, Any], *, namespace: str, name: str) -> dict[str, Any]:
    """The body of Hatchet's ``POST .../workflows/{workflow}/crons`` for this trigger.

    The additional metadata carries ``hewer.dev/cron-trigger: <namespace>.<name>`` so that
    the trigger's runs can be found (its status shows the last one).
    """
    ref = spec.get("workflowRef")
    if not isinstance(ref, Mapping) or not str(ref.get("name") or "").strip():
        raise InvalidSpec("InvalidSpec", "spec.workflowRef.name is required")
    schedule = validate_cron(spec.get("schedule"), "spec.schedule")
    payload = spec.get("input") or {}
    metadata = spec.get("additionalMetadata") or {}
    if not isinstance(payload, Mapping):
        raise InvalidSpec("InvalidSpec", "spec.input must be an object")
    if not isinstance(metadata, Mapping):
        raise InvalidSpec("InvalidSpec", "spec.additionalMetadata must be an object")
    body: dict[str, Any] = {
        "cronName": cron_name(namespace, name),
        "cronExpression": schedule,
        "input": dict(payload),
        "additionalMetadata": {**metadata, CRON_METADATA_KEY: cron_name(namespace, name)},
    }
    priority = check_priority(spec.get("priority"), "spec.priority")
    if priority is not None:
        body["priority"] = priority
    return body


def cron_workflow_name(spec: Mapping[str, Any]) -> str:
    ref = spec.get("workflowRef")
    name = str(ref.get("name") or "").strip() if isinstance(ref, Mapping) else ""
    if not name:
        raise InvalidSpec("InvalidSpec", "spec.workflowRef.name is required")
    return name


def cron_matches(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether an engine cron (REST ``CronWorkflows``) is the desired one."""
    if existing.get("name") != desired["cronName"]:
        return False
    if existing.get("cron") != desired["cronExpression"]:
        return False
    if (existing.get("input") or {}) != desired["input"]:
        return False
    if (existing.get("additionalMetadata") or {}) != desired["additionalMetadata"]:
        return False
    if existing.get("enabled") is False:
        return False
    priority = existing.get("priority")
    return priority is None or priority == desired.get("priority", 1)


def next_schedule_time(expression: str, now: datetime | None = None) -> str:
    base = now or datetime.now(UTC)
    nxt = croniter(expression, base).get_next(datetime)
    return now_iso(nxt)


# -- RateLimit ------------------------------------------------------------------------------


def rate_limit_request(spec: Mapping[str, Any]) -> tuple[str, int, str]:
    """``(key, limit, duration)`` of a RateLimit."""
    key = str(spec.get("key") or "").strip()
    if not key:
        raise InvalidSpec("InvalidSpec", "spec.key is required")
    limit = check_int(spec.get("limit"), "spec.limit", minimum=0)
    duration = str(spec.get("duration") or "MINUTE")
    if duration not in DURATIONS:
        raise InvalidSpec("InvalidSpec", f"spec.duration must be one of {', '.join(DURATIONS)}")
    return key, limit, duration
