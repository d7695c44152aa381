"""EngineMetrics counts a batch of state changes and assignments per kind, per tenant."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hewer.engine.server import settle_heap
from hewer.engine.services.metrics import EngineMetrics


@dataclass
class Event:
    event_type: str
    message: str | None = None


def value(metrics: EngineMetrics, name: str, tenant: str | None = None) -> float:
    labels = {"tenant_id": tenant} if tenant else {}
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_a_batch_of_events_is_counted_by_kind_and_tenant() -> None:
    m = EngineMetrics()
    m.task_events(
        "t1",
        [
            Event("QUEUED"),
            Event("QUEUED"),
            Event("COMPLETED"),
            Event("CANCELLED", "SCHEDULING_TIMED_OUT: waited too long"),
            Event("CANCELLED", "cancelled by the user"),
            Event("STARTED"),  # not counted by any metric
        ],
    )
    m.task_events("t2", [Event("FAILED"), Event("RETRYING")])
    assert value(m, "hatchet_created_tasks_total") == 2
    assert value(m, "hatchet_tenant_created_tasks_total", "t1") == 2
    assert value(m, "hatchet_tenant_succeeded_tasks_total", "t1") == 1
    assert value(m, "hatchet_cancelled_tasks_total") == 2
    assert value(m, "hatchet_scheduling_timed_out_total") == 1
    assert value(m, "hatchet_tenant_scheduling_timed_out", "t1") == 1
    assert value(m, "hatchet_failed_tasks_total") == 1
    assert value(m, "hatchet_tenant_failed_tasks_total", "t1") == 0
    assert value(m, "hatchet_tenant_failed_tasks_total", "t2") == 1
    assert value(m, "hatchet_tenant_retried_tasks_total", "t2") == 1


def test_assigned_rows_count_each_row_and_observe_each_wait() -> None:
    m = EngineMetrics()
    now = datetime.now(UTC)
    rows = [
        {"queued_at": now - timedelta(seconds=1), "run_created_at": now, "retry_count": 0},
        {"queued_at": now - timedelta(seconds=2), "run_created_at": now, "retry_count": 1},
        {"queued_at": None, "run_created_at": None, "retry_count": 0},
    ]
    m.assigned_rows("t1", rows)
    m.assigned_rows("t1", [])
    assert value(m, "hatchet_assigned_tasks_total") == 3
    assert value(m, "hatchet_tenant_assigned_tasks", "t1") == 3
    assert value(m, "hatchet_queued_to_assigned_total") == 2
    assert value(m, "hatchet_tenant_queued_to_assigned", "t1") == 2
    assert value(m, "hatchet_queued_to_assigned_seconds_count") == 2
    assert value(m, "hatchet_tenant_queued_to_assigned_time_seconds_count", "t1") == 2
    assert value(m, "hatchet_tenant_queued_to_assigned_time_seconds_sum", "t1") >= 3
    # only first attempts measure trigger to start
    assert value(m, "hewer_trigger_to_start_seconds_count", "t1") == 1


def test_settle_heap_freezes_the_startup_heap() -> None:
    thresholds = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] > thresholds[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
