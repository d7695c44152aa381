"""The pre-eviction durable API (``RegisterDurableEvent`` + ``ListenForDurableEvent``) that
SDK releases older than the durable-task stream use: an official SDK worker told the engine
is v0.79 sleeps and waits for an event through it, and bad registrations are refused
with a clear status.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import HERE, Engine, WorkerProc, eventually, start_worker
from hatchet_sdk import Hatchet
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.contracts.v1 import dispatcher_pb2 as pb
from hatchet_sdk.contracts.v1.dispatcher_pb2_grpc import V1DispatcherStub
from hatchet_sdk.contracts.v1.shared import condition_pb2 as cond
from legacy_durable_worker import LEGACY_DURABLE, LEGACY_EVENT, define_legacy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def legacy_worker(engine: Engine, mark_dir: Path) -> Iterator[WorkerProc]:
    with start_worker(
        engine,
        name=f"e2e-legacy-{uuid.uuid4().hex[:6]}",
        workflows=[LEGACY_DURABLE],
        mark_dir=mark_dir,
        script=HERE / "workers" / "legacy_durable_worker.py",
    ) as worker:
        yield worker


async def test_old_sdk_sleeps_and_waits_through_the_legacy_api(
    hatchet: Hatchet, legacy_worker: WorkerProc
) -> None:
    workflow = define_legacy(hatchet)
    ref = await workflow.aio_run(wait_for_result=False)

    async def running() -> bool:
        details = await hatchet.runs.aio_get_details(ref.workflow_run_id)
        return any(t.status == V1TaskStatus.RUNNING for t in details.task_runs.values())

    await eventually(running, within=20, what="the legacy durable task runs")
    await asyncio.sleep(1.5)  # past its sleep, into the event wait
    await hatchet.event.aio_push(LEGACY_EVENT, {"approved": False})  # the CEL says no
    await asyncio.sleep(0.5)
    await hatchet.event.aio_push(LEGACY_EVENT, {"approved": True, "by": "ops"})
    result: dict[str, Any] = await asyncio.wait_for(ref.aio_result(), timeout=30)

    assert result["listener"] == "PreEvictionDurableEventListener", legacy_worker.log()
    assert result["slept_seconds"] == 1.0
    assert result["approval"] == {"CREATE": {LEGACY_EVENT: [{"approved": True, "by": "ops"}]}}


def _stub(engine: Engine) -> tuple[V1DispatcherStub, grpc.Channel, tuple[tuple[str, str]]]:
    channel = grpc.insecure_channel(engine.host_port)
    return V1DispatcherStub(channel), channel, (("authorization", f"Bearer {engine.token}"),)


def _sleep(duration: str) -> cond.DurableEventListenerConditions:
    return cond.DurableEventListenerConditions(
        sleep_conditions=[
            cond.SleepMatchCondition(
                base=cond.BaseMatchCondition(readable_data_key="s", or_group_id="g"),
                sleep_for=duration,
            )
        ]
    )


@pytest.mark.parametrize(
    ("task_id", "conditions", "code", "message"),
    [
        ("not-a-uuid", _sleep("1s"), grpc.StatusCode.INVALID_ARGUMENT, "task_id"),
        (str(uuid.uuid4()), _sleep("1s"), grpc.StatusCode.NOT_FOUND, "not found"),
        (str(uuid.uuid4()), _sleep("-5s"), grpc.StatusCode.INVALID_ARGUMENT, "sleep"),
        (
            str(uuid.uuid4()),
            cond.DurableEventListenerConditions(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at least one",
        ),
    ],
    # the random ids stay out of the test ids: every collection must name the same tests
    ids=["bad-task-id", "unknown-task", "negative-sleep", "no-condition"],
)
def test_bad_registrations_are_refused(
    engine: Engine,
    task_id: str,
    conditions: cond.DurableEventListenerConditions,
    code: grpc.StatusCode,
    message: str,
) -> None:
    stub, channel, metadata = _stub(engine)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.RegisterDurableEvent(
            pb.RegisterDurableEventRequest(
                task_id=task_id, signal_key="sleep:1s-0", conditions=conditions
            ),
            metadata=metadata,
            timeout=10,
        )
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")
