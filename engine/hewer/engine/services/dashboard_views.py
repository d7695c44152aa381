"""Dashboard read models built from rows: a workflow with the policies its definition puts
in effect, a worker with its slots, a WorkerPool with its replicas over time.

Kept apart from ``services/dashboard.py`` (which runs the reads) so that the shaping of a
stored definition, which has many optional parts, reads on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "PoolPoint",
    "PoolView",
    "SlotUse",
    "WorkerView",
    "WorkflowView",
    "pool_views",
    "worker_view",
    "workflow_view",
]

# an asyncpg Record, or a dict in tests: read by column name
Row = Any


@dataclass(frozen=True, slots=True)
class Version:
    id: str
    ordinal: int
    version: str
    created_at: datetime


@dataclass(slots=True)
class WorkflowView:
    id: str
    name: str
    description: str
    paused: bool
    version: str
    ordinal: int | None
    version_count: int
    event_keys: list[str]
    crons: list[str]
    tasks: list[str]
    # "scope: expression (max N, STRATEGY)" for each concurrency rule in effect
    concurrency: list[str]
    # "task: key (units/duration)" for each rate limit a task takes
    rate_limits: list[str]
    sticky: str | None
    default_priority: int | None
    runs_24h: int
    versions: list[Version] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SlotUse:
    kind: str
    used: int
    total: int

    @property
    def free(self) -> int:
        return max(0, self.total - self.used)


@dataclass(frozen=True, slots=True)
class WorkerView:
    id: str
    name: str
    alive: bool
    paused: bool
    slots: list[SlotUse]
    labels: dict[str, Any]
    actions: int
    last_heartbeat_at: datetime | None
    heartbeat_age_seconds: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PoolPoint:
    at: datetime
    desired: int
    current: int
    queued: int | None
    running: int | None
    decision: str | None
    reason: str | None


@dataclass(slots=True)
class PoolView:
    pool: str
    workflows: list[str]
    autoscaling: bool
    min_replicas: int | None
    max_replicas: int | None
    desired: int
    current: int
    ready: int | None
    queued: int | None
    running: int | None
    busy_workers: int | None
    reason: str
    reported_at: datetime
    report_age_seconds: float
    points: list[PoolPoint] = field(default_factory=list)

    @property
    def decisions(self) -> list[PoolPoint]:
        return [p for p in reversed(self.points) if p.decision is not None]


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def _concurrency_rules(scope: str, value: Any) -> list[str]:
    rules = value if isinstance(value, list) else [value] if isinstance(value, Mapping) else []
    out = []
    for rule in rules:
        if not isinstance(rule, Mapping) or not rule.get("expression"):
            continue
        strategy = rule.get("limit_strategy") or "CANCEL_IN_PROGRESS"
        out.append(f"{scope}: {rule['expression']} (max {rule.get('max_runs', 1)}, {strategy})")
    return out


def _rate_limit(task: str, limit: Mapping[str, Any]) -> str:
    key = limit.get("key") or f"dynamic {limit.get('key_expr', '?')}"
    units = limit.get("units", limit.get("units_expr", 1))
    duration = limit.get("duration") or "MINUTE"
    return f"{task}: {key} ({units} units, {duration})"


def workflow_view(row: Row, *, versions: Sequence[Row] = ()) -> WorkflowView:
    definition = _as_dict(row["definition"])
    tasks = [t for t in definition.get("tasks", []) if isinstance(t, Mapping)]
    concurrency = _concurrency_rules("workflow", definition.get("concurrency"))
    concurrency += _concurrency_rules("workflow", definition.get("concurrency_arr"))
    limits = []
    for t in tasks:
        name = str(t.get("readable_id", "?"))
        concurrency += _concurrency_rules(name, t.get("concurrency"))
        limits += [_rate_limit(name, r) for r in t.get("rate_limits", []) if isinstance(r, Mapping)]
    on_failure = definition.get("on_failure_task")
    task_names = [str(t.get("readable_id", "?")) for t in tasks]
    if isinstance(on_failure, Mapping):
        task_names.append(f"{on_failure.get('readable_id', 'on_failure')} (on failure)")
    crons = list(row["crons"] or [])
    return WorkflowView(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"] or "",
        paused=bool(row["is_paused"]),
        version=row["version"] or "",
        ordinal=row["ordinal"],
        version_count=int(row["versions"] or 0),
        event_keys=list(row["event_keys"] or []),
        crons=crons,
        tasks=task_names,
        concurrency=concurrency,
        rate_limits=limits,
        sticky=row["sticky"],
        default_priority=row["default_priority"],
        runs_24h=int(row["runs_24h"] or 0),
        versions=[
            Version(
                id=str(v["id"]),
                ordinal=int(v["ordinal"]),
                version=v["version"] or "",
                created_at=v["created_at"],
            )
            for v in versions
        ],
    )


def worker_view(row: Row, used: Mapping[str, int], *, heartbeat_timeout: float) -> WorkerView:
    config = _as_dict(row["slot_config"])
    slots = [
        SlotUse(kind=kind, used=int(used.get(kind, 0)), total=int(total))
        for kind, total in sorted(config.items())
    ]
    slots += [
        SlotUse(kind=kind, used=int(n), total=0) for kind, n in used.items() if kind not in config
    ]
    beat = row["last_heartbeat_at"]
    age = None if beat is None else max(0.0, (row["db_now"] - beat).total_seconds())
    return WorkerView(
        id=str(row["id"]),
        name=row["name"],
        alive=bool(row["is_active"]) and age is not None and age < heartbeat_timeout,
        paused=bool(row["is_paused"]),
        slots=slots,
        labels=_as_dict(row["labels"]),
        actions=len(row["actions"] or []),
        last_heartbeat_at=beat,
        heartbeat_age_seconds=age,
        created_at=row["created_at"],
    )


def pool_views(reports: Sequence[Row], history: Sequence[Row]) -> list[PoolView]:
    points: dict[str, list[PoolPoint]] = {}
    for h in history:
        points.setdefault(h["pool"], []).append(
            PoolPoint(
                at=h["at"],
                desired=int(h["desired_replicas"]),
                current=int(h["current_replicas"]),
                queued=h["queued"],
                running=h["running"],
                decision=h["decision"],
                reason=h["reason"],
            )
        )
    return [
        PoolView(
            pool=r["pool"],
            workflows=list(r["workflows"] or []),
            autoscaling=bool(r["autoscaling"]),
            min_replicas=r["min_replicas"],
            max_replicas=r["max_replicas"],
            desired=int(r["desired_replicas"]),
            current=int(r["current_replicas"]),
            ready=r["ready_replicas"],
            queued=r["queued"],
            running=r["running"],
            busy_workers=r["busy_workers"],
            reason=r["reason"],
            reported_at=r["reported_at"],
            report_age_seconds=max(0.0, (r["now"] - r["reported_at"]).total_seconds()),
            points=points.get(r["pool"], []),
        )
        for r in reports
    ]
