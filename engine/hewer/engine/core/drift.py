"""How a worker's registration differs from a declared one (a Workflow resource).

Both sides are registration dicts (``CreateWorkflowVersionRequest`` rendered with proto field
names). Only what changes behaviour is compared: transport details (``inputs``, the input
JSON schema, ``cron_input``) and the SDK's random or-group ids are not, and defaults are
filled in so that an omitted field equals its default. The result is a list of short lines,
``"<where>: <declared> -> <worker>"``, empty when the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hewer.engine.core.definition import (
    DEFAULT_SCHEDULE_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
)
from hewer.engine.core.durations import InvalidDuration, format_duration, parse_duration_or

__all__ = ["definition_diff", "summarize"]

_MAX_VALUE_CHARS = 48
_MAX_LINES = 8


def _seconds(value: Any, default: float) -> Any:
    """A duration in one canonical spelling ("60s" and "1m" are both "1m")."""
    try:
        return format_duration(parse_duration_or(str(value or ""), default=default))
    except InvalidDuration:
        return value


def _conditions(raw: Any) -> Any:
    """Conditions with or-group ids renumbered by first appearance (the SDK's are random)."""
    if not isinstance(raw, Mapping):
        return raw
    groups: dict[str, int] = {}
    out: dict[str, Any] = {}
    for kind in sorted(raw):
        items = []
        for cond in raw[kind] or []:
            cond = dict(cond)
            base = dict(cond.get("base") or {})
            gid = str(base.pop("or_group_id", ""))
            base["or_group"] = groups.setdefault(gid, len(groups))
            base.setdefault("expression", "")
            cond["base"] = base
            items.append(cond)
        if items:
            out[kind] = items
    return out


def _task(raw: Mapping[str, Any]) -> dict[str, Any]:
    durable = bool(raw.get("is_durable", False))
    slots = dict(raw.get("slot_requests") or {}) or ({"durable": 1} if durable else {"default": 1})
    return {
        "action": raw.get("action", ""),
        "parents": sorted(str(p) for p in raw.get("parents") or []),
        "timeout": _seconds(raw.get("timeout"), DEFAULT_TIMEOUT_SECONDS),
        "schedule_timeout": _seconds(raw.get("schedule_timeout"), DEFAULT_SCHEDULE_TIMEOUT_SECONDS),
        "retries": int(raw.get("retries") or 0),
        "backoff_factor": raw.get("backoff_factor"),
        "backoff_max_seconds": raw.get("backoff_max_seconds"),
        "is_durable": durable,
        "slot_requests": {str(k): int(v) for k, v in slots.items()},
        "rate_limits": [
            {"key": r.get("key", ""), "units": int(r.get("units") or 1)}
            for r in raw.get("rate_limits") or []
        ],
        "worker_labels": dict(raw.get("worker_labels") or {}),
        "concurrency": list(raw.get("concurrency") or []),
        "conditions": _conditions(raw.get("conditions") or {}),
        "batch": raw.get("batch"),
    }


def _workflow(raw: Mapping[str, Any]) -> dict[str, Any]:
    concurrency = list(raw.get("concurrency_arr") or [])
    if raw.get("concurrency"):
        concurrency.append(raw["concurrency"])
    return {
        "description": raw.get("description") or "",
        "version": raw.get("version") or "",
        "event_triggers": sorted(str(k) for k in raw.get("event_triggers") or []),
        "cron_triggers": sorted(str(c) for c in raw.get("cron_triggers") or []),
        "default_priority": int(raw.get("default_priority") or 1),
        "sticky": raw.get("sticky") or None,
        "concurrency": concurrency,
        "default_filters": list(raw.get("default_filters") or []),
    }


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _tasks(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    tasks = {str(t.get("readable_id", "")): _task(t) for t in raw.get("tasks") or []}
    failure = raw.get("on_failure_task")
    if failure:
        tasks[f"{failure.get('readable_id', '')} (on failure)"] = _task(failure)
    return tasks


def definition_diff(declared: Mapping[str, Any], worker: Mapping[str, Any]) -> list[str]:
    """What the worker's definition changes relative to the declared one (empty: nothing)."""
    lines: list[str] = []
    mine, theirs = _workflow(declared), _workflow(worker)
    for key in mine:
        if mine[key] != theirs[key]:
            lines.append(f"{key}: {_show(mine[key])} -> {_show(theirs[key])}")
    my_tasks, their_tasks = _tasks(declared), _tasks(worker)
    for name in my_tasks:
        if name not in their_tasks:
            lines.append(f"task {name!r}: missing in the worker's definition")
    for name in their_tasks:
        if name not in my_tasks:
            lines.append(f"task {name!r}: not declared")
    for name, task in my_tasks.items():
        other = their_tasks.get(name)
        if other is None:
            continue
        for key in task:
            if task[key] != other[key]:
                lines.append(f"task {name!r} {key}: {_show(task[key])} -> {_show(other[key])}")
    return lines


def summarize(lines: Sequence[str]) -> str | None:
    """One short string for a status field, or None when there is no difference."""
    if not lines:
        return None
    shown = list(lines[:_MAX_LINES])
    if len(lines) > _MAX_LINES:
        shown.append(f"(+{len(lines) - _MAX_LINES} more)")
    return "; ".join(shown)
