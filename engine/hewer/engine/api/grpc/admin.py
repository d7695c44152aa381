"""``v1.AdminService`` and the v0 ``WorkflowService``: registration, triggers, run details."""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from hatchet_sdk.contracts import workflows_pb2 as v0
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1
from hatchet_sdk.contracts.v1.shared import trigger_pb2
from hatchet_sdk.contracts.v1.workflows_pb2_grpc import AdminServiceServicer
from hatchet_sdk.contracts.workflows_pb2_grpc import WorkflowServiceServicer

from hewer.engine.api.grpc.common import GrpcContextAuth, abort, require_uuid
from hewer.engine.api.grpc.idempotency import abort_collision
from hewer.engine.core.dag import aggregate_status
from hewer.engine.core.definition import InvalidDefinition
from hewer.engine.core.model import TaskStatus
from hewer.engine.core.placement import DesiredLabel, InvalidLabel, parse_desired_labels
from hewer.engine.core.rate_limits import check_rate_limit
from hewer.engine.services.control import RunControl
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.durable import DurableRequestError, DurableTaskNotFound
from hewer.engine.services.reads import Reads
from hewer.engine.services.scheduling import NotFoundError, Scheduling, SchedulingError
from hewer.engine.services.tenant_objects import TenantObjects
from hewer.engine.services.triggers import (
    IdempotencyCollision,
    TriggerError,
    TriggerRequest,
    Triggers,
    parse_json_object,
)

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]

_RUN_STATUS = {
    TaskStatus.QUEUED: v1.QUEUED,
    TaskStatus.WAITING: v1.QUEUED,
    TaskStatus.RUNNING: v1.RUNNING,
    TaskStatus.EVICTED: v1.RUNNING,  # with is_evicted
    TaskStatus.COMPLETED: v1.COMPLETED,
    TaskStatus.FAILED: v1.FAILED,
    TaskStatus.CANCELLED: v1.CANCELLED,
}


def trigger_request_from_proto(
    request: trigger_pb2.TriggerWorkflowRequest, *, max_bytes: int
) -> TriggerRequest:
    return TriggerRequest(
        workflow_name=request.name,
        input=parse_json_object(request.input, what="input", max_bytes=max_bytes),
        additional_metadata=parse_json_object(
            request.additional_metadata, what="additional_metadata", max_bytes=max_bytes
        ),
        priority=request.priority if request.HasField("priority") else None,
        parent_task_id=_uuid_or_error(request.parent_task_run_external_id, "parent")
        if request.HasField("parent_task_run_external_id") and request.parent_task_run_external_id
        else None,
        child_index=request.child_index if request.HasField("child_index") else None,
        child_key=request.child_key
        if request.HasField("child_key") and request.child_key
        else None,
        desired_worker_id=_uuid_or_error(request.desired_worker_id, "desired_worker_id")
        if request.HasField("desired_worker_id") and request.desired_worker_id
        else None,
        desired_worker_labels=desired_labels_from_proto(request.desired_worker_labels),
    )


def desired_labels_from_proto(labels: Any) -> tuple[DesiredLabel, ...]:
    """A trigger's ``desired_worker_labels`` map; a bad label is the caller's error."""
    raw = {k: MessageToDict(v, preserving_proto_field_name=True) for k, v in labels.items()}
    try:
        return parse_desired_labels(raw, where="trigger")
    except InvalidLabel as exc:
        raise TriggerError(str(exc)) from None


def _uuid_or_error(value: str, what: str) -> str:
    checked = require_uuid(value, what=what)
    if checked is None:
        raise TriggerError(f"{what} must be a UUID, got {value!r}")
    return checked


