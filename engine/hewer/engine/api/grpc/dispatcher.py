"""The ``Dispatcher`` service: worker registration, the action stream, heartbeats, results."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from hatchet_sdk.contracts import dispatcher_pb2 as pb
from hatchet_sdk.contracts import dispatcher_pb2_grpc

from hewer.engine.api.grpc.common import GrpcContextAuth, abort, require_uuid, timestamp
from hewer.engine.api.grpc.streams import RunStreams
from hewer.engine.core.durations import InvalidDuration, parse_duration
from hewer.engine.core.traces import ensure_traceparent
from hewer.engine.services.batch_reports import (
    BatchEventKind,
    BatchItemReport,
    BatchReports,
    InvalidBatchReport,
)
from hewer.engine.services.control import RunControl
from hewer.engine.services.durable import DurableRequestError, DurableTaskNotFound
from hewer.engine.services.lifecycle import Lifecycle, NotHolder, StaleAttempt, TaskNotFound
from hewer.engine.services.outage import ride_out
from hewer.engine.services.scheduler import Scheduler
from hewer.engine.services.worker_registry import WorkerRegistry
from hewer.engine.services.workers import ActionKind, ActionMessage, WorkerHub, WorkerSession

log = logging.getLogger(__name__)
# the SDK's .pyi for this module omits the servicer base class
DispatcherServicer: Any = dispatcher_pb2_grpc.DispatcherServicer  # type: ignore[attr-defined]
# v0.80.0 enables slot_config and the durable-task stream (protocol.md §4); v0.82.0 is the
# SDK's OBSERVABILITY gate, which in hatchet-sdk 1.37.5 only lets its OTel tests run (the
# OTLP TraceService, engine spans and GET .../traces are served: api/grpc/otlp.py)
ENGINE_VERSION = "v0.82.0"
DEFAULT_SLOTS = {"default": 100}

Ctx = grpc.aio.ServicerContext[Any, Any]


def labels_from_proto(labels: Any) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for key, value in labels.items():
        out[key] = value.int_value if value.HasField("int_value") else value.str_value
    return out


def _action_metadata(message: ActionMessage) -> str:
    """A task's action carries its run's traceparent (one naming the run's span if the run
    has none), so that an instrumented worker's spans join the run's trace."""
    if message.kind is not ActionKind.START:
        return message.additional_metadata
    return ensure_traceparent(message.additional_metadata, run_id=message.workflow_run_id)


def action_to_proto(message: ActionMessage) -> pb.AssignedAction:
    action = pb.AssignedAction(
        tenant_id=message.tenant_id,
        workflow_run_id=message.workflow_run_id,
        get_group_key_run_id="",
        job_id=message.step_id,
        job_name=message.readable_id,
        job_run_id=message.task_id,
        task_id=message.step_id,
        task_run_external_id=message.task_id,
        action_id=message.action_id,
        action_type=message.kind.name_in_proto,
        action_payload=message.payload,
        task_name=message.readable_id,
        retry_count=message.retry_count,
        additional_metadata=_action_metadata(message),
        priority=message.priority,
    )
    if message.child_index is not None:
        action.child_workflow_index = message.child_index
    if message.child_key is not None:
        action.child_workflow_key = message.child_key
    if message.parent_task_id is not None:
        action.parent_workflow_run_id = message.parent_task_id
    if message.workflow_id is not None:
        action.workflow_id = message.workflow_id
    if message.workflow_version_id is not None:
        action.workflow_version_id = message.workflow_version_id
    if message.invocation_count is not None:
        action.durable_task_invocation_count = message.invocation_count
    if message.triggering_event_id is not None:
        action.triggering_event_external_id = message.triggering_event_id
    if message.triggering_event_key is not None:
        action.triggering_event_key = message.triggering_event_key
    if message.batch is not None:
        batch = message.batch
        action.batchId = batch.batch_id
        action.batchSize = len(batch.members)
        action.batchKey = batch.batch_key
        action.batchStartPayload.triggerReason = batch.reason
        action.batchStartPayload.triggerTime.CopyFrom(timestamp(batch.triggered_at))
        action.batchStartPayload.expectedSize = len(batch.members)
    return action


_BATCH_EVENT_KINDS = {
    pb.STEP_EVENT_TYPE_STARTED: BatchEventKind.STARTED,
    pb.STEP_EVENT_TYPE_COMPLETED: BatchEventKind.COMPLETED,
    pb.STEP_EVENT_TYPE_FAILED: BatchEventKind.FAILED,
    pb.STEP_EVENT_TYPE_CANCELLED: BatchEventKind.CANCELLED,
}


class DispatcherService(DispatcherServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        auth: GrpcContextAuth,
        workers: WorkerRegistry,
        hub: WorkerHub,
        scheduler: Scheduler,
        lifecycle: Lifecycle,
        streams: RunStreams,
        engine_id: str,
        max_payload_bytes: int,
        batch_reports: BatchReports,
    ) -> None:
        self._auth = auth
        self._workers = workers
        self._hub = hub
        self._scheduler = scheduler
        self._lifecycle = lifecycle
        self._streams = streams
        self._engine_id = engine_id
        self._max_payload = max_payload_bytes
        # restore of evicted durable tasks (services/control.py); set by the server
        self.control: RunControl | None = None
        self._batch_reports = batch_reports

    async def GetVersion(
        self, request: pb.GetVersionRequest, context: Ctx
    ) -> pb.GetVersionResponse:
        await self._auth.tenant(context)
        return pb.GetVersionResponse(version=ENGINE_VERSION)

    async def Register(
        self, request: pb.WorkerRegisterRequest, context: Ctx
    ) -> pb.WorkerRegisterResponse:
        tenant_id = await self._auth.tenant(context)
        if request.slots and request.slot_config:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "set either slots or slot_config, not both",
            )
        slot_config = {str(k): int(v) for k, v in request.slot_config.items()}
        if any(v < 0 for v in slot_config.values()):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "slot counts must be >= 0")
        if not slot_config:
            slot_config = {"default": request.slots} if request.slots > 0 else dict(DEFAULT_SLOTS)
        if not request.worker_name:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "worker_name is required")
        worker_id = str(uuid.uuid4())
        runtime = request.runtime_info
        await self._workers.insert_worker(
            worker_id=worker_id,
            tenant_id=tenant_id,
            name=request.worker_name,
            actions=list(dict.fromkeys(request.actions)),
            slot_config=slot_config,
            labels=labels_from_proto(request.labels),
            runtime_info={
                "sdk_version": runtime.sdk_version,
                "language": pb.SDKS.Name(runtime.language) if runtime.language else "",
                "language_version": runtime.language_version,
                "os": runtime.os,
            },
        )
        log.info(
            "worker %s registered as %s with slots %s", request.worker_name, worker_id, slot_config
        )
        return pb.WorkerRegisterResponse(
            tenant_id=tenant_id, worker_id=worker_id, worker_name=request.worker_name
        )

    async def ListenV2(
        self, request: pb.WorkerListenRequest, context: Ctx
    ) -> AsyncIterator[pb.AssignedAction]:
        tenant_id = await self._auth.tenant(context)
        worker_id = require_uuid(request.worker_id, what="worker_id")
        worker = (
            None
            if worker_id is None
            else await self._workers.get_worker(tenant_id=tenant_id, worker_id=worker_id)
        )
        if worker is None or worker_id is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"worker {request.worker_id} not found")
        session = WorkerSession(
            worker_id=worker_id,
            tenant_id=tenant_id,
            actions=frozenset(worker["actions"]),
            slot_config={str(k): int(v) for k, v in dict(worker["slot_config"]).items()},
            batch_actions=await self._batch_reports.batch_actions(
                tenant_id=tenant_id, action_ids=list(worker["actions"])
            ),
        )
        replaced = self._hub.attach(session)
        if replaced is not None:
            await self._requeue_undelivered(replaced)
        await self._workers.worker_listening(
            tenant_id=tenant_id, worker_id=worker_id, engine_id=self._engine_id
        )
        self._scheduler.wake()
        try:
            while True:
                message = await session.outbox.get()
                yield action_to_proto(message)
        finally:
            if self._hub.detach(session):
                await asyncio.shield(self._disconnected(session))

    async def _disconnected(self, session: WorkerSession) -> None:
        await self._workers.worker_disconnected(
            worker_id=session.worker_id, engine_id=self._engine_id
        )
        await self._requeue_undelivered(session)

    async def _requeue_undelivered(self, session: WorkerSession) -> None:
        while not session.outbox.empty():
            message = session.outbox.get_nowait()
            if message.kind is ActionKind.CANCEL:
                continue
            for task_id, retry_count in message.attempts():
                await self._lifecycle.requeue_lost(
                    tenant_id=message.tenant_id,
                    task_id=task_id,
                    retry_count=retry_count,
                    reason="worker stream closed before the task was sent",
                )

    async def Listen(
        self, request: pb.WorkerListenRequest, context: Ctx
    ) -> AsyncIterator[pb.AssignedAction]:
        await abort(context, grpc.StatusCode.UNIMPLEMENTED, "use ListenV2")
        yield pb.AssignedAction()  # pragma: no cover - makes this an async generator

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Ctx) -> pb.HeartbeatResponse:
        tenant_id = await self._auth.tenant(context)
        worker_id = require_uuid(request.worker_id, what="worker_id")
        session = None if worker_id is None else self._hub.get(worker_id)
        beat = (
            None
            if worker_id is None
            else await self._workers.heartbeat(
                tenant_id=tenant_id,
                worker_id=worker_id,
                streaming_here=session is not None
                and session.tenant_id == tenant_id
                and not session.closed,
            )
        )
        if beat is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"worker {request.worker_id} not found")
        if beat.listener_lost:
            # tells the SDK to re-open its action stream
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "worker has no active listener; reconnect ListenV2",
            )
        return pb.HeartbeatResponse()

    async def SendStepActionEvent(
        self, request: pb.StepActionEvent, context: Ctx
    ) -> pb.ActionEventResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_run_external_id, what="task_run_external_id")
        if task_id is None:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid task_run_external_id {request.task_run_external_id!r}",
            )
        reporter = require_uuid(request.worker_id, what="worker_id")  # TS sends the name
        kind = request.event_type

        async def apply() -> None:
            if request.HasField("retry_count"):
                retry_count = request.retry_count
            else:
                retry_count = await self._workers.current_retry_count(
                    tenant_id=tenant_id, task_id=task_id
                )
            if kind == pb.STEP_EVENT_TYPE_STARTED:
                await self._lifecycle.started(
                    tenant_id=tenant_id, task_id=task_id, retry_count=retry_count
                )
            elif kind == pb.STEP_EVENT_TYPE_COMPLETED and self._too_large(request.event_payload):
                # stored, it would make every later dispatch of its children fail: fail it now
                await self._workers.check_holder(
                    tenant_id=tenant_id, task_id=task_id, retry_count=retry_count, reporter=reporter
                )
                await self._lifecycle.failed(
                    tenant_id=tenant_id,
                    task_id=task_id,
                    retry_count=retry_count,
                    error=(
                        f"task output is {len(request.event_payload.encode())} bytes, larger "
                        f"than HEWER_MAX_PAYLOAD_BYTES ({self._max_payload})"
                    ),
                    non_retryable=True,
                )
            elif kind == pb.STEP_EVENT_TYPE_COMPLETED:
                await self._lifecycle.completed(
                    tenant_id=tenant_id,
                    task_id=task_id,
                    retry_count=retry_count,
                    output=request.event_payload,
                    reporter=reporter,
                )
            elif kind in (pb.STEP_EVENT_TYPE_FAILED, pb.STEP_EVENT_TYPE_CANCELLED):
                await self._workers.check_holder(
                    tenant_id=tenant_id, task_id=task_id, retry_count=retry_count, reporter=reporter
                )
                if kind == pb.STEP_EVENT_TYPE_FAILED:
                    await self._lifecycle.failed(
                        tenant_id=tenant_id,
                        task_id=task_id,
                        retry_count=retry_count,
                        error=request.event_payload.replace("\x00", ""),
                        non_retryable=request.should_not_retry,
                    )
                else:
                    await self._lifecycle.cancel(
                        tenant_id=tenant_id, task_ids=[task_id], reason="cancelled by the worker"
                    )

        try:
            # a worker's task report waits out a database outage (services/outage.py)
            await ride_out(apply, component="task reports")
        except StaleAttempt as exc:
            # late report of an attempt that timed out, was cancelled or retried: ignored
            log.info("ignored step event: %s", exc)
        except TaskNotFound as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotHolder as exc:
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return pb.ActionEventResponse(tenant_id=tenant_id, worker_id=request.worker_id)

    def _too_large(self, output: str) -> bool:
        # len(str) <= len(utf-8 bytes): skip encoding the common small output
        return len(output) > self._max_payload or len(output.encode()) > self._max_payload

    async def SendBatchActionEvent(
        self, request: pb.BatchActionEvent, context: Ctx
    ) -> pb.ActionEventResponse:
        tenant_id = await self._auth.tenant(context)
        batch_id = require_uuid(request.batch_id, what="batch_id")
        kind = _BATCH_EVENT_KINDS.get(request.event_type)
        if batch_id is None or kind is None:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid batch_id {request.batch_id!r}"
                if batch_id is None
                else f"unsupported batch event type {request.event_type}",
            )
        items: list[BatchItemReport] = []
        for item in request.items:
            task_id = require_uuid(item.task_run_external_id, what="task_run_external_id")
            if task_id is None:
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"invalid task_run_external_id {item.task_run_external_id!r}",
                )
            items.append(
                BatchItemReport(
                    task_id=task_id,
                    payload=item.event_payload,
                    should_not_retry=item.should_not_retry,
                )
            )
        reporter = require_uuid(request.worker_id, what="worker_id")

        async def apply() -> None:
            await self._batch_reports.report(
                tenant_id=tenant_id, reporter=reporter, batch_id=batch_id, kind=kind, items=items
            )

        try:
            # like single-task reports, a batch's reports wait out a database outage
            await ride_out(apply, component="task reports")
        except (TaskNotFound, InvalidBatchReport) as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotHolder as exc:
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return pb.ActionEventResponse(tenant_id=tenant_id, worker_id=request.worker_id)

    async def SendGroupKeyActionEvent(self, request: Any, context: Ctx) -> Any:
        await abort(context, grpc.StatusCode.UNIMPLEMENTED, "group key actions are a v0 feature")

    async def PutOverridesData(self, request: Any, context: Ctx) -> pb.OverridesDataResponse:
        await self._auth.tenant(context)
        return pb.OverridesDataResponse()

    async def Unsubscribe(
        self, request: pb.WorkerUnsubscribeRequest, context: Ctx
    ) -> pb.WorkerUnsubscribeResponse:
        tenant_id = await self._auth.tenant(context)
        session = self._hub.get(request.worker_id)
        if session is not None and session.tenant_id == tenant_id:
            self._hub.detach(session)
            await self._disconnected(session)
        return pb.WorkerUnsubscribeResponse(tenant_id=tenant_id, worker_id=request.worker_id)

    async def RefreshTimeout(
        self, request: pb.RefreshTimeoutRequest, context: Ctx
    ) -> pb.RefreshTimeoutResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_run_external_id, what="task_run_external_id")
        try:
            seconds = parse_duration(request.increment_timeout_by)
        except InvalidDuration as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        timeout_at = (
            None
            if task_id is None
            else await self._workers.refresh_timeout(
                tenant_id=tenant_id, task_id=task_id, seconds=seconds
            )
        )
        if timeout_at is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"task {request.task_run_external_id} is not running",
            )
        return pb.RefreshTimeoutResponse(timeout_at=timestamp(timeout_at))

    async def ReleaseSlot(
        self, request: pb.ReleaseSlotRequest, context: Ctx
    ) -> pb.ReleaseSlotResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_run_external_id, what="task_run_external_id")
        worker = (
            None
            if task_id is None
            else await self._workers.release_slot(tenant_id=tenant_id, task_id=task_id)
        )
        if worker is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"task {request.task_run_external_id} holds no slot",
            )
        self._scheduler.wake()
        return pb.ReleaseSlotResponse()

    async def RestoreEvictedTask(
        self, request: pb.RestoreEvictedTaskRequest, context: Ctx
    ) -> pb.RestoreEvictedTaskResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_run_external_id, what="task_run_external_id")
        if task_id is None or self.control is None:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "task_run_external_id must be a UUID"
            )
        try:
            requeued = await self.control.restore(tenant_id=tenant_id, task_id=str(task_id))
        except DurableTaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except DurableRequestError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.RestoreEvictedTaskResponse(requeued=requeued)

    async def UpsertWorkerLabels(
        self, request: pb.UpsertWorkerLabelsRequest, context: Ctx
    ) -> pb.UpsertWorkerLabelsResponse:
        tenant_id = await self._auth.tenant(context)
        worker_id = require_uuid(request.worker_id, what="worker_id")
        ok = worker_id is not None and await self._workers.merge_worker_labels(
            tenant_id=tenant_id, worker_id=worker_id, labels=labels_from_proto(request.labels)
        )
        if not ok:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"worker {request.worker_id} not found")
        return pb.UpsertWorkerLabelsResponse(tenant_id=tenant_id, worker_id=request.worker_id)

    async def SubscribeToWorkflowRuns(
        self, request_iterator: AsyncIterator[pb.SubscribeToWorkflowRunsRequest], context: Ctx
    ) -> AsyncIterator[pb.WorkflowRunEvent]:
        tenant_id = await self._auth.tenant(context)
        async for event in self._streams.workflow_runs(tenant_id, request_iterator):
            yield event

    async def SubscribeToWorkflowEvents(
        self, request: pb.SubscribeToWorkflowEventsRequest, context: Ctx
    ) -> AsyncIterator[pb.WorkflowEvent]:
        tenant_id = await self._auth.tenant(context)
        if not request.workflow_run_id:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "workflow_run_id is required (metadata subscriptions are not supported)",
            )
        async for event in self._streams.workflow_events(
            tenant_id, request.workflow_run_id, context
        ):
            yield event
