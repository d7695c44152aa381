"""core/ids.py: time-ordered ids that decide the partition a run, task or event lands in."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from hewer.engine.core.ids import child_run_id, day_bounds, new_run_id, task_id_for, time_floor


def test_run_ids_are_version_7_and_carry_their_time() -> None:
    at = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)
    run_id = new_run_id(millis=int(at.timestamp() * 1000))
    parsed = uuid.UUID(run_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == int(at.timestamp() * 1000)
    lower, upper = day_bounds(date(2026, 12, 5))
    assert lower <= run_id < upper
    assert len({new_run_id(millis=1) for _ in range(1000)}) == 1000


def test_tasks_share_their_runs_prefix() -> None:
    run_id = new_run_id()
    a, b = task_id_for(run_id), task_id_for(run_id)
    assert a != b
    assert {uuid.UUID(x).int >> 80 for x in (run_id, a, b)} == {uuid.UUID(run_id).int >> 80}
    assert uuid.UUID(a).version == 7


def test_a_child_spawn_has_one_id_per_parent_and_key() -> None:
    parent = new_run_id()
    first = child_run_id(parent_task_id=parent, spawn_key="0")
    assert first == child_run_id(parent_task_id=parent, spawn_key="0")
    assert first != child_run_id(parent_task_id=parent, spawn_key="1")
    assert first != child_run_id(parent_task_id=new_run_id(), spawn_key="0")


def test_day_bounds_are_consecutive_and_ordered() -> None:
    _, upper = day_bounds(date(2026, 12, 31))
    lower, _ = day_bounds(date(2027, 1, 1))
    assert upper == lower == time_floor(datetime(2027, 1, 1, tzinfo=UTC))
    assert day_bounds(date(2026, 1, 1))[0] < lower
