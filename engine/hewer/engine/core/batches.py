"""Batch assignment as pure decisions: the registered config, group keys, when a group flushes.

A batch task (``@hatchet.batch_task``) receives many queued runs of one task at once, in one
slot: a ``START_BATCH`` action whose payload maps each task's external id to its usual action
payload. Items are grouped by a CEL group key; a group is flushed (assigned as one batch)
when it holds ``max_size`` items, when the next item would push the message past what the SDK
accepts (4 MiB), or when its oldest item has waited ``max_interval``. The service
(:mod:`hewer.engine.services.batches`) feeds these functions rows and applies the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hewer.engine.core.cel import CelError, check, evaluate_string

# The Python SDK receives at most 4 MiB per message (grpc_max_recv_message_length); the rest
# of the AssignedAction (ids, metadata) fits in the margin.
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024
# bytes an item adds to the START_BATCH payload besides its input and parents: the JSON keys
# of its entry and of the action payload, its ids
ITEM_OVERHEAD_BYTES = 256
KEY_ERROR_PREFIX = "failed to parse batch group key expression"


class InvalidBatchConfig(ValueError):
    """A batch config the engine refuses at registration."""


class GroupKeyError(ValueError):
    """A task whose group key cannot be evaluated to a string; the task fails."""


class FlushReason:
    SIZE = "batch_size_reached"
    PAYLOAD = "payload_size_reached"
    INTERVAL = "interval_elapsed"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchConfig:
    max_size: int
    max_interval_ms: int | None = None  # None: a group waits until it is full
    group_key: str | None = None
    group_max_runs: int | None = None  # None: no limit on running batches per key
    broadcast_output: bool = False

    @property
    def max_interval_seconds(self) -> float | None:
        return None if self.max_interval_ms is None else self.max_interval_ms / 1000.0


def _int_field(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidBatchConfig(f"{name} must be an integer, got {value!r}") from None


def parse_batch_config(raw: Mapping[str, Any] | None) -> BatchConfig | None:
    """The ``TaskBatchConfig`` of a registration (proto field names), validated.

    A present but empty config (``batch_max_size`` 0 is the proto default, so it is left out
    of the dict) is refused, not taken for "no batching".
    """
    if raw is None:
        return None
    max_size = _int_field(raw, "batch_max_size")
    if max_size is None or max_size < 1:
        raise InvalidBatchConfig(f"batch_max_size must be at least 1, got {max_size}")
    interval = _int_field(raw, "batch_max_interval_ms")
    if interval is not None and interval < 0:
        raise InvalidBatchConfig(f"batch_max_interval_ms must not be negative, got {interval}")
    max_runs = _int_field(raw, "batch_group_max_runs")
    if max_runs is not None and max_runs < 0:
        raise InvalidBatchConfig(f"batch_group_max_runs must not be negative, got {max_runs}")
    group_key = str(raw.get("batch_group_key") or "").strip() or None
    if group_key is not None:
        try:
            check(group_key)
        except CelError as exc:
            raise InvalidBatchConfig(f"batch_group_key {group_key!r}: {exc}") from None
    return BatchConfig(
        max_size=max_size,
        max_interval_ms=interval,
        group_key=group_key,
        # 0 is the proto's "unset"
        group_max_runs=max_runs or None,
        broadcast_output=bool(raw.get("broadcast_output", False)),
    )


def evaluate_group_key(
    expression: str,
    *,
    input: Mapping[str, Any],
    additional_metadata: Mapping[str, Any],
    parents: Mapping[str, Any],
    workflow_run_id: str,
) -> str:
    """The group key of one task (trimmed), from the step-run CEL variables."""
    try:
        value = evaluate_string(
            expression,
            {
                "input": dict(input),
                "additional_metadata": dict(additional_metadata),
                "parents": dict(parents),
                "workflow_run_id": workflow_run_id,
            },
        )
    except CelError as exc:
        raise GroupKeyError(f"{KEY_ERROR_PREFIX} {expression!r}: {exc}") from None
    return value.strip()


@dataclass(frozen=True, slots=True)
class PendingItem:
    """A queued item of a batch action, in claim order (priority first, then FIFO)."""

    queue_id: int
    key: str
    size_bytes: int
    ready_at: float  # epoch seconds at which it became claimable


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    key: str
    queue_ids: tuple[int, ...]
    reason: str
    oldest_ready_at: float


@dataclass(frozen=True, slots=True)
class FlushPlan:
    batches: tuple[PlannedBatch, ...]
    # epoch seconds at which a group that is waiting for its interval becomes due
    next_deadline: float | None


def _fitting(items: Sequence[PendingItem], *, max_size: int, max_bytes: int) -> int:
    """How many leading items make one batch: at most max_size, within max_bytes, never 0."""
    total = 0
    count = 0
    for item in items[:max_size]:
        if count and total + item.size_bytes > max_bytes:
            break
        total += item.size_bytes
        count += 1
    return count


def plan_flushes(
    items: Sequence[PendingItem],
    *,
    config: BatchConfig,
    now: float,
    running: Mapping[str, int] | None = None,
    max_bytes: int = MAX_BATCH_BYTES,
) -> FlushPlan:
    """Which batches to flush now, oldest group first, and when to look again.

    ``running`` counts the batches per key still running; with ``group_max_runs`` a key gets
    only as many new batches as it has room for (the rest waits for a running one to end,
    which wakes the flusher).
    """
    groups: dict[str, list[PendingItem]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    interval = config.max_interval_seconds
    planned: list[PlannedBatch] = []
    deadlines: list[float] = []
    for key, members in groups.items():
        room = None
        if config.group_max_runs is not None:
            room = config.group_max_runs - (running or {}).get(key, 0)
        rest = members
        while rest and (room is None or room > 0):
            take = _fitting(rest, max_size=config.max_size, max_bytes=max_bytes)
            oldest = min(i.ready_at for i in rest[:take])
            if take == config.max_size:
                reason = FlushReason.SIZE
            elif take < len(rest):
                reason = FlushReason.PAYLOAD
            elif interval is not None and now >= oldest + interval:
                reason = FlushReason.INTERVAL
            else:
                if interval is not None:
                    deadlines.append(oldest + interval)
                break
            planned.append(
                PlannedBatch(
                    key=key,
                    queue_ids=tuple(i.queue_id for i in rest[:take]),
                    reason=reason,
                    oldest_ready_at=oldest,
                )
            )
            rest = rest[take:]
            if room is not None:
                room -= 1
    planned.sort(key=lambda b: b.oldest_ready_at)
    return FlushPlan(batches=tuple(planned), next_deadline=min(deadlines, default=None))


def batch_payload(entries: Sequence[tuple[str, str, str]]) -> str:
    """The START_BATCH ``action_payload``: ``{task id: {"payload": ..., "workflow_run_id"}}``.

    ``entries`` are ``(task_id, workflow_run_id, action_payload_json)``; each action payload
    is spliced in as text (it is already JSON), never re-parsed.
    """
    parts = [
        json.dumps(task_id)
        + ':{"payload":'
        + payload
        + ',"workflow_run_id":'
        + json.dumps(run_id)
        + "}"
        for task_id, run_id, payload in entries
    ]
    return "{" + ",".join(parts) + "}"
