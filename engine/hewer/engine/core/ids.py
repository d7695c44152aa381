"""Identifiers of runs, tasks and events: time-ordered UUIDs (RFC 9562 version 7).

The first 48 bits of a version-7 UUID are the Unix time in milliseconds, so ids sort by
creation time. ``workflow_runs``, ``tasks``, ``task_events`` (migration 0016) and ``events``
(0019) are range-partitioned by id (one partition per UTC day), which makes the id itself
the partition key: a lookup by id prunes to one partition, the primary keys stay plain
``(id)``, and new rows go to the right-hand edge of a small, hot B-tree instead of random
pages of a large one.

A run's tasks reuse the run's 48-bit time prefix, so every task lives in its run's
partition and a day's runs, tasks and task events are dropped together (and a unique index
on each partition keeps one task per step of a run). A child run spawned
by a task gets a deterministic id (the parent task's prefix and a hash of the spawn key):
spawning the same child twice hits the primary key, which is how a retried spawn is
recognised without a global unique index (partitioned tables cannot have one).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import UTC, date, datetime, timedelta

__all__ = [
    "child_run_id",
    "day_bounds",
    "new_event_id",
    "new_run_id",
    "task_id_for",
    "time_floor",
]

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0x2 << 62
_RANDOM_A_MASK = (1 << 12) - 1
_RANDOM_B_MASK = (1 << 62) - 1


def _from_parts(*, millis: int, random_bits: int) -> uuid.UUID:
    rand_a = (random_bits >> 62) & _RANDOM_A_MASK
    rand_b = random_bits & _RANDOM_B_MASK
    value = (millis & ((1 << 48) - 1)) << 80 | _VERSION_7 | rand_a << 64 | _VARIANT_RFC | rand_b
    return uuid.UUID(int=value)


def _random74() -> int:
    return int.from_bytes(os.urandom(10), "big") >> 6


def new_run_id(*, millis: int | None = None) -> str:
    """A fresh run id stamped with the current time (or ``millis``)."""
    stamp = time.time_ns() // 1_000_000 if millis is None else millis
    return str(_from_parts(millis=stamp, random_bits=_random74()))


def new_event_id() -> str:
    """A fresh id for a user event (same layout as a run id)."""
    return new_run_id()


def _prefix_millis(owner_id: str) -> int:
    return uuid.UUID(owner_id).int >> 80


def task_id_for(run_id: str) -> str:
    """A fresh task id in ``run_id``'s partition (same 48-bit time prefix). Fresh, not
    derived from the step: a replay recreates downstream tasks under new ids."""
    return str(_from_parts(millis=_prefix_millis(run_id), random_bits=_random74()))


def child_run_id(*, parent_task_id: str, spawn_key: str) -> str:
    """The id of the child run ``parent_task_id`` spawns under ``spawn_key``: the same
    inputs always give the same id, so a repeated spawn collides on the primary key."""
    digest = hashlib.sha256(f"{parent_task_id}.{spawn_key}".encode()).digest()
    random_bits = int.from_bytes(digest[:10], "big") >> 6
    return str(_from_parts(millis=_prefix_millis(parent_task_id), random_bits=random_bits))


def time_floor(at: datetime) -> str:
    """The smallest version-7 id that can be stamped at ``at`` (inclusive lower bound)."""
    millis = int(at.timestamp() * 1000)
    return str(uuid.UUID(int=(millis & ((1 << 48) - 1)) << 80))


def day_bounds(day: date) -> tuple[str, str]:
    """Partition bounds ``[lower, upper)`` of the UTC day ``day``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return time_floor(start), time_floor(start + timedelta(days=1))
