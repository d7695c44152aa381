"""Result and event streams: SubscribeToWorkflowRuns and SubscribeToWorkflowEvents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from hatchet_sdk.contracts import dispatcher_pb2 as pb

from hewer.engine.api.grpc.common import abort, require_uuid, timestamp
from hewer.engine.services.reads import Reads
from hewer.engine.services.subscriptions import (
    EventWatchers,
    ResultWatchers,
    RunEvent,
    RunResult,
)

log = logging.getLogger(__name__)
RUN_LOOKUP_ATTEMPTS = 10
FINISH_CHECK_SECONDS = 2.0

_TASK_EVENT = {
    "STARTED": pb.RESOURCE_EVENT_TYPE_STARTED,
    "COMPLETED": pb.RESOURCE_EVENT_TYPE_COMPLETED,
    "FAILED": pb.RESOURCE_EVENT_TYPE_FAILED,
    "CANCELLED": pb.RESOURCE_EVENT_TYPE_CANCELLED,
    "TIMED_OUT": pb.RESOURCE_EVENT_TYPE_TIMED_OUT,
    "STREAM": pb.RESOURCE_EVENT_TYPE_STREAM,
}


def result_to_proto(result: RunResult) -> pb.WorkflowRunEvent:
    event = pb.WorkflowRunEvent(
        workflow_run_id=result.run_id,
        event_type=pb.WORKFLOW_RUN_EVENT_TYPE_FINISHED,
        event_timestamp=timestamp(),
    )
    for task in result.tasks:
        item = pb.StepRunResult(
            task_run_external_id=task.task_id,
            task_name=task.readable_id,
            job_run_id=task.task_id,
        )
        if task.status == "COMPLETED":
            if task.output:
                item.output = task.output
        elif task.status == "FAILED":
            item.error = task.error or ""
        else:
            item.error = ""
        event.results.append(item)
    return event


class RunStreams:
    def __init__(self, *, reads: Reads, results: ResultWatchers, events: EventWatchers) -> None:
        self._reads = reads
        self._results = results
        self._events = events

    async def workflow_runs(
        self, tenant_id: str, requests: AsyncIterator[Any]
    ) -> AsyncIterator[pb.WorkflowRunEvent]:
        queue: asyncio.Queue[RunResult] = asyncio.Queue()

        async def read_requests() -> None:
            async for request in requests:
                run_id = require_uuid(request.workflow_run_id, what="workflow_run_id")
                if run_id is None:
                    log.info("ignored subscription to invalid run id %r", request.workflow_run_id)
                    continue
                self._results.watch(run_id, queue, tenant_id=tenant_id)

        reader = asyncio.create_task(read_requests())
        try:
            while True:
                result = await queue.get()
                yield result_to_proto(result)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._results.forget(queue)

    async def workflow_events(
        self, tenant_id: str, run_id_text: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WorkflowEvent]:
        run_id = require_uuid(run_id_text, what="workflow_run_id")
        if run_id is None:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid workflow_run_id {run_id_text!r}",
            )
        run = None
        for attempt in range(RUN_LOOKUP_ATTEMPTS):
            run = await self._reads.get_run(tenant_id=tenant_id, run_id=run_id)
            if run is not None:
                break
            if attempt < RUN_LOOKUP_ATTEMPTS - 1:
                await asyncio.sleep(1.0)
        if run is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"workflow run {run_id} not found")
        queue = self._events.watch(run_id)
        try:
            run = await self._reads.get_run(tenant_id=tenant_id, run_id=run_id)
            if run is None or run["finished_at"] is not None:
                return  # already over: nothing live to stream
            order = _StreamOrder()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=FINISH_CHECK_SECONDS)
                except TimeoutError:
                    run = await self._reads.get_run(tenant_id=tenant_id, run_id=run_id)
                    if run is None or run["finished_at"] is None:
                        continue
                    event = RunEvent(
                        run_id=run_id, task_id="", kind=f"RUN_{run['status']}", payload=""
                    )
                if event.kind.startswith("RUN_"):
                    for pending in order.flush_all():
                        yield _event_proto(pending)
                    yield _run_finished_proto(event)
                    return
                for ready in order.accept(event):
                    yield _event_proto(ready)
        finally:
            self._events.forget(run_id, queue)


class _StreamOrder:
    """Releases stream chunks of each task in event_index order (other events pass through)."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._held: dict[str, dict[int, RunEvent]] = {}

    def accept(self, event: RunEvent) -> list[RunEvent]:
        if event.kind != "STREAM" or event.index is None:
            # a task's final event releases whatever of its stream is still held
            return [*self._flush(event.task_id), event] if event.kind != "STARTED" else [event]
        expected = self._next.get(event.task_id, 0)
        if event.index < expected:
            return [event]
        held = self._held.setdefault(event.task_id, {})
        held[event.index] = event
        ready: list[RunEvent] = []
        while expected in held:
            ready.append(held.pop(expected))
            expected += 1
        self._next[event.task_id] = expected
        return ready

    def _flush(self, task_id: str) -> list[RunEvent]:
        held = self._held.pop(task_id, {})
        return [held[i] for i in sorted(held)]

    def flush_all(self) -> list[RunEvent]:
        return [e for task_id in list(self._held) for e in self._flush(task_id)]


def _event_proto(event: RunEvent) -> pb.WorkflowEvent:
    proto = pb.WorkflowEvent(
        workflow_run_id=event.run_id,
        resource_type=pb.RESOURCE_TYPE_STEP_RUN,
        event_type=_TASK_EVENT.get(event.kind, pb.RESOURCE_EVENT_TYPE_UNKNOWN),
        resource_id=event.task_id,
        event_timestamp=timestamp(),
        event_payload=event.payload,
        hangup=False,
        retry_count=event.retry_count,
    )
    if event.index is not None:
        proto.event_index = event.index
    return proto


def _run_finished_proto(event: RunEvent) -> pb.WorkflowEvent:
    status = event.kind.removeprefix("RUN_")
    kind = {
        "COMPLETED": pb.RESOURCE_EVENT_TYPE_COMPLETED,
        "FAILED": pb.RESOURCE_EVENT_TYPE_FAILED,
        "CANCELLED": pb.RESOURCE_EVENT_TYPE_CANCELLED,
    }.get(status, pb.RESOURCE_EVENT_TYPE_COMPLETED)
    return pb.WorkflowEvent(
        workflow_run_id=event.run_id,
        resource_type=pb.RESOURCE_TYPE_WORKFLOW_RUN,
        event_type=kind,
        resource_id=event.run_id,
        event_timestamp=timestamp(),
        event_payload="",
        hangup=True,
    )
