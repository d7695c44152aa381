"""``v1.V1Dispatcher``: the durable-task stream (``DurableTask``) and the legacy durable
event RPCs.

One stream per worker process. Each request is answered in order through the durable log
(``services/durable.py``); completions of waited-for nodes are pushed to the stream of the
worker that runs the task (bus kind ``durable``) and re-sent when the worker polls with
``worker_status``. A request the engine refuses is answered with an ``error`` naming the
node, which the SDK raises in the task; a request from an invocation that is no longer
current gets ``server_evict``, which makes the SDK drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from hatchet_sdk.contracts.v1 import dispatcher_pb2 as pb
from hatchet_sdk.contracts.v1.dispatcher_pb2_grpc import V1DispatcherServicer

from hewer.engine.api.grpc.admin import trigger_request_from_proto
from hewer.engine.api.grpc.common import GrpcContextAuth, abort, require_uuid
from hewer.engine.core.conditions import DURABLE_ACTIONS, InvalidCondition, parse_conditions
from hewer.engine.services.bus import Bus
from hewer.engine.services.durable import (
    Completion,
    DurableLog,
    DurableRequestError,
    NonDeterminism,
    Ref,
    StaleInvocation,
)
from hewer.engine.services.outage import is_database_unavailable
from hewer.engine.services.triggers import TriggerError

Ctx = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)
Outbox = asyncio.Queue[pb.DurableTaskResponse]


class DurableService(V1DispatcherServicer):  # type: ignore[misc]
    def __init__(
        self, *, auth: GrpcContextAuth, durable: DurableLog, bus: Bus, max_payload_bytes: int
    ) -> None:
        self._auth = auth
        self._log = durable
        self._max = max_payload_bytes
        # worker id -> the outboxes of its open streams on this replica
        self._streams: dict[str, set[Outbox]] = defaultdict(set)
        bus.subscribe("durable", self._on_bus)

    def _on_bus(self, message: dict[str, Any]) -> None:
        outboxes = self._streams.get(str(message.get("worker")))
        if not outboxes:
            return
        result = message.get("result")
        completion = Completion(
            ref=Ref(
                str(message["task"]),
                int(message["inv"]),
                int(message["branch"]),
                int(message["node"]),
            ),
            result=None if result is None else str(result).encode(),
            is_failure=bool(message.get("failure")),
            error_message=message.get("error"),
        )
        for outbox in outboxes:
            outbox.put_nowait(_completed(completion))

    async def DurableTask(
        self, request_iterator: AsyncIterator[pb.DurableTaskRequest], context: Ctx
    ) -> AsyncIterator[pb.DurableTaskResponse]:
        tenant_id = await self._auth.tenant(context)
        outbox: Outbox = asyncio.Queue()
        worker: list[str] = []  # the registered worker id, once known
        reader = asyncio.create_task(self._read(request_iterator, outbox, tenant_id, worker))
        try:
            while True:
                getter = asyncio.ensure_future(outbox.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not outbox.empty():
                    yield outbox.get_nowait()
                break
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            if worker:
                self._streams[worker[0]].discard(outbox)
                if not self._streams[worker[0]]:
                    del self._streams[worker[0]]

    async def _read(
        self,
        requests: AsyncIterator[pb.DurableTaskRequest],
        outbox: Outbox,
        tenant_id: str,
        worker: list[str],
    ) -> None:
        async for request in requests:
            kind = request.WhichOneof("message")
            if kind == "register_worker":
                worker_id = request.register_worker.worker_id
                if not worker:
                    worker.append(worker_id)
                    self._streams[worker_id].add(outbox)
                outbox.put_nowait(
                    pb.DurableTaskResponse(
                        register_worker=pb.DurableTaskResponseRegisterWorker(worker_id=worker_id)
                    )
                )
                continue
            if kind is None:
                continue
            for response in await self._answer(kind, request, tenant_id, worker):
                outbox.put_nowait(response)

    async def _answer(
        self, kind: str, request: pb.DurableTaskRequest, tenant_id: str, worker: list[str]
    ) -> list[pb.DurableTaskResponse]:
        body = getattr(request, kind)
        task_id = _task_id(body)
        invocation = _invocation(body)
        worker_id = worker[0] if worker else ""
        try:
            if task_id is None and kind != "worker_status":
                raise DurableRequestError("durable_task_external_id must be a UUID")
            if kind == "memo":
                ack = await self._log.memo(
                    tenant_id=tenant_id,
                    worker_id=worker_id,
                    task_id=str(task_id),
                    invocation=invocation,
                    key=body.key,
                )
                memo = pb.DurableTaskEventMemoAckResponse(
                    ref=_ref(ack.ref), memo_already_existed=ack.existed
                )
                if ack.result is not None:
                    memo.memo_result_payload = ack.result
                return [pb.DurableTaskResponse(memo_ack=memo)]
            if kind == "complete_memo":
                ref = body.ref
                await self._log.complete_memo(
                    tenant_id=tenant_id,
                    ref=Ref(str(task_id), ref.invocation_count, ref.branch_id, ref.node_id),
                    key=body.memo_key,
                    payload=body.payload,
                )
                return []
            if kind == "wait_for":
                try:
                    conditions = parse_conditions(
                        MessageToDict(body.wait_for_conditions, preserving_proto_field_name=True),
                        parents=(),
                        where="durable wait",
                        actions=DURABLE_ACTIONS,
                    )
                except InvalidCondition as exc:
                    raise DurableRequestError(str(exc)) from None
                wait = await self._log.wait_for(
                    tenant_id=tenant_id,
                    worker_id=worker_id,
                    task_id=str(task_id),
                    invocation=invocation,
                    conditions=conditions,
                    label=body.label if body.HasField("label") else None,
                )
                answer = [
                    pb.DurableTaskResponse(
                        wait_for_ack=pb.DurableTaskEventWaitForAckResponse(ref=_ref(wait.ref))
                    )
                ]
                if wait.completion is not None:
                    answer.append(_completed(wait.completion))
                return answer
            if kind == "trigger_runs":
                return [await self._trigger_runs(body, tenant_id, worker_id, str(task_id))]
            if kind == "evict_invocation":
                await self._log.evict(
                    tenant_id=tenant_id,
                    worker_id=worker_id,
                    task_id=str(task_id),
                    invocation=invocation,
                    reason=body.reason if body.HasField("reason") else "",
                )
                return [
                    pb.DurableTaskResponse(
                        eviction_ack=pb.DurableTaskEvictionAckResponse(
                            invocation_count=invocation, durable_task_external_id=str(task_id)
                        )
                    )
                ]
            if kind == "worker_status":
                return await self._worker_status(body, tenant_id)
            raise DurableRequestError(f"unknown durable request {kind!r}")
        except StaleInvocation as exc:
            return [_evict_notice(exc.task_id, exc.invocation, "stale invocation")]
        except NonDeterminism as exc:
            return [_error(body, task_id, str(exc), node_id=exc.node_id, nondeterminism=True)]
        except (DurableRequestError, TriggerError) as exc:
            return [_error(body, task_id, str(exc))]
        except Exception as exc:
            if not is_database_unavailable(exc):
                log.exception("durable %s request failed", kind)
            return [_error(body, task_id, f"the engine could not record the {kind}: {exc}")]

    async def _trigger_runs(
        self, body: Any, tenant_id: str, worker_id: str, task_id: str
    ) -> pb.DurableTaskResponse:
        requests = []
        for opts in body.trigger_opts:
            request = trigger_request_from_proto(opts, max_bytes=self._max)
            if request.parent_task_id is None:  # a durable task's spawns are its children
                request = dataclasses.replace(request, parent_task_id=task_id)
            requests.append(request)
        entries = await self._log.trigger_runs(
            tenant_id=tenant_id,
            worker_id=worker_id,
            task_id=task_id,
            invocation=body.invocation_count,
            requests=requests,
        )
        return pb.DurableTaskResponse(
            trigger_runs_ack=pb.DurableTaskEventTriggerRunsAckResponse(
                durable_task_external_id=task_id,
                invocation_count=body.invocation_count,
                run_entries=[
                    pb.DurableTaskRunAckEntry(
                        node_id=ref.node_id,
                        branch_id=ref.branch_id,
                        workflow_run_external_id=run_id,
                    )
                    for ref, run_id in entries
                ],
            )
        )

    async def _worker_status(self, body: Any, tenant_id: str) -> list[pb.DurableTaskResponse]:
        waiting = [
            Ref(task, e.invocation_count, e.branch_id, e.node_id)
            for e in body.waiting_entries
            if (task := require_uuid(e.durable_task_external_id, what="task")) is not None
        ]
        if not waiting:
            return []
        answer = await self._log.status(tenant_id=tenant_id, waiting=waiting)
        responses = [_completed(c) for c in answer.completions]
        for task_id, invocation in sorted(set(answer.stale)):
            responses.append(_evict_notice(task_id, invocation, "stale invocation"))
        return responses

    async def RegisterDurableEvent(self, request: Any, context: Ctx) -> Any:
        await abort(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            "this engine (v0.80 or later) takes durable waits on the DurableTask stream",
        )

    async def ListenForDurableEvent(self, request_iterator: Any, context: Ctx) -> Any:
        await abort(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            "this engine (v0.80 or later) takes durable waits on the DurableTask stream",
        )


def _task_id(body: Any) -> str | None:
    raw = getattr(body, "durable_task_external_id", None)
    if raw is None and hasattr(body, "ref"):
        raw = body.ref.durable_task_external_id
    return None if raw is None else require_uuid(raw, what="durable_task_external_id")


def _invocation(body: Any) -> int:
    if hasattr(body, "invocation_count"):
        return int(body.invocation_count)
    if hasattr(body, "ref"):
        return int(body.ref.invocation_count)
    return 0


def _ref(ref: Ref) -> pb.DurableEventLogEntryRef:
    return pb.DurableEventLogEntryRef(
        durable_task_external_id=ref.task_id,
        invocation_count=ref.invocation,
        branch_id=ref.branch_id,
        node_id=ref.node_id,
    )


def _completed(c: Completion) -> pb.DurableTaskResponse:
    entry = pb.DurableTaskEventLogEntryCompletedResponse(ref=_ref(c.ref), is_failure=c.is_failure)
    if c.result is not None:
        entry.payload = c.result
    if c.error_message is not None:
        entry.error_message = c.error_message
    return pb.DurableTaskResponse(entry_completed=entry)


def _evict_notice(task_id: str, invocation: int, reason: str) -> pb.DurableTaskResponse:
    return pb.DurableTaskResponse(
        server_evict=pb.DurableTaskServerEvictNotice(
            durable_task_external_id=task_id, invocation_count=invocation, reason=reason
        )
    )


def _error(
    body: Any, task_id: str | None, message: str, *, node_id: int = 0, nondeterminism: bool = False
) -> pb.DurableTaskResponse:
    return pb.DurableTaskResponse(
        error=pb.DurableTaskErrorResponse(
            ref=pb.DurableEventLogEntryRef(
                durable_task_external_id=task_id
                or str(getattr(body, "durable_task_external_id", "")),
                invocation_count=_invocation(body),
                node_id=node_id,
            ),
            error_type=pb.DURABLE_TASK_ERROR_TYPE_NONDETERMINISM
            if nondeterminism
            else pb.DURABLE_TASK_ERROR_TYPE_UNSPECIFIED,
            error_message=message,
        )
    )