class AdminService(AdminServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        auth: GrpcContextAuth,
        reads: Reads,
        definitions: Definitions,
        triggers: Triggers,
        control: RunControl,
        max_payload_bytes: int,
    ) -> None:
        self._auth = auth
        self._reads = reads
        self._defs = definitions
        self._triggers = triggers
        self._control = control
        self._max = max_payload_bytes

    async def PutWorkflow(
        self, request: v1.CreateWorkflowVersionRequest, context: Ctx
    ) -> v1.CreateWorkflowVersionResponse:
        tenant_id = await self._auth.tenant(context)
        definition = MessageToDict(request, preserving_proto_field_name=True)
        try:
            version_id, workflow_id = await self._defs.register(
                tenant_id=tenant_id, definition=definition
            )
        except InvalidDefinition as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return v1.CreateWorkflowVersionResponse(id=version_id, workflow_id=workflow_id)

    async def GetRunDetails(
        self, request: v1.GetRunDetailsRequest, context: Ctx
    ) -> v1.GetRunDetailsResponse:
        tenant_id = await self._auth.tenant(context)
        run_id = require_uuid(request.external_id, what="external_id")
        run = (
            None
            if run_id is None
            else await self._reads.get_run(tenant_id=tenant_id, run_id=run_id)
        )
        if run is None or run_id is None:
            await abort(
                context, grpc.StatusCode.NOT_FOUND, f"workflow run {request.external_id} not found"
            )
        tasks = await self._reads.run_tasks_detail(run_id)
        statuses = [TaskStatus(t["status"]) for t in tasks]
        response = v1.GetRunDetailsResponse(
            input=(run["input"] or "{}").encode(),
            status=_RUN_STATUS[aggregate_status(statuses)],
            done=run["finished_at"] is not None,
            additional_metadata=(run["additional_metadata"] or "{}").encode(),
            is_evicted=TaskStatus.EVICTED in statuses,
        )
        for task in tasks:
            detail = v1.TaskRunDetail(
                external_id=str(task["id"]),
                status=_RUN_STATUS[TaskStatus(task["status"])],
                readable_id=task["readable_id"],
                is_evicted=task["status"] == TaskStatus.EVICTED.value,
            )
            if task["status"] == TaskStatus.FAILED.value and task["error"] is not None:
                detail.error = task["error"]
            if task["status"] == TaskStatus.COMPLETED.value and task["output"]:
                detail.output = task["output"].encode()
            response.task_runs[task["readable_id"]].CopyFrom(detail)
        return response

    async def CancelTasks(
        self, request: v1.CancelTasksRequest, context: Ctx
    ) -> v1.CancelTasksResponse:
        tenant_id = await self._auth.tenant(context)
        ids = self._valid_ids(list(request.external_ids))
        if request.HasField("filter"):
            await abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                "cancel by filter is served by REST /tasks/cancel",
            )
        cancelled = await self._control.cancel(tenant_id=tenant_id, external_ids=ids)
        return v1.CancelTasksResponse(cancelled_tasks=cancelled)

    async def ReplayTasks(
        self, request: v1.ReplayTasksRequest, context: Ctx
    ) -> v1.ReplayTasksResponse:
        tenant_id = await self._auth.tenant(context)
        ids = self._valid_ids(list(request.external_ids))
        if request.HasField("filter"):
            await abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                "replay by filter is served by REST /tasks/replay",
            )
        replayed = await self._control.replay(tenant_id=tenant_id, external_ids=ids)
        return v1.ReplayTasksResponse(replayed_tasks=replayed)

    async def TriggerWorkflowRun(
        self, request: v1.TriggerWorkflowRunRequest, context: Ctx
    ) -> v1.TriggerWorkflowRunResponse:
        tenant_id = await self._auth.tenant(context)
        try:
            trigger = TriggerRequest(
                workflow_name=request.workflow_name,
                input=parse_json_object(request.input, what="input", max_bytes=self._max),
                additional_metadata=parse_json_object(
                    request.additional_metadata, what="additional_metadata", max_bytes=self._max
                ),
                priority=request.priority if request.HasField("priority") else None,
                desired_worker_labels=desired_labels_from_proto(request.desired_worker_labels),
            )
            ids = await self._triggers.trigger(tenant_id=tenant_id, requests=[trigger])
        except IdempotencyCollision as exc:
            await abort_collision(context, exc, bulk=False)
        except TriggerError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return v1.TriggerWorkflowRunResponse(external_id=ids[0])

    async def BranchDurableTask(
        self, request: v1.BranchDurableTaskRequest, context: Ctx
    ) -> v1.BranchDurableTaskResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_external_id, what="task_external_id")
        if task_id is None:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "task_external_id must be a UUID"
            )
        try:
            branch = await self._control.branch_durable_task(
                tenant_id=tenant_id,
                task_id=str(task_id),
                node_id=request.node_id,
                branch_id=request.branch_id,
            )
        except DurableTaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except DurableRequestError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return v1.BranchDurableTaskResponse(
            task_external_id=str(task_id), node_id=request.node_id, branch_id=branch
        )

    @staticmethod
    def _valid_ids(ids: list[str]) -> list[str]:
        return [u for u in (require_uuid(i, what="external_id") for i in ids) if u is not None]


