"""Bad durable-task input through the real API: refused with a clear message, and the run
goes on as if the bad request had never been sent.

The worker is raw gRPC (``hatchet_sdk.contracts`` stubs, in this process): it registers,
takes its assignment from ``ListenV2`` and opens the ``v1.V1Dispatcher/DurableTask`` stream
as the SDK does, but sends what the SDK never would. Refusals on that stream are ``error``
responses (the SDK raises them in the task), never a broken stream; REST refusals are 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from e2e_support import Engine, bearer
from google.protobuf.timestamp_pb2 import Timestamp
from hatchet_sdk.contracts import dispatcher_pb2 as dpb
from hatchet_sdk.contracts import dispatcher_pb2_grpc
from hatchet_sdk.contracts import workflows_pb2_grpc as v0_grpc
from hatchet_sdk.contracts.v1 import dispatcher_pb2 as pb
from hatchet_sdk.contracts.v1 import dispatcher_pb2_grpc as v1_dispatcher_grpc
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1_grpc
from hatchet_sdk.contracts.v1.shared import condition_pb2 as cpb
from hatchet_sdk.contracts.v1.shared.trigger_pb2 import TriggerWorkflowRequest

pytestmark = pytest.mark.timeout(60)

WITHIN = 15.0  # seconds for any one answer of the engine


def _task_opts(name: str, *, durable: bool) -> v1.CreateTaskOpts:
    return v1.CreateTaskOpts(
        readable_id="t",
        action=f"{name}:t",
        timeout="60s",
        schedule_timeout="5m",
        is_durable=durable,
        slot_requests={"durable" if durable else "default": 1},
    )


@dataclass
class Stream:
    """One DurableTask stream, registered as ``worker_id``."""

    call: Any
    requests: asyncio.Queue[pb.DurableTaskRequest]
    responses: asyncio.Queue[pb.DurableTaskResponse] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    async def ask(self, **message: Any) -> pb.DurableTaskResponse:
        self.requests.put_nowait(pb.DurableTaskRequest(**message))
        return await asyncio.wait_for(self.responses.get(), timeout=WITHIN)


@dataclass
class RawWorker:
    engine: Engine
    channel: grpc.aio.Channel
    name: str
    worker_id: str
    stream: Stream
    assigned: asyncio.Queue[dpb.AssignedAction]
    tasks: list[asyncio.Task[None]]

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.engine.token)

    async def start_run(self) -> dpb.AssignedAction:
        """Trigger the durable workflow and take its assignment (invocation 1)."""
        ref = await v0_grpc.WorkflowServiceStub(self.channel).TriggerWorkflow(
            TriggerWorkflowRequest(name=self.name, input="{}"), metadata=self.md, timeout=WITHIN
        )
        while True:
            action = await asyncio.wait_for(self.assigned.get(), timeout=WITHIN)
            if action.workflow_run_id == ref.workflow_run_id:
                assert action.durable_task_invocation_count == 1
                return action

    async def complete(self, action: dpb.AssignedAction) -> None:
        stub = dispatcher_pb2_grpc.DispatcherStub(self.channel)  # type: ignore[attr-defined]
        await stub.SendStepActionEvent(
            dpb.StepActionEvent(
                worker_id=self.worker_id,
                job_id=action.job_id,
                job_run_id=action.job_run_id,
                task_id=action.task_id,
                task_run_external_id=action.task_run_external_id,
                action_id=action.action_id,
                event_type=dpb.STEP_EVENT_TYPE_COMPLETED,
                event_payload='{"done": true}',
                retry_count=action.retry_count,
            ),
            metadata=self.md,
            timeout=WITHIN,
        )

    async def run_status(self, run_id: str) -> int:
        details = await v1_grpc.AdminServiceStub(self.channel).GetRunDetails(
            v1.GetRunDetailsRequest(external_id=run_id), metadata=self.md, timeout=WITHIN
        )
        return int(details.status)

    async def assert_goes_on(self, action: dpb.AssignedAction) -> None:
        """Nothing the refusals did took a node or broke the run: the task's first real
        request is node 1 of branch 1 on the same stream, and the run completes."""
        ack = await self.stream.ask(memo=memo(action, b"after-refusals"))
        assert ack.WhichOneof("message") == "memo_ack", ack
        assert (ack.memo_ack.ref.node_id, ack.memo_ack.ref.branch_id) == (1, 1)
        assert not ack.memo_ack.memo_already_existed
        await self.complete(action)
        await self.wait_status(action.workflow_run_id, v1.COMPLETED)

    async def wait_status(self, run_id: str, status: int) -> None:
        for _ in range(int(WITHIN / 0.1)):
            if await self.run_status(run_id) == status:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"run {run_id} did not reach status {status}")


async def open_stream(channel: grpc.aio.Channel, md: Any, worker_id: str) -> Stream:
    requests: asyncio.Queue[pb.DurableTaskRequest] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[pb.DurableTaskRequest]:
        while True:
            yield await requests.get()

    call = v1_dispatcher_grpc.V1DispatcherStub(channel).DurableTask(outgoing(), metadata=md)
    stream = Stream(call=call, requests=requests)

    async def incoming() -> None:
        async for response in call:
            stream.responses.put_nowait(response)

    stream.reader = asyncio.create_task(incoming())
    registered = await stream.ask(
        register_worker=pb.DurableTaskRequestRegisterWorker(worker_id=worker_id)
    )
    assert registered.register_worker.worker_id == worker_id
    return stream


async def register_worker(channel: grpc.aio.Channel, md: Any, name: str, actions: list[str]) -> str:
    disp = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
    reg = await disp.Register(
        dpb.WorkerRegisterRequest(
            worker_name=name, actions=actions, slot_config={"durable": 5, "default": 5}
        ),
        metadata=md,
        timeout=WITHIN,
    )
    return str(reg.worker_id)


@pytest_asyncio.fixture(scope="module")
async def raw(engine: Engine) -> AsyncIterator[RawWorker]:
    channel = grpc.aio.insecure_channel(engine.host_port)
    md = bearer(engine.token)
    name = f"e2e-durable-bad-{uuid.uuid4().hex[:6]}"
    admin = v1_grpc.AdminServiceStub(channel)
    await admin.PutWorkflow(
        v1.CreateWorkflowVersionRequest(name=name, tasks=[_task_opts(name, durable=True)]),
        metadata=md,
        timeout=WITHIN,
    )
    worker_id = await register_worker(channel, md, name, [f"{name}:t"])
    disp = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
    assigned: asyncio.Queue[dpb.AssignedAction] = asyncio.Queue()

    async def listen() -> None:
        async for action in disp.ListenV2(
            dpb.WorkerListenRequest(worker_id=worker_id), metadata=md
        ):
            if action.action_type == dpb.START_STEP_RUN:
                assigned.put_nowait(action)

    async def heartbeat() -> None:
        while True:
            await disp.Heartbeat(
                dpb.HeartbeatRequest(worker_id=worker_id, heartbeat_at=Timestamp(seconds=0)),
                metadata=md,
                timeout=WITHIN,
            )
            await asyncio.sleep(4)

    tasks = [asyncio.create_task(listen()), asyncio.create_task(heartbeat())]
    stream = await open_stream(channel, md, worker_id)
    worker = RawWorker(engine, channel, name, worker_id, stream, assigned, tasks)
    try:
        yield worker
    finally:
        for task in [*tasks, stream.reader]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        stream.call.cancel()
        await channel.close()


def memo(action: dpb.AssignedAction, key: bytes) -> pb.DurableTaskMemoRequest:
    return pb.DurableTaskMemoRequest(
        durable_task_external_id=action.task_run_external_id,
        invocation_count=action.durable_task_invocation_count,
        key=key,
    )


def wait_for(action: dpb.AssignedAction, conditions: cpb.DurableEventListenerConditions) -> Any:
    return pb.DurableTaskWaitForRequest(
        durable_task_external_id=action.task_run_external_id,
        invocation_count=action.durable_task_invocation_count,
        wait_for_conditions=conditions,
    )


def refused(response: pb.DurableTaskResponse, *, task_id: str, says: str) -> None:
    """An ``error`` naming the task (the SDK matches it to the pending request)."""
    assert response.WhichOneof("message") == "error", response
    error = response.error
    assert error.error_type == pb.DURABLE_TASK_ERROR_TYPE_UNSPECIFIED
    assert error.ref.durable_task_external_id == task_id
    assert says in error.error_message, error.error_message
    assert "Traceback" not in error.error_message


def base(expression: str = "") -> cpb.BaseMatchCondition:
    return cpb.BaseMatchCondition(
        readable_data_key="k", or_group_id=str(uuid.uuid4()), expression=expression
    )


BAD_WAITS = [
    pytest.param(cpb.DurableEventListenerConditions(), "at least one", id="no-conditions"),
    pytest.param(
        cpb.DurableEventListenerConditions(
            user_event_conditions=[
                cpb.UserEventMatchCondition(base=base("input.((("), user_event_key="e")
            ]
        ),
        "condition expression",
        id="invalid-cel",
    ),
    pytest.param(
        cpb.DurableEventListenerConditions(
            sleep_conditions=[cpb.SleepMatchCondition(base=base(), sleep_for="-5s")]
        ),
        "sleep condition",
        id="negative-sleep",
    ),
    pytest.param(
        cpb.DurableEventListenerConditions(
            sleep_conditions=[cpb.SleepMatchCondition(base=base(), sleep_for="soon")]
        ),
        "sleep condition",
        id="unparsable-sleep",
    ),
    pytest.param(
        cpb.DurableEventListenerConditions(
            user_event_conditions=[cpb.UserEventMatchCondition(base=base(), user_event_key="")]
        ),
        "no event key",
        id="no-event-key",
    ),
]


@pytest.mark.parametrize(("conditions", "says"), BAD_WAITS)
async def test_a_bad_durable_wait_is_refused_and_the_run_goes_on(
    raw: RawWorker, conditions: cpb.DurableEventListenerConditions, says: str
) -> None:
    action = await raw.start_run()
    response = await raw.stream.ask(wait_for=wait_for(action, conditions))
    refused(response, task_id=action.task_run_external_id, says=says)
    await raw.assert_goes_on(action)


async def test_a_spawn_of_an_unknown_workflow_is_refused_and_the_run_goes_on(
    raw: RawWorker,
) -> None:
    action = await raw.start_run()
    spawn = pb.DurableTaskTriggerRunsRequest(
        durable_task_external_id=action.task_run_external_id,
        invocation_count=action.durable_task_invocation_count,
        trigger_opts=[TriggerWorkflowRequest(name="e2e-no-such-child", input="{}")],
    )
    response = await raw.stream.ask(trigger_runs=spawn)
    refused(response, task_id=action.task_run_external_id, says="e2e-no-such-child")
    await raw.assert_goes_on(action)


async def test_a_durable_request_for_a_task_the_worker_does_not_hold_is_refused(
    raw: RawWorker,
) -> None:
    action = await raw.start_run()
    task_id = action.task_run_external_id
    # another worker of the tenant, on its own stream, names this worker's task
    other_id = await register_worker(raw.channel, raw.md, f"{raw.name}-other", [f"{raw.name}:t"])
    other = await open_stream(raw.channel, raw.md, other_id)
    try:
        response = await other.ask(memo=memo(action, b"k"))
        refused(response, task_id=task_id, says=f"is not held by worker {other_id}")
        evict = pb.DurableTaskEvictInvocationRequest(
            durable_task_external_id=task_id,
            invocation_count=action.durable_task_invocation_count,
            reason="not mine to evict",
        )
        response = await other.ask(evict_invocation=evict)
        refused(response, task_id=task_id, says=f"is not held by worker {other_id}")
    finally:
        other.call.cancel()
        if other.reader is not None:
            other.reader.cancel()
    unknown = str(uuid.uuid4())
    missing = pb.DurableTaskMemoRequest(durable_task_external_id=unknown, invocation_count=1)
    refused(await raw.stream.ask(memo=missing), task_id=unknown, says="not found")
    garbled = await raw.stream.ask(
        memo=pb.DurableTaskMemoRequest(durable_task_external_id="not-a-uuid", invocation_count=1)
    )
    assert garbled.WhichOneof("message") == "error"
    assert "must be a UUID" in garbled.error.error_message
    future = pb.DurableTaskMemoRequest(durable_task_external_id=task_id, invocation_count=7)
    refused(await raw.stream.ask(memo=future), task_id=task_id, says="7 is not one of them")
    await raw.assert_goes_on(action)


async def test_a_stream_registered_with_a_worker_id_that_is_not_a_uuid_is_refused(
    raw: RawWorker,
) -> None:
    action = await raw.start_run()
    requests: asyncio.Queue[pb.DurableTaskRequest] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[pb.DurableTaskRequest]:
        while True:
            yield await requests.get()

    call = v1_dispatcher_grpc.V1DispatcherStub(raw.channel).DurableTask(outgoing(), metadata=raw.md)
    responses = call.__aiter__()
    try:
        requests.put_nowait(
            pb.DurableTaskRequest(
                register_worker=pb.DurableTaskRequestRegisterWorker(worker_id="not-a-uuid")
            )
        )
        answer = await asyncio.wait_for(responses.__anext__(), timeout=WITHIN)
        assert answer.WhichOneof("message") == "error", answer
        assert "worker_id 'not-a-uuid' is not a UUID" in answer.error.error_message
        # the unregistered stream holds nothing: its eviction of a running task is refused
        evict = pb.DurableTaskEvictInvocationRequest(
            durable_task_external_id=action.task_run_external_id,
            invocation_count=action.durable_task_invocation_count,
        )
        requests.put_nowait(pb.DurableTaskRequest(evict_invocation=evict))
        answer = await asyncio.wait_for(responses.__anext__(), timeout=WITHIN)
        refused(answer, task_id=action.task_run_external_id, says="is not held by worker")
    finally:
        call.cancel()
    await raw.assert_goes_on(action)


async def test_rest_restore_refuses_what_is_not_an_evicted_durable_task(
    raw: RawWorker, engine: Engine
) -> None:
    action = await raw.start_run()
    task_id = action.task_run_external_id
    # running and never evicted: nothing to do, and idempotent (a second restore of an
    # evicted task finds it queued or running), so 200 with requeued false
    running = engine.rest("POST", f"/api/v1/stable/tasks/{task_id}/restore")
    assert (running.status_code, running.json()) == (200, {"requeued": False})
    await raw.assert_goes_on(action)

    finished = engine.rest("POST", f"/api/v1/stable/tasks/{task_id}/restore")
    assert finished.status_code == 400, finished.text
    assert "is COMPLETED; only an evicted task can be restored" in finished.text

    unknown = engine.rest("POST", f"/api/v1/stable/tasks/{uuid.uuid4()}/restore")
    assert unknown.status_code == 404, unknown.text
    garbled = engine.rest("POST", "/api/v1/stable/tasks/not-a-uuid/restore")
    assert garbled.status_code == 400, garbled.text

    plain = f"{raw.name}-plain"
    await v1_grpc.AdminServiceStub(raw.channel).PutWorkflow(
        v1.CreateWorkflowVersionRequest(name=plain, tasks=[_task_opts(plain, durable=False)]),
        metadata=raw.md,
        timeout=WITHIN,
    )
    ref = await v0_grpc.WorkflowServiceStub(raw.channel).TriggerWorkflow(
        TriggerWorkflowRequest(name=plain, input="{}"), metadata=raw.md, timeout=WITHIN
    )
    # a single-task run's task has the run's id
    not_durable = engine.rest("POST", f"/api/v1/stable/tasks/{ref.workflow_run_id}/restore")
    assert not_durable.status_code == 400, not_durable.text
    assert "is not a durable task" in not_durable.text


async def test_rest_branch_refuses_a_missing_node_and_an_active_task(
    raw: RawWorker, engine: Engine
) -> None:
    action = await raw.start_run()
    task_id = action.task_run_external_id
    path = f"/api/v1/stable/tenants/{engine.tenant_of()}/durable-tasks/branch"

    def branch(body: dict[str, Any]) -> Any:
        return engine.rest("POST", path, json=body)

    first = await raw.stream.ask(memo=memo(action, b"first"))
    assert first.memo_ack.ref.node_id == 1
    active = branch({"taskExternalId": task_id, "nodeId": 1, "branchId": 1})
    assert active.status_code == 400, active.text
    assert "is RUNNING; only a finished or evicted durable task" in active.text
    # no branch was made under the running invocation: its next node is still on branch 1
    second = await raw.stream.ask(memo=memo(action, b"second"))
    assert (second.memo_ack.ref.branch_id, second.memo_ack.ref.node_id) == (1, 2)
    await raw.complete(action)
    await raw.wait_status(action.workflow_run_id, v1.COMPLETED)

    for body, says in [
        ({"taskExternalId": task_id, "nodeId": 3, "branchId": 1}, "node 3 does not exist"),
        ({"taskExternalId": task_id, "nodeId": 1, "branchId": 4}, "has no branch 4"),
        ({"taskExternalId": task_id, "nodeId": -1, "branchId": 1}, "must be positive"),
        ({"taskExternalId": task_id, "nodeId": "one", "branchId": 1}, "nodeId"),
    ]:
        response = branch(body)
        assert response.status_code == 400, (body, response.text)
        assert says in response.text, (body, response.text)
    unknown = branch({"taskExternalId": str(uuid.uuid4()), "nodeId": 1, "branchId": 1})
    assert unknown.status_code == 404, unknown.text
    # nothing was replayed by the refusals
    assert await raw.run_status(action.workflow_run_id) == v1.COMPLETED
