"""Pure translations of the custom resources: spec -> engine request, spec -> manifests.

Nothing here does I/O, so unit tests cover it without a cluster or an engine. Invalid input
raises :class:`InvalidSpec` with a ``reason`` (CamelCase, for conditions and Events) and a
message that names the offending field.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from hewer.engine.core.durations import InvalidDuration, parse_duration

GROUP = "hewer.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CRON_METADATA_KEY = "hewer.dev/cron-trigger"
POOL_LABEL = "hewer.dev/worker-pool"
TOKEN_ID_ANNOTATION = "hewer.dev/token-id"
SPEC_HASH_ANNOTATION = "hewer.dev/spec-hash"
MANAGED_BY = "hewer-operator"
DURATIONS = ("SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")
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
_MANAGED_ENV = (
    "HATCHET_CLIENT_TOKEN",
    "HATCHET_CLIENT_HOST_PORT",
    "HATCHET_CLIENT_SERVER_URL",
    "HATCHET_CLIENT_TLS_STRATEGY",
    "HATCHET_CLIENT_NAMESPACE",
    "HEWER_WORKER_POOL",
    "HEWER_WORKER_SLOTS",
    "HEWER_WORKER_DURABLE_SLOTS",
    "HEWER_WORKER_WORKFLOWS",
)


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


def _duration(value: Any, where: str) -> str:
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


def _int(value: Any, where: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InvalidSpec("InvalidSpec", f"{where}: expected an integer, got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise InvalidSpec("InvalidSpec", f"{where}: must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidSpec("InvalidSpec", f"{where}: must be <= {maximum}, got {number}")
    return number


def _str_list(value: Any, where: str) -> list[str]:
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


def _priority(value: Any, where: str) -> int | None:
    if value is None:
        return None
    return _int(value, where, minimum=1, maximum=3)


# -- Workflow -----------------------------------------------------------------------------


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
            entry["max_runs"] = _int(item["maxRuns"], f"{at}.maxRuns", minimum=1)
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
            entry["weight"] = _int(want["weight"], f"{at}.weight")
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
                duration = _duration(cond["sleepFor"], f"{at}.sleepFor")
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
        n: _str_list(t.get("parents"), f"spec.tasks[{i}].parents")
        for i, (n, t) in enumerate(zip(names, raw_tasks, strict=True))
    }
    for special_name, field in ((on_failure, "onFailure"), (on_success, "onSuccess")):
        if special_name is None:
            continue
        if parents_of[special_name]:
            raise InvalidSpec(
                "InvalidSpec",
                f"spec.{field}: task {special_name!r} must not list parents "
                "(they are implied)",
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
            "timeout": _duration(pick("timeout") or "60s", f"{at}.timeout"),
            "schedule_timeout": _duration(
                pick("scheduleTimeout") or "5m", f"{at}.scheduleTimeout"
            ),
            "inputs": "{}",
            "parents": parents_of[task_name],
            "retries": _int(pick("retries") or 0, f"{at}.retries", minimum=0),
            "is_durable": durable,
            "conditions": _conditions(name, task_name, task, known, at),
        }
        if pick("backoffFactor") is not None:
            factor = pick("backoffFactor")
            if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
                raise InvalidSpec("InvalidSpec", f"{at}.backoffFactor: must be a positive number")
            entry["backoff_factor"] = float(factor)
        if pick("backoffMaxSeconds") is not None:
            entry["backoff_max_seconds"] = _int(
                pick("backoffMaxSeconds"), f"{at}.backoffMaxSeconds", minimum=1
            )
        if durable:
            entry["slot_requests"] = {"durable": 1}
        else:
            slots = task.get("slots", 1)
            entry["slot_requests"] = {"default": _int(slots, f"{at}.slots", minimum=1)}
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
                    "units": _int(limit.get("units", 1), f"{at}.rateLimits[{j}].units", minimum=1),
                }
            )
        entry["worker_labels"] = _worker_labels(
            task.get("desiredWorkerLabels"), f"{at}.desiredWorkerLabels"
        )
        entry["concurrency"] = _concurrency(task.get("concurrency"), f"{at}.concurrency")
        built[task_name] = entry

    priority = _priority(spec.get("defaultPriority"), "spec.defaultPriority")
    sticky = spec.get("sticky")
    if sticky is not None and sticky not in ("SOFT", "HARD"):
        raise InvalidSpec("InvalidSpec", "spec.sticky must be SOFT or HARD")
    crons = [
        validate_cron(c, f"spec.onCrons[{i}]")
        for i, c in enumerate(_str_list(spec.get("onCrons"), "spec.onCrons"))
    ]
    registration: dict[str, Any] = {
        "name": name,
        "description": str(spec.get("description") or ""),
        "version": str(spec.get("version") or ""),
        "event_triggers": _str_list(spec.get("onEvents"), "spec.onEvents"),
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
    priority = _priority(spec.get("priority"), "spec.priority")
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
    limit = _int(spec.get("limit"), "spec.limit", minimum=0)
    duration = str(spec.get("duration") or "MINUTE")
    if duration not in DURATIONS:
        raise InvalidSpec("InvalidSpec", f"spec.duration must be one of {', '.join(DURATIONS)}")
    return key, limit, duration


# -- WorkerPool -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineEndpoints:
    """Where worker pods reach the engine (the operator's defaults, or spec.engineRef)."""

    grpc_address: str
    server_url: str


def deployment_name(pool: str) -> str:
    return pool


def token_secret_name(pool: str) -> str:
    return f"{pool}-hewer-token"


def pool_labels(pool: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "hewer-worker",
        "app.kubernetes.io/instance": pool,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        POOL_LABEL: pool,
    }


def pool_selector(pool: str) -> str:
    return f"{POOL_LABEL}={pool}"


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", "WorkerPool"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def token_secret(body: Mapping[str, Any], *, token: str, token_id: str) -> dict[str, Any]:
    meta = body["metadata"]
    pool = meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": token_secret_name(pool),
            "namespace": meta["namespace"],
            "labels": pool_labels(pool),
            "annotations": {TOKEN_ID_ANNOTATION: token_id},
            "ownerReferences": [owner_reference(body)],
        },
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


