"""Placement and priority with real SDK workers: what the official suite does not prove.

Three workers start together: ``a`` (label model=fancy) and ``b`` (label memory=512) serve
the sticky and affinity workflows; ``c`` has one slot and serves the slot-release and
priority workflows. Then: HARD sticky never runs elsewhere (it waits while its worker is
paused, with another worker idle), label weights choose the heavier match, a released slot
is reused while its task still runs, and queued runs start in priority order. Bad priorities
and label comparators are refused on every entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import Engine, WorkerProc, bearer, eventually, marks, start_worker
from hatchet_sdk import DesiredWorkerLabel, Hatchet
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.contracts import events_pb2, events_pb2_grpc
from hatchet_sdk.contracts import workflows_pb2 as v0
from hatchet_sdk.contracts import workflows_pb2_grpc as v0_grpc
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1_grpc
from hatchet_sdk.contracts.v1.shared import trigger_pb2
from placement_workflows import (
    AFFINITY,
    PRIORITY,
    RELEASE,
    RELEASE_HOLD_SECONDS,
    STICKY_HARD,
    Hold,
    define_placement,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def placement(hatchet: Hatchet) -> dict[str, Any]:
    return define_placement(hatchet)


@pytest.fixture(scope="module")
def crew(engine: Engine, mark_dir: Path) -> Iterator[dict[str, WorkerProc]]:
    suffix = uuid.uuid4().hex[:6]
    specs: dict[str, dict[str, Any]] = {
        "a": {"workflows": [STICKY_HARD, AFFINITY], "labels": {"model": "fancy"}},
        "b": {"workflows": [STICKY_HARD, AFFINITY], "labels": {"memory": 512}},
        "c": {"workflows": [RELEASE, PRIORITY], "slots": 1},
    }
    with contextlib.ExitStack() as stack:
        crew = {
            key: stack.enter_context(
                start_worker(
                    engine, name=f"e2e-place-{key}-{suffix}", mark_dir=mark_dir, wait=False, **spec
                )
            )
            for key, spec in specs.items()
        }
        for worker in crew.values():
            worker.wait_healthy()
        yield crew


async def worker_id(hatchet: Hatchet, name: str) -> str:
    async def probe() -> str | None:
        rows = (await hatchet.workers.aio_list()).rows or []
        return next((w.metadata.id for w in rows if w.name == name), None)

    return await eventually(probe, within=15, what=f"worker {name} in the REST list")


async def test_hard_sticky_waits_for_its_worker(
    hatchet: Hatchet, placement: dict[str, Any], crew: dict[str, WorkerProc], mark_dir: Path
) -> None:
    ref = await placement[STICKY_HARD].aio_run(wait_for_result=False)
    run_id = ref.workflow_run_id

    async def first_worker() -> str | None:
        return marks(mark_dir, run_id, "first").get(1)

    name = await eventually(first_worker, within=30, what="the first task to start")
    wid = await worker_id(hatchet, name)
    # while `first` runs, pause its worker: the idle other worker may not take `second`
    await hatchet.workers.aio_pause(wid)
    try:

        async def second_queued() -> bool:
            details = await hatchet.runs.aio_get_details(run_id)
            tasks = details.task_runs
            return "second" in tasks and tasks["first"].status == V1TaskStatus.COMPLETED

        await eventually(second_queued, within=30, what="first to finish and second to queue")
        for _ in range(6):  # 3 s: several scheduler rounds with a free worker beside it
            await asyncio.sleep(0.5)
            details = await hatchet.runs.aio_get_details(run_id)
            assert details.task_runs["second"].status == V1TaskStatus.QUEUED
    finally:
        await hatchet.workers.aio_unpause(wid)
    result = await asyncio.wait_for(ref.aio_result(), timeout=30)
    assert {result[t]["worker_name"] for t in ("first", "second", "third")} == {name}

    # and every run of the DAG stays on the worker its first task chose
    results = await asyncio.wait_for(
        asyncio.gather(*(placement[STICKY_HARD].aio_run() for _ in range(4))), timeout=60
    )
    for r in results:
        assert len({r[t]["worker_id"] for t in ("first", "second", "third")}) == 1, r


async def test_label_weights_choose_the_heavier_match(
    placement: dict[str, Any], crew: dict[str, WorkerProc]
) -> None:
    # a: model=fancy meets the weight-10 label; b: memory=512 > 256 meets the weight-100 one
    results = await asyncio.wait_for(
        asyncio.gather(*(placement[AFFINITY].aio_run() for _ in range(6))), timeout=60
    )
    assert {r["worker_name"] for r in results} == {crew["b"].name}

    # trigger-time labels replace the task's: a required label only `a` meets
    only_a = [DesiredWorkerLabel(key="model", value="fancy", required=True)]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(placement[AFFINITY].aio_run(desired_worker_labels=only_a) for _ in range(4))
        ),
        timeout=60,
    )
    assert {r["worker_name"] for r in results} == {crew["a"].name}


async def test_a_released_slot_is_reused(
    placement: dict[str, Any], crew: dict[str, WorkerProc]
) -> None:
    # `c` has one slot: the second run can start only once the first released it
    holder = await placement[RELEASE].aio_run(
        Hold(seconds=RELEASE_HOLD_SECONDS), wait_for_result=False
    )
    follower = await placement[RELEASE].aio_run(Hold(seconds=0), wait_for_result=False)
    held, followed = await asyncio.wait_for(
        asyncio.gather(holder.aio_result(), follower.aio_result()), timeout=60
    )
    assert held["worker_name"] == followed["worker_name"] == crew["c"].name
    assert followed["started"] < held["finished"] - 1.0, (held, followed)


async def test_queued_runs_start_in_priority_order(
    hatchet: Hatchet, placement: dict[str, Any], crew: dict[str, WorkerProc]
) -> None:
    wf = placement[PRIORITY]
    # occupy `c`'s only slot, then queue runs of mixed priorities behind it
    blocker = await wf.aio_run(Hold(seconds=3), wait_for_result=False)

    async def running() -> bool:
        details = await hatchet.runs.aio_get_details(blocker.workflow_run_id)
        return details.status == V1TaskStatus.RUNNING

    await eventually(running, within=30, what="the blocker to start")
    priorities = [1, 3, 2, 2, 1, 3, 3, 1, 2]
    refs = await wf.aio_run_many(
        [wf.create_bulk_run_item(Hold(seconds=0.05), priority=p) for p in priorities],
        wait_for_result=False,
    )
    results = await asyncio.wait_for(asyncio.gather(*(r.aio_result() for r in refs)), timeout=60)
    await asyncio.wait_for(blocker.aio_result(), timeout=30)
    started = sorted(results, key=lambda r: r["started"])
    order = [r["priority"] for r in started]
    assert order == sorted(priorities, reverse=True), order


# -- bad input -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel(engine: Engine) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(engine.host_port)
    yield ch
    ch.close()


def refused(call: Any, request: Any, engine: Engine) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=20, metadata=bearer(engine.token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return str(info.value.details())


@pytest.mark.parametrize("priority", [0, 4, -1])
def test_out_of_range_priority_is_refused_everywhere(
    channel: grpc.Channel, engine: Engine, crew: dict[str, WorkerProc], priority: int
) -> None:
    name = AFFINITY  # registered by the crew's workers: only the priority is wrong
    wanted = f"priority must be between 1 and 3, got {priority}"
    admin = v0_grpc.WorkflowServiceStub(channel)
    trigger = trigger_pb2.TriggerWorkflowRequest(name=name, input="{}", priority=priority)
    assert wanted in refused(admin.TriggerWorkflow, trigger, engine)
    bulk = v0.BulkTriggerWorkflowRequest(
        workflows=[trigger_pb2.TriggerWorkflowRequest(name=name, input="{}"), trigger]
    )
    assert wanted in refused(admin.BulkTriggerWorkflow, bulk, engine)
    schedule = v0.ScheduleWorkflowRequest(name=name, input="{}", priority=priority)
    schedule.schedules.add().GetCurrentTime()
    assert wanted in refused(admin.ScheduleWorkflow, schedule, engine)
    v1_admin = v1_grpc.AdminServiceStub(channel)
    run = v1.TriggerWorkflowRunRequest(workflow_name=name, input=b"{}", priority=priority)
    assert wanted in refused(v1_admin.TriggerWorkflowRun, run, engine)
    push = events_pb2.PushEventRequest(key="e2e:prio", payload="{}", priority=priority)
    assert wanted in refused(events_pb2_grpc.EventsServiceStub(channel).Push, push, engine)

    tenant = engine.tenant_of()
    rest = [
        (
            f"/api/v1/stable/tenants/{tenant}/workflow-runs/trigger",
            {"workflowName": name, "input": {}, "priority": priority},
        ),
        (
            f"/api/v1/tenants/{tenant}/workflows/{name}/crons",
            {
                "cronName": f"c-{uuid.uuid4().hex[:6]}",
                "cronExpression": "0 * * * *",
                "input": {},
                "additionalMetadata": {},
                "priority": priority,
            },
        ),
        (
            f"/api/v1/tenants/{tenant}/workflows/{name}/scheduled",
            {
                "triggerAt": "2099-01-01T00:00:00Z",
                "input": {},
                "additionalMetadata": {},
                "priority": priority,
            },
        ),
    ]
    for path, body in rest:
        response = engine.rest("POST", path, json=body)
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert "priority" in response.text, response.text
    engine.assert_alive()


def test_bad_labels_and_priorities_register_nothing(channel: grpc.Channel, engine: Engine) -> None:
    stub = v1_grpc.AdminServiceStub(channel)
    name = f"e2e-bad-labels-{uuid.uuid4().hex[:6]}"
    task = v1.CreateTaskOpts(
        readable_id="t",
        action=f"{name}:t",
        worker_labels={
            "memory": trigger_pb2.DesiredWorkerLabels(
                str_value="lots", comparator=trigger_pb2.GREATER_THAN
            )
        },
    )
    details = refused(
        stub.PutWorkflow, v1.CreateWorkflowVersionRequest(name=name, tasks=[task]), engine
    )
    assert "'memory'" in details and "GREATER_THAN compares integers" in details
    plain = v1.CreateTaskOpts(readable_id="t", action=f"{name}:t")
    details = refused(
        stub.PutWorkflow,
        v1.CreateWorkflowVersionRequest(name=name, tasks=[plain], default_priority=4),
        engine,
    )
    assert "default_priority must be 1..3, got 4" in details
    # nothing was registered under that name
    trigger = trigger_pb2.TriggerWorkflowRequest(name=name, input="{}")
    assert "not found" in refused(
        v0_grpc.WorkflowServiceStub(channel).TriggerWorkflow, trigger, engine
    )


def test_bad_trigger_labels_are_refused(
    channel: grpc.Channel, engine: Engine, crew: dict[str, WorkerProc]
) -> None:
    trigger = trigger_pb2.TriggerWorkflowRequest(
        name=AFFINITY,
        input="{}",
        desired_worker_labels={
            "model": trigger_pb2.DesiredWorkerLabels(
                str_value="big", comparator=trigger_pb2.LESS_THAN
            )
        },
    )
    details = refused(v0_grpc.WorkflowServiceStub(channel).TriggerWorkflow, trigger, engine)
    assert "'model'" in details and "LESS_THAN compares integers" in details
