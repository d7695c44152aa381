"""Workflow resources -> the registration the Python SDK would send: tasks, DAG checks
(missing parents, cycles), conditions, concurrency and worker labels.

Pure (no I/O); invalid input raises :class:`InvalidSpec` naming the offending field.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from hewer.operator.spec_common import (
    InvalidSpec,
    check_duration,
    check_int,
    check_priority,
    check_str_list,
    validate_cron,
)

LIMIT_STRATEGIES = ("GROUP_ROUND_ROBIN", "CANCEL_IN_PROGRESS", "CANCEL_NEWEST")
COMPARATORS = (
    "EQUAL",
    "NOT_EQUAL",
    "GREATER_THAN",
    "GREATER_THAN_OR_EQUAL",
    "LESS_THAN",
    "LESS_THAN_OR_EQUAL",
)
# or-group ids must be stable, or every registration would change the checksum
_OR_GROUP_NAMESPACE = uuid.UUID("6f1c3a52-2b7e-4d3c-9f0e-6b1f1d1d2a11")


def workflow_engine_name(spec: Mapping[str, Any], metadata_name: str) -> str:
    name = str(spec.get("name") or metadata_name).strip()
    if not name:
        raise InvalidSpec("InvalidSpec", "spec.name: the workflow name is empty")
    return name


def _concurrency(items: Any, where: str) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidSpec("InvalidSpec", f"{where}: expected a list")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping) or not str(item.get("expression") or "").strip():
            raise InvalidSpec("InvalidSpec", f"{at}.expression is required")
        entry: dict[str, Any] = {"expression": str(item["expression"])}
        if item.get("maxRuns") is not None:
            entry["max_runs"] = check_int(item["maxRuns"], f"{at}.maxRuns", minimum=1)
        strategy = item.get("limitStrategy")
        if strategy is not None:
            if strategy not in LIMIT_STRATEGIES:
                choices = ", ".join(LIMIT_STRATEGIES)
                raise InvalidSpec("InvalidSpec", f"{at}.limitStrategy must be one of {choices}")
            entry["limit_strategy"] = strategy
        out.append(entry)
    return out


def _worker_labels(labels: Any, where: str) -> dict[str, Any]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidSpec("InvalidSpec", f"{where}: expected a map of label -> requirement")
    out: dict[str, Any] = {}
    for key, want in labels.items():
        at = f"{where}.{key}"
        if not isinstance(want, Mapping) or "value" not in want:
            raise InvalidSpec("InvalidSpec", f"{at}.value is required")
        value = want["value"]
        entry: dict[str, Any] = (
            {"int_value": int(value)}
            if isinstance(value, int) and not isinstance(value, bool)
            else {"str_value": str(value)}
        )
        if want.get("required") is not None:
            entry["required"] = bool(want["required"])
        comparator = want.get("comparator")
        if comparator is not None:
            if comparator not in COMPARATORS:
                raise InvalidSpec(
                    "InvalidSpec", f"{at}.comparator must be one of {', '.join(COMPARATORS)}"
                )
            entry["comparator"] = comparator
        if want.get("weight") is not None:
            entry["weight"] = check_int(want["weight"], f"{at}.weight")
        out[str(key)] = entry
    return out


def _conditions(
    workflow: str, task: str, raw: Mapping[str, Any], known: set[str], where: str
) -> dict[str, Any]:
    sleeps: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    parents: list[dict[str, Any]] = []
    keys: set[str] = set()
    for field, action in (("waitFor", "QUEUE"), ("cancelIf", "CANCEL"), ("skipIf", "SKIP")):
        items = raw.get(field)
        if items is None:
            continue
        if not isinstance(items, list):
            raise InvalidSpec("InvalidSpec", f"{where}.{field}: expected a list")
        for i, cond in enumerate(items):
            at = f"{where}.{field}[{i}]"
            if not isinstance(cond, Mapping):
                raise InvalidSpec("InvalidSpec", f"{at}: expected an object")
            group = cond.get("orGroup")
            group_key = f"{workflow}/{task}/group/{group}" if group else f"{workflow}/{task}/{at}"
            expression = str(cond.get("expression") or "")
            base: dict[str, Any] = {
                "action": action,
                "or_group_id": str(uuid.uuid5(_OR_GROUP_NAMESPACE, group_key)),
                "expression": expression,
            }
            kinds = [k for k in ("sleepFor", "eventKey", "parent") if cond.get(k)]
            if len(kinds) != 1:
                raise InvalidSpec(
                    "InvalidSpec", f"{at}: set exactly one of sleepFor, eventKey or parent"
                )
            if kinds[0] == "sleepFor":
                duration = check_duration(cond["sleepFor"], f"{at}.sleepFor")
                base["readable_data_key"] = f"sleep:{duration}"
                sleeps.append({"base": base, "sleep_for": duration})
            elif kinds[0] == "eventKey":
                base["readable_data_key"] = str(cond["eventKey"])
                events.append({"base": base, "user_event_key": str(cond["eventKey"])})
            else:
                parent = str(cond["parent"])
                if parent not in known:
                    raise InvalidSpec(
                        "MissingTask", f"{at}.parent: task {parent!r} is not in spec.tasks"
                    )
                base["readable_data_key"] = parent + (f":{expression}" if expression else "")
                parents.append({"base": base, "parent_readable_id": parent})
            if base["readable_data_key"] in keys:
                raise InvalidSpec(
                    "InvalidSpec", f"{at}: two conditions of task {task!r} are the same"
                )
            keys.add(base["readable_data_key"])
    out: dict[str, Any] = {}
    if parents:
        out["parent_override_conditions"] = parents
    if sleeps:
        out["sleep_conditions"] = sleeps
    if events:
        out["user_event_conditions"] = events
    return out


def _check_dag(tasks: Mapping[str, Sequence[str]]) -> None:
    """Missing parents and cycles, with the exact task and path."""
    for name, parents in tasks.items():
        for parent in parents:
            if parent not in tasks:
                raise InvalidSpec(
                    "MissingParent",
                    f"task {name!r} names parent {parent!r}, which is not in spec.tasks",
                )
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node) :], node]
            raise InvalidSpec(
                "DependencyCycle", f"the parents of spec.tasks form a cycle: {' -> '.join(cycle)}"
            )
        state[node] = 1
        for parent in tasks[node]:
            visit(parent, [*path, node])
        state[node] = 2

    for name in tasks:
        visit(name, [])


def workflow_registration(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The registration the Python SDK would send for this workflow (proto field names).

    Task actions are ``<workflow name lowercased>:<task name>``, the SDK's convention, so
    SDK workers that serve these tasks receive them.
    """
    raw_tasks = spec.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise InvalidSpec("InvalidSpec", "spec.tasks: at least one task is required")
    defaults = spec.get("taskDefaults") or {}
    if not isinstance(defaults, Mapping):
        raise InvalidSpec("InvalidSpec", "spec.taskDefaults: expected an object")
    names: list[str] = []
    for i, task in enumerate(raw_tasks):
        if not isinstance(task, Mapping) or not str(task.get("name") or "").strip():
            raise InvalidSpec("InvalidSpec", f"spec.tasks[{i}].name is required")
        task_name = str(task["name"]).strip()
        if ":" in task_name or any(c.isspace() for c in task_name):
            raise InvalidSpec(
                "InvalidSpec", f"spec.tasks[{i}].name {task_name!r}: no ':' or spaces allowed"
            )
        if task_name in names:
            raise InvalidSpec(
                "DuplicateTask", f"spec.tasks[{i}]: duplicate task name {task_name!r}"
            )
        names.append(task_name)
    known = set(names)

    def special(field: str) -> str | None:
        ref = spec.get(field)
        if ref is None:
            return None
        task_name = ref.get("task") if isinstance(ref, Mapping) else None
        if not task_name:
            raise InvalidSpec("InvalidSpec", f"spec.{field}.task is required")
        if task_name not in known:
            raise InvalidSpec(
                "MissingTask", f"spec.{field}.task: task {task_name!r} is not in spec.tasks"
            )
        return str(task_name)

    on_failure = special("onFailure")
    on_success = special("onSuccess")
    if on_failure is not None and on_failure == on_success:
        raise InvalidSpec("InvalidSpec", "spec.onFailure and spec.onSuccess name the same task")
    parents_of = {
        n: check_str_list(t.get("parents"), f"spec.tasks[{i}].parents")
        for i, (n, t) in enumerate(zip(names, raw_tasks, strict=True))
    }
    for special_name, field in ((on_failure, "onFailure"), (on_success, "onSuccess")):
        if special_name is None:
            continue
        if parents_of[special_name]:
            raise InvalidSpec(
                "InvalidSpec",
                f"spec.{field}: task {special_name!r} must not list parents (they are implied)",
            )
        dependents = [n for n, ps in parents_of.items() if special_name in ps]
        if dependents:
            raise InvalidSpec(
                "InvalidSpec",
                f"spec.{field}: task {special_name!r} cannot be a parent (of {dependents[0]!r})",
            )
    _check_dag(parents_of)
    if on_success is not None:
        regular = [n for n in names if n not in (on_success, on_failure)]
        leaves = [n for n in regular if not any(n in parents_of[m] for m in regular)]
        parents_of[on_success] = leaves

    service = name.lower()
    built: dict[str, dict[str, Any]] = {}
    for i, (task_name, task) in enumerate(zip(names, raw_tasks, strict=True)):
        at = f"spec.tasks[{i}]"

        def pick(key: str, task: Mapping[str, Any] = task) -> Any:
            return task.get(key, defaults.get(key))

        durable = bool(task.get("durable", False))
        entry: dict[str, Any] = {
            "readable_id": task_name,
            "action": f"{service}:{task_name}",
            "timeout": check_duration(pick("timeout") or "60s", f"{at}.timeout"),
            "schedule_timeout": check_duration(
                pick("scheduleTimeout") or "5m", f"{at}.scheduleTimeout"
            ),
            "inputs": "{}",
            "parents": parents_of[task_name],
            "retries": check_int(pick("retries") or 0, f"{at}.retries", minimum=0),
            "is_durable": durable,
            "conditions": _conditions(name, task_name, task, known, at),
        }
        if pick("backoffFactor") is not None:
            factor = pick("backoffFactor")
            if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
                raise InvalidSpec("InvalidSpec", f"{at}.backoffFactor: must be a positive number")
            entry["backoff_factor"] = float(factor)
        if pick("backoffMaxSeconds") is not None:
            entry["backoff_max_seconds"] = check_int(
                pick("backoffMaxSeconds"), f"{at}.backoffMaxSeconds", minimum=1
            )
        if durable:
            entry["slot_requests"] = {"durable": 1}
        else:
            slots = task.get("slots", 1)
            entry["slot_requests"] = {"default": check_int(slots, f"{at}.slots", minimum=1)}
        limits = task.get("rateLimits") or []
        if not isinstance(limits, list):
            raise InvalidSpec("InvalidSpec", f"{at}.rateLimits: expected a list")
        entry["rate_limits"] = []
        for j, limit in enumerate(limits):
            if not isinstance(limit, Mapping) or not limit.get("key"):
                raise InvalidSpec("InvalidSpec", f"{at}.rateLimits[{j}].key is required")
            entry["rate_limits"].append(
                {
                    "key": str(limit["key"]),
                    "units": check_int(
                        limit.get("units", 1), f"{at}.rateLimits[{j}].units", minimum=1
                    ),
                }
            )
        entry["worker_labels"] = _worker_labels(
            task.get("desiredWorkerLabels"), f"{at}.desiredWorkerLabels"
        )
        entry["concurrency"] = _concurrency(task.get("concurrency"), f"{at}.concurrency")
        built[task_name] = entry

    priority = check_priority(spec.get("defaultPriority"), "spec.defaultPriority")
    sticky = spec.get("sticky")
    if sticky is not None and sticky not in ("SOFT", "HARD"):
        raise InvalidSpec("InvalidSpec", "spec.sticky must be SOFT or HARD")
    crons = [
        validate_cron(c, f"spec.onCrons[{i}]")
        for i, c in enumerate(check_str_list(spec.get("onCrons"), "spec.onCrons"))
    ]
    registration: dict[str, Any] = {
        "name": name,
        "description": str(spec.get("description") or ""),
        "version": str(spec.get("version") or ""),
        "event_triggers": check_str_list(spec.get("onEvents"), "spec.onEvents"),
        "cron_triggers": crons,
        "tasks": [built[n] for n in names if n != on_failure],
        "concurrency_arr": _concurrency(spec.get("concurrency"), "spec.concurrency"),
        "default_priority": priority or 1,
    }
    if sticky is not None:
        registration["sticky"] = sticky
    if on_failure is not None:
        registration["on_failure_task"] = built[on_failure]
    return registration
