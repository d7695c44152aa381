"""Row-to-model conversions of the REST API, checked against the SDK's own models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hatchet_sdk.clients.rest.models.v1_task_event_type import V1TaskEventType
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.clients.rest.models.v1_task_summary import V1TaskSummary
from hatchet_sdk.clients.rest.models.v1_workflow_type import V1WorkflowType
from hatchet_sdk.clients.rest.models.worker_status import WorkerStatus

from hewer.engine.api.rest import convert
from hewer.engine.api.rest.tasks import log_level, log_levels_filter
from hewer.engine.api.rest.workers import label_value, runtime_info, slot_config, worker_status

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TENANT = str(uuid.uuid4())


def task_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": TENANT,
        "workflow_run_id": str(uuid.uuid4()),
        "step_id": str(uuid.uuid4()),
        "readable_id": "step1",
        "action_id": "wf:step1",
        "status": "COMPLETED",
        "retry_count": 0,
        "output": '{"x": 1}',
        "error": None,
        "is_skipped": False,
        "worker_id": None,
        "created_at": T0,
        "started_at": T0 + timedelta(seconds=1),
        "finished_at": T0 + timedelta(seconds=3),
        "is_durable": False,
        "position": 0,
        "workflow_id": str(uuid.uuid4()),
        "workflow_version_id": str(uuid.uuid4()),
        "input": {"a": 1},
        "additional_metadata": {"k": "v"},
        "parent_task_id": None,
        "workflow_name": "wf",
        "task_steps": 1,
        "num_children": 0,
    }
    row.update(over)
    return row


def run_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": TENANT,
        "workflow_id": str(uuid.uuid4()),
        "workflow_version_id": str(uuid.uuid4()),
        "status": "RUNNING",
        "input": {"a": 1},
        "additional_metadata": {},
        "parent_task_id": None,
        "created_at": T0,
        "started_at": T0,
        "finished_at": None,
        "workflow_name": "my-dag",
        "task_steps": 2,
    }
    row.update(over)
    return row


@pytest.mark.parametrize("status", ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"])
def test_task_status_maps_every_stored_status(status: str) -> None:
    assert convert.task_status(status) == V1TaskStatus(status)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("COMPLETED", V1TaskEventType.FINISHED),
        ("QUEUED", V1TaskEventType.QUEUED),
        ("ASSIGNED", V1TaskEventType.ASSIGNED),
        ("STARTED", V1TaskEventType.STARTED),
        ("FAILED", V1TaskEventType.FAILED),
        ("RETRYING", V1TaskEventType.RETRYING),
        ("CANCELLED", V1TaskEventType.CANCELLED),
        ("TIMED_OUT", V1TaskEventType.TIMED_OUT),
        ("REASSIGNED", V1TaskEventType.REASSIGNED),
        ("SKIPPED", V1TaskEventType.SKIPPED),
        ("NOT_A_TYPE", None),
    ],
)
def test_event_type(stored: str, expected: V1TaskEventType | None) -> None:
    assert convert.event_type(stored) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        ("null", {}),
        ("[1, 2]", {}),
        ("not json", {}),
        ('{"skipped": true}', {"skipped": True}),
    ],
)
def test_parse_output(text: str | None, expected: dict[str, Any]) -> None:
    assert convert.parse_output(text) == expected


def test_int_id_is_stable_and_31_bit() -> None:
    some = str(uuid.uuid4())
    assert convert.int_id(some) == convert.int_id(some.upper())
    assert 0 <= convert.int_id(some) < 2**31


@pytest.mark.parametrize(
    ("total", "offset", "limit", "expected"),
    [
        (0, 0, 50, (1, 1, 1)),
        (120, 0, 50, (1, 3, 2)),
        (120, 100, 50, (3, 3, 3)),
        (5, 0, 0, (1, 1, 1)),
    ],
)
def test_pagination(total: int, offset: int, limit: int, expected: tuple[int, int, int]) -> None:
    page = convert.pagination(total=total, offset=offset, limit=limit)
    assert (page.current_page, page.num_pages, page.next_page) == expected


def test_task_summary_round_trips_through_the_sdk_model() -> None:
    row = task_row(status="FAILED", error="boom", retry_count=2, output="")
    summary = convert.task_summary(row)
    parsed = V1TaskSummary.from_dict(convert.dump(summary))
    assert parsed is not None
    assert parsed.attempt == 3 and parsed.retry_count == 2
    assert parsed.error_message == "boom"
    assert parsed.output == {}
    assert parsed.duration == 2000
    assert parsed.type == V1WorkflowType.TASK
    assert parsed.display_name == f"step1-{int(T0.timestamp())}"
    hidden = convert.task_summary(row, include_payloads=False)
    assert hidden.input == {} and hidden.output == {}


def test_single_task_run_row_is_its_task() -> None:
    run = run_row(task_steps=1)
    task = task_row(id=run["id"], workflow_run_id=run["id"])
    on_failure = task_row(readable_id="on_failure", position=1)
    summary = convert.run_summary(run, [on_failure, task])
    assert summary.task_external_id == run["id"]
    assert summary.children is None


def test_dag_run_row_has_children_and_outputs_by_step() -> None:
    run = run_row(status="FAILED", finished_at=T0 + timedelta(seconds=9))
    tasks = [
        task_row(readable_id="a", output='{"v": 1}', num_children=2),
        task_row(readable_id="b", status="FAILED", output=None, error="b failed"),
    ]
    summary = convert.run_summary(run, tasks)
    parsed = V1TaskSummary.from_dict(convert.dump(summary))
    assert parsed is not None and parsed.children is not None
    assert parsed.type == V1WorkflowType.DAG
    assert len(parsed.children) == 2
    assert parsed.output == {"a": {"v": 1}}
    assert parsed.error_message == "b failed"
    assert parsed.num_spawned_children == 2
    assert parsed.display_name.startswith("my-dag-")
    assert convert.workflow_run(run, tasks).duration == 9000


def test_failed_event_carries_the_error() -> None:
    row = {
        "id": 7,
        "task_id": str(uuid.uuid4()),
        "retry_count": 1,
        "event_type": "FAILED",
        "message": "ValueError: x",
        "output": None,
        "worker_id": None,
        "created_at": T0,
        "readable_id": "s",
        "task_created_at": T0,
    }
    event = convert.task_event(row)
    assert event is not None
    assert event.error_message == "ValueError: x" and event.message == ""
    assert event.attempt == 2
    assert convert.task_event({**row, "event_type": "MYSTERY"}) is None


def test_shape_lists_every_step_with_stable_placeholders() -> None:
    ids = {name: str(uuid.uuid4()) for name in ("a", "b", "c")}
    steps = [
        {"id": ids["a"], "readable_id": "a", "parents": []},
        {"id": ids["b"], "readable_id": "b", "parents": ["a"]},
        {"id": ids["c"], "readable_id": "c", "parents": ["a", "b"]},
    ]
    task_a = str(uuid.uuid4())
    tasks = [{"id": task_a, "step_id": ids["a"]}]
    run_id = str(uuid.uuid4())
    items = convert.shape(run_id, steps, tasks)
    assert [i.task_name for i in items] == ["a", "b", "c"]
    assert items[0].task_external_id == task_a
    assert items[0].children_step_ids == [ids["b"], ids["c"]]
    assert items[1].children_step_ids == [ids["c"]]
    assert items[2].task_external_id == convert.shape(run_id, steps, tasks)[2].task_external_id


@pytest.mark.parametrize(
    ("age", "paused", "expected"),
    [
        (1, False, WorkerStatus.ACTIVE),
        (1, True, WorkerStatus.PAUSED),
        (5, False, WorkerStatus.INACTIVE),
        (60, True, WorkerStatus.INACTIVE),
        (None, False, WorkerStatus.INACTIVE),
    ],
)
def test_worker_status(age: int | None, paused: bool, expected: WorkerStatus) -> None:
    beat = None if age is None else T0 - timedelta(seconds=age)
    assert worker_status(last_heartbeat_at=beat, is_paused=paused, now=T0) == expected


def test_worker_fields() -> None:
    assert label_value("eu") == "eu"
    assert label_value({"intValue": 3}) == "3"
    assert label_value({"str_value": "x"}) == "x"
    info = runtime_info({"sdk_version": "1.0", "language": "python", "junk": 1})
    assert info is not None and info.sdk_version == "1.0" and info.language is not None
    assert runtime_info({"language": "COBOL"}) is None
    assert runtime_info({}) is None
    slots = slot_config({"default": 10, "durable": 2}, {"default": 4})
    assert (slots["default"].limit, slots["default"].available) == (10, 6)
    assert slots["durable"].available == 2


def test_log_levels() -> None:
    assert log_level("warning").value == "WARN"
    assert log_level("CRITICAL").value == "ERROR"
    assert log_level(None).value == "INFO"
    assert log_levels_filter(["WARN"]) == ["WARN", "WARNING"]