def _env_value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def pool_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The WorkerPool spec with defaults, validated."""
    template = spec.get("template")
    if not isinstance(template, Mapping) or not str(template.get("image") or "").strip():
        raise InvalidSpec("InvalidSpec", "spec.template.image is required")
    out = {
        "template": dict(template),
        "workflows": _str_list(spec.get("workflows"), "spec.workflows"),
        "slots": _int(spec.get("slots", 100), "spec.slots", minimum=1),
        "durableSlots": _int(spec.get("durableSlots", 1000), "spec.durableSlots", minimum=0),
        "replicas": _int(spec.get("replicas", 1), "spec.replicas", minimum=0),
    }
    for key in ("command", "args"):
        if template.get(key) is not None:
            _str_list(template[key], f"spec.template.{key}")
    env = template.get("env") or []
    if not isinstance(env, list) or not all(isinstance(e, Mapping) and e.get("name") for e in env):
        raise InvalidSpec("InvalidSpec", "spec.template.env: expected a list of {name, ...}")
    return out


def endpoints(spec: Mapping[str, Any], default: EngineEndpoints) -> EngineEndpoints:
    ref = spec.get("engineRef") or {}
    if not isinstance(ref, Mapping):
        raise InvalidSpec("InvalidSpec", "spec.engineRef must be an object")
    return EngineEndpoints(
        grpc_address=str(ref.get("grpcAddress") or default.grpc_address),
        server_url=str(ref.get("serverUrl") or default.server_url),
    )


def deployment(
    body: Mapping[str, Any], *, engine: EngineEndpoints, secret_name: str
) -> dict[str, Any]:
    """The Deployment of a WorkerPool's workers, owned by the pool."""
    meta = body["metadata"]
    pool = meta["name"]
    spec = pool_spec(body.get("spec") or {})
    template = spec["template"]
    labels = pool_labels(pool)
    user_env = [
        copy.deepcopy(dict(e)) for e in template.get("env") or [] if e["name"] not in _MANAGED_ENV
    ]
    env = [
        *user_env,
        {
            "name": "HATCHET_CLIENT_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "token"}},
        },
        _env_value("HATCHET_CLIENT_HOST_PORT", engine.grpc_address),
        _env_value("HATCHET_CLIENT_SERVER_URL", engine.server_url),
        _env_value("HATCHET_CLIENT_TLS_STRATEGY", "none"),
        _env_value("HATCHET_CLIENT_NAMESPACE", ""),
        _env_value("HEWER_WORKER_POOL", pool),
        _env_value("HEWER_WORKER_SLOTS", str(spec["slots"])),
        _env_value("HEWER_WORKER_DURABLE_SLOTS", str(spec["durableSlots"])),
        _env_value("HEWER_WORKER_WORKFLOWS", ",".join(spec["workflows"])),
    ]
    container: dict[str, Any] = {"name": "worker", "image": str(template["image"]), "env": env}
    for key in ("imagePullPolicy", "command", "args", "resources"):
        if template.get(key):
            container[key] = copy.deepcopy(template[key])
    pod_spec: dict[str, Any] = {"containers": [container]}
    for key in ("serviceAccountName", "nodeSelector", "tolerations"):
        if template.get(key):
            pod_spec[key] = copy.deepcopy(template[key])
    dep_spec: dict[str, Any] = {
        "replicas": spec["replicas"],
        "selector": {"matchLabels": {POOL_LABEL: pool}},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(pool),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {SPEC_HASH_ANNOTATION: spec_hash(dep_spec)},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": dep_spec,
    }


def spec_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def deployment_needs_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the live Deployment differs from ours (our hash, or replicas changed)."""
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if annotations.get(SPEC_HASH_ANNOTATION) != desired["metadata"]["annotations"][
        SPEC_HASH_ANNOTATION
    ]:
        return True
    return bool((existing.get("spec") or {}).get("replicas") != desired["spec"]["replicas"])


def pool_readiness(deployment_status: Mapping[str, Any] | None, replicas: int) -> tuple[
    bool, str, str
]:
    """``(ready, reason, message)`` of a pool from its Deployment's status."""
    status = deployment_status or {}
    ready = int(status.get("readyReplicas") or 0)
    if replicas == 0:
        return True, "ScaledToZero", "the pool has 0 replicas"
    if ready >= replicas:
        return True, "Available", f"{ready}/{replicas} workers ready"
    return False, "Progressing", f"{ready}/{replicas} workers ready"
