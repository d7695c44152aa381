"""Bad requests get the gRPC codes the SDK reacts to, and the engine keeps serving.

Raw stubs from ``hatchet_sdk.contracts`` (no SDK retries in between) on one channel. The
codes matter: the SDK retries everything except UNIMPLEMENTED, INVALID_ARGUMENT,
ALREADY_EXISTS, UNAUTHENTICATED, PERMISSION_DENIED and NOT_FOUND (protocol.md §1.0), so a
bad request answered with INTERNAL/UNKNOWN would be re-sent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from e2e_support import Engine, WorkerProc, bearer
from e2e_workflows import ECHO
from hatchet_sdk import EmptyModel, Hatchet
from hatchet_sdk.contracts import dispatcher_pb2 as dpb
from hatchet_sdk.contracts import dispatcher_pb2_grpc
from hatchet_sdk.contracts import workflows_pb2_grpc as v0_grpc
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1_grpc
from hatchet_sdk.contracts.v1.shared.trigger_pb2 import TriggerWorkflowRequest

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def channel(engine: Engine) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(
        engine.host_port, options=[("grpc.max_send_message_length", 16 * MiB)]
    )
    yield ch
    ch.close()


def _rpc_error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=20, **kwargs)
    return info.value


def _trigger(channel: grpc.Channel, engine: Engine, name: str, payload: str) -> grpc.RpcError:
    stub = v0_grpc.WorkflowServiceStub(channel)
    return _rpc_error(
        stub.TriggerWorkflow,
        TriggerWorkflowRequest(name=name, input=payload),
        metadata=bearer(engine.token),
    )


def test_trigger_unknown_workflow(
    channel: grpc.Channel, engine: Engine, main_worker: WorkerProc
) -> None:
    err = _trigger(channel, engine, "e2e-no-such-workflow", "{}")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "e2e-no-such-workflow" in (err.details() or "")


@pytest.mark.parametrize("payload", ["[1]", "not json", '"a string"', "{", "null"])
def test_trigger_input_not_a_json_object(
    channel: grpc.Channel, engine: Engine, main_worker: WorkerProc, payload: str
) -> None:
    # main_worker has registered e2e-echo, so only the input is wrong
    err = _trigger(channel, engine, ECHO, payload)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert err.details()


@pytest.mark.parametrize("size", [4 * MiB + 1024, 5 * MiB], ids=["over-limit", "over-transport"])
def test_trigger_input_too_large(
    channel: grpc.Channel, engine: Engine, main_worker: WorkerProc, size: int
) -> None:
    payload = json.dumps({"blob": "x" * size})
    err = _trigger(channel, engine, ECHO, payload)
    # over the payload limit: INVALID_ARGUMENT from the engine; over the transport limit:
    # RESOURCE_EXHAUSTED from grpc itself. Either way a clear message, and no run.
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    details = (err.details() or "").lower()
    assert "larger than" in details or "message" in details, details
    # the engine is still serving on the same channel
    version = dispatcher_pb2_grpc.DispatcherStub(channel).GetVersion(  # type: ignore[attr-defined]
        dpb.GetVersionRequest(), metadata=bearer(engine.token), timeout=10
    )
    assert version.version
    engine.assert_alive()


@pytest.mark.parametrize("run_id", [pytest.param(str(uuid.uuid4()), id="unknown"), "not-a-uuid"])
def test_run_details_of_unknown_run(channel: grpc.Channel, engine: Engine, run_id: str) -> None:
    stub = v1_grpc.AdminServiceStub(channel)
    err = _rpc_error(
        stub.GetRunDetails,
        v1.GetRunDetailsRequest(external_id=run_id),
        metadata=bearer(engine.token),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details()


@pytest.mark.parametrize("task_id", [pytest.param(str(uuid.uuid4()), id="unknown"), "not-a-uuid"])
def test_step_event_for_unknown_task(channel: grpc.Channel, engine: Engine, task_id: str) -> None:
    stub = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
    event = dpb.StepActionEvent(
        worker_id=str(uuid.uuid4()),
        task_run_external_id=task_id,
        action_id="e2e-echo:e2e-echo",
        event_type=dpb.STEP_EVENT_TYPE_COMPLETED,
        event_payload='{"x": 1}',
    )
    err = _rpc_error(stub.SendStepActionEvent, event, metadata=bearer(engine.token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details()


def _tampered(token: str) -> str:
    header, claims, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{claims}.{flipped}"


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((("authorization", "bearer not-a-token"),), id="garbage"),
        pytest.param((("authorization", "bearer eyJ.eyJ.abc"),), id="malformed-jwt"),
        pytest.param(None, id="tampered-signature"),
        pytest.param((("authorization", "Basic dXNlcjpwYXNz"),), id="wrong-scheme"),
        pytest.param((), id="no-token"),
    ],
)
def test_bad_token_is_unauthenticated(
    channel: grpc.Channel, engine: Engine, metadata: tuple[tuple[str, str], ...] | None
) -> None:
    md = bearer(_tampered(engine.token)) if metadata is None else metadata
    calls = [
        (
            dispatcher_pb2_grpc.DispatcherStub(channel).GetVersion,  # type: ignore[attr-defined]
            dpb.GetVersionRequest(),
        ),
        (
            v0_grpc.WorkflowServiceStub(channel).TriggerWorkflow,
            TriggerWorkflowRequest(name=ECHO, input="{}"),
        ),
        (
            v1_grpc.AdminServiceStub(channel).GetRunDetails,
            v1.GetRunDetailsRequest(external_id=str(uuid.uuid4())),
        ),
    ]
    for call, request in calls:
        err = _rpc_error(call, request, metadata=md)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (call, err)


def _task(readable_id: str, parents: list[str]) -> v1.CreateTaskOpts:
    return v1.CreateTaskOpts(
        readable_id=readable_id,
        action=f"e2e-bad-dag:{readable_id}",
        timeout="60s",
        parents=parents,
        schedule_timeout="5m",
    )


@pytest.mark.parametrize(
    "tasks",
    [
        pytest.param([("a", ["b"]), ("b", ["a"])], id="cycle"),
        pytest.param([("a", []), ("b", ["c"]), ("c", ["b"])], id="cycle-below-root"),
        pytest.param([("a", []), ("b", ["missing"])], id="missing-parent"),
        pytest.param([("a", ["a"])], id="self-parent"),
        pytest.param([("a", []), ("a", [])], id="duplicate-task"),
        pytest.param([], id="no-tasks"),
    ],
)
def test_put_workflow_with_invalid_dag(
    channel: grpc.Channel, engine: Engine, tasks: list[tuple[str, list[str]]]
) -> None:
    name = f"e2e-bad-dag-{uuid.uuid4().hex[:6]}"
    request = v1.CreateWorkflowVersionRequest(
        name=name, tasks=[_task(rid, parents) for rid, parents in tasks]
    )
    stub = v1_grpc.AdminServiceStub(channel)
    err = _rpc_error(stub.PutWorkflow, request, metadata=bearer(engine.token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details()
    # and nothing was registered under that name
    err = _trigger(channel, engine, name, "{}")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        pytest.param(v1.TaskBatchConfig(batch_max_size=0), "batch_max_size", id="size-0"),
        pytest.param(
            v1.TaskBatchConfig(batch_max_size=2, batch_max_interval_ms=-1),
            "batch_max_interval_ms",
            id="negative-interval",
        ),
        pytest.param(
            v1.TaskBatchConfig(batch_max_size=2, batch_group_key="input.("),
            "invalid CEL",
            id="bad-group-key",
        ),
    ],
)
def test_put_workflow_with_invalid_batch_config(
    channel: grpc.Channel, engine: Engine, batch: v1.TaskBatchConfig, expected: str
) -> None:
    name = f"e2e-bad-batch-{uuid.uuid4().hex[:6]}"
    task = _task("a", [])
    task.batch.CopyFrom(batch)
    request = v1.CreateWorkflowVersionRequest(name=name, tasks=[task])
    stub = v1_grpc.AdminServiceStub(channel)
    err = _rpc_error(stub.PutWorkflow, request, metadata=bearer(engine.token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (err.details() or "")
    err = _trigger(channel, engine, name, "{}")  # nothing registered
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("batch_id", "task_id", "event_type"),
    [
        pytest.param("not-a-uuid", str(uuid.uuid4()), dpb.STEP_EVENT_TYPE_STARTED, id="batch-id"),
        pytest.param(
            str(uuid.uuid4()), str(uuid.uuid4()), dpb.STEP_EVENT_TYPE_COMPLETED, id="unknown-task"
        ),
        pytest.param(str(uuid.uuid4()), "nope", dpb.STEP_EVENT_TYPE_FAILED, id="task-id"),
        pytest.param(
            str(uuid.uuid4()), str(uuid.uuid4()), dpb.STEP_EVENT_TYPE_UNKNOWN, id="event-type"
        ),
    ],
)
def test_batch_event_with_bad_ids_or_type(
    channel: grpc.Channel, engine: Engine, batch_id: str, task_id: str, event_type: int
) -> None:
    stub = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
    event = dpb.BatchActionEvent(
        worker_id=str(uuid.uuid4()),
        action_id="e2e-batch:b",
        batch_id=batch_id,
        event_type=event_type,  # type: ignore[arg-type]
        items=[dpb.BatchActionEventItem(task_run_external_id=task_id, event_payload="{}")],
    )
    err = _rpc_error(stub.SendBatchActionEvent, event, metadata=bearer(engine.token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details()


async def test_engine_still_serves_after_bad_requests(
    engine: Engine, hatchet: Hatchet, workflows: dict[str, Any], main_worker: WorkerProc
) -> None:
    """Runs last in this module: all the rejects above left the engine healthy."""
    engine.assert_alive()
    results = await asyncio.wait_for(
        asyncio.gather(*(workflows[ECHO].aio_run(EmptyModel(i=i)) for i in range(5))), timeout=60
    )
    assert [r["echo"] for r in results] == [{"i": i} for i in range(5)]
