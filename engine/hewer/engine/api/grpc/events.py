"""``EventsService``: pushed events, task logs and stream chunks."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import grpc
from hatchet_sdk.contracts import events_pb2 as pb
from hatchet_sdk.contracts.events_pb2_grpc import EventsServiceServicer

from hewer.engine.api.grpc.common import GrpcContextAuth, abort, require_uuid, timestamp
from hewer.engine.services.bus import Bus
from hewer.engine.services.events import Events, NewEvent, StoredEvent
from hewer.engine.services.triggers import TriggerError, parse_json_object
from hewer.engine.services.worker_registry import WorkerRegistry

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]
MAX_LOG_MESSAGE = 10_000
_RUN_CACHE_SIZE = 10_000


class EventsService(EventsServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        auth: GrpcContextAuth,
        workers: WorkerRegistry,
        events: Events,
        bus: Bus,
        max_payload_bytes: int,
    ) -> None:
        self._auth = auth
        self._workers = workers
        self._events = events
        self._bus = bus
        self._max = max_payload_bytes
        # task -> run, for stream chunks: a streaming task sends many, the mapping never changes
        self._run_of_task: OrderedDict[tuple[str, str], str] = OrderedDict()

    def _new_event(self, request: pb.PushEventRequest) -> NewEvent:
        return NewEvent(
            key=request.key,
            payload=parse_json_object(request.payload, what="payload", max_bytes=self._max),
            additional_metadata=parse_json_object(
                request.additional_metadata, what="additional_metadata", max_bytes=self._max
            )
            if request.HasField("additional_metadata")
            else {},
            priority=request.priority if request.HasField("priority") else None,
            scope=request.scope if request.HasField("scope") and request.scope else None,
        )

    async def Push(self, request: pb.PushEventRequest, context: Ctx) -> pb.Event:
        tenant_id = await self._auth.tenant(context)
        try:
            stored = await self._events.push(tenant_id=tenant_id, events=[self._new_event(request)])
        except TriggerError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return _event_proto(tenant_id, stored[0])

    async def BulkPush(self, request: pb.BulkPushEventRequest, context: Ctx) -> pb.Events:
        tenant_id = await self._auth.tenant(context)
        try:
            stored = await self._events.push(
                tenant_id=tenant_id, events=[self._new_event(r) for r in request.events]
            )
        except TriggerError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.Events(events=[_event_proto(tenant_id, e) for e in stored])

    async def ReplaySingleEvent(self, request: Any, context: Ctx) -> Any:
        await abort(context, grpc.StatusCode.UNIMPLEMENTED, "event replay is not supported")

    async def PutLog(self, request: pb.PutLogRequest, context: Ctx) -> pb.PutLogResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_run_external_id, what="task_run_external_id")
        metadata: dict[str, Any] = {}
        if request.metadata:
            try:
                decoded = json.loads(request.metadata)
                metadata = decoded if isinstance(decoded, dict) else {"value": decoded}
            except ValueError:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "metadata is not JSON")
        created = (
            request.created_at.ToDatetime(tzinfo=UTC)
            if request.HasField("created_at")
            else datetime.now(UTC)
        )
        stored = task_id is not None and await self._workers.insert_log_line(
            tenant_id=tenant_id,
            task_id=task_id,
            retry_count=request.task_retry_count if request.HasField("task_retry_count") else None,
            level=(request.level or "INFO").upper() if request.HasField("level") else "INFO",
            message=request.message[:MAX_LOG_MESSAGE],
            metadata=metadata,
            created_at=created,
        )
        if not stored:
            await abort(
                context, grpc.StatusCode.NOT_FOUND, f"task {request.task_run_external_id} not found"
            )
        return pb.PutLogResponse()

    async def PutStreamEvent(
        self, request: pb.PutStreamEventRequest, context: Ctx
    ) -> pb.PutStreamEventResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_run_external_id, what="task_run_external_id")
        run_id = None if task_id is None else await self._run_of(tenant_id, task_id)
        if run_id is None or task_id is None:
            await abort(
                context, grpc.StatusCode.NOT_FOUND, f"task {request.task_run_external_id} not found"
            )
        message: dict[str, Any] = {
            "t": "event",
            "run": run_id,
            "task": task_id,
            "kind": "STREAM",
            "payload": request.message.decode("utf-8", errors="replace"),
        }
        if request.HasField("event_index"):
            message["index"] = request.event_index
        await self._bus.publish(None, message)
        return pb.PutStreamEventResponse()

    async def _run_of(self, tenant_id: str, task_id: str) -> str | None:
        key = (tenant_id, task_id)
        run_id = self._run_of_task.get(key)
        if run_id is None:
            run_id = await self._workers.task_run_id(tenant_id=tenant_id, task_id=task_id)
            if run_id is not None:
                self._run_of_task[key] = run_id
                if len(self._run_of_task) > _RUN_CACHE_SIZE:
                    self._run_of_task.popitem(last=False)
        return run_id


def _event_proto(tenant_id: str, event: StoredEvent) -> pb.Event:
    return pb.Event(
        tenant_id=tenant_id,
        event_id=event.id,
        key=event.key,
        payload=json.dumps(event.payload),
        event_timestamp=timestamp(event.created_at),
        additional_metadata=json.dumps(event.additional_metadata),
    )