class WorkflowService(WorkflowServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        auth: GrpcContextAuth,
        triggers: Triggers,
        max_payload_bytes: int,
        scheduling: Scheduling | None = None,
        objects: TenantObjects | None = None,
    ) -> None:
        self._auth = auth
        self._triggers = triggers
        self._max = max_payload_bytes
        self._scheduling = scheduling
        self._objects = objects

    async def TriggerWorkflow(
        self, request: trigger_pb2.TriggerWorkflowRequest, context: Ctx
    ) -> v0.TriggerWorkflowResponse:
        tenant_id = await self._auth.tenant(context)
        try:
            ids = await self._triggers.trigger(
                tenant_id=tenant_id,
                requests=[trigger_request_from_proto(request, max_bytes=self._max)],
            )
        except IdempotencyCollision as exc:
            await abort_collision(context, exc, bulk=False)
        except TriggerError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return v0.TriggerWorkflowResponse(workflow_run_id=ids[0])

    async def BulkTriggerWorkflow(
        self, request: v0.BulkTriggerWorkflowRequest, context: Ctx
    ) -> v0.BulkTriggerWorkflowResponse:
        tenant_id = await self._auth.tenant(context)
        if not request.workflows:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "no workflows to trigger")
        try:
            requests = [
                trigger_request_from_proto(r, max_bytes=self._max) for r in request.workflows
            ]
            ids = await self._triggers.trigger(tenant_id=tenant_id, requests=requests)
        except IdempotencyCollision as exc:
            await abort_collision(context, exc, bulk=True)
        except TriggerError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return v0.BulkTriggerWorkflowResponse(workflow_run_ids=ids)

    async def PutWorkflow(self, request: Any, context: Ctx) -> Any:
        await abort(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            "v0 PutWorkflow is not supported: use v1.AdminService/PutWorkflow",
        )

    async def ScheduleWorkflow(
        self, request: v0.ScheduleWorkflowRequest, context: Ctx
    ) -> v0.WorkflowVersion:
        tenant_id = await self._auth.tenant(context)
        if self._scheduling is None:
            await abort(context, grpc.StatusCode.UNIMPLEMENTED, "scheduled runs are not enabled")
        try:
            parent = None
            if request.parent_task_run_external_id:
                parent = _uuid_or_error(request.parent_task_run_external_id, "parent")
            created = await self._scheduling.schedule(
                tenant_id=tenant_id,
                workflow_name=request.name,
                trigger_at=[t.ToDatetime(tzinfo=UTC) for t in request.schedules],
                input=parse_json_object(request.input, what="input", max_bytes=self._max),
                metadata=parse_json_object(
                    request.additional_metadata, what="additional_metadata", max_bytes=self._max
                ),
                priority=request.priority if request.HasField("priority") else None,
                parent_task_id=parent,
            )
        except NotFoundError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except (SchedulingError, TriggerError) as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        response = v0.WorkflowVersion(id=created.version_id, workflow_id=created.workflow_id)
        for scheduled_id, when in zip(created.ids, created.trigger_at, strict=True):
            item = response.scheduled_workflows.add(id=scheduled_id)
            item.trigger_at.FromDatetime(when)
        return response

    async def PutRateLimit(
        self, request: v0.PutRateLimitRequest, context: Ctx
    ) -> v0.PutRateLimitResponse:
        tenant_id = await self._auth.tenant(context)
        if self._objects is None:
            await abort(context, grpc.StatusCode.UNIMPLEMENTED, "rate limits are not enabled")
        try:
            key, limit, duration = check_rate_limit(
                request.key, request.limit, v0.RateLimitDuration.Name(request.duration)
            )
        except ValueError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._objects.upsert_rate_limit(
            tenant_id=tenant_id, key=key, limit=limit, duration=duration
        )
        return v0.PutRateLimitResponse()
