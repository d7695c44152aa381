"""``v1.V1Dispatcher``: the durable-task stream (``DurableTask``) and the legacy durable
event RPCs.

One stream per worker process. Each task's requests are answered in order through the
durable log (``services/durable.py``); different tasks' requests are answered concurrently.
Results of waited-for nodes are handed over in the order the nodes were satisfied
(``core.durable.deliverable``), after every request that moves a replay on, when a node is
satisfied (bus kind ``durable``, to the worker that runs the task) and when the worker polls
with ``worker_status``. A request the engine refuses is answered with an ``error`` naming the
node, which the SDK raises in the task; a request from an invocation that is no longer
current gets ``server_evict``, which makes the SDK drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import grpc
from google.protobuf.json_format import MessageToDict
from hatchet_sdk.contracts.v1 import dispatcher_pb2 as pb
from hatchet_sdk.contracts.v1.dispatcher_pb2_grpc import V1DispatcherServicer

from hewer.engine.api.grpc.admin import trigger_request_from_proto
from hewer.engine.api.grpc.common import GrpcContextAuth, abort, require_uuid
from hewer.engine.api.grpc.lanes import Lanes
from hewer.engine.core.conditions import DURABLE_ACTIONS, InvalidCondition, parse_conditions
from hewer.engine.services.bus import Bus
from hewer.engine.services.durable import (
    Completion,
    DurableLog,
    DurableRequestError,
    DurableTaskNotFound,
    NonDeterminism,
    Ref,
    StaleInvocation,
)
from hewer.engine.services.durable_signals import DurableSignals
from hewer.engine.services.outage import is_database_unavailable
from hewer.engine.services.triggers import TriggerError

Ctx = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)
Outbox = asyncio.Queue[pb.DurableTaskResponse]
# (task, invocation) pairs whose handed-over nodes a stream remembers; an older pair that
# falls out only costs a duplicate completion, which the SDK ignores
_SENT_MEMORY = 10_000
# requests of one stream answered at once (each holds a database connection meanwhile)
_CONCURRENT_REQUESTS = 8


class _Answer(NamedTuple):
    responses: list[pb.DurableTaskResponse]
    # whether results held back for a replay may be free now: a request that reached a node
    # already in the log (a replay) may free some, one that added a node frees none (nothing
    # lies beyond it), so the log is not read back after every new node
    push: bool = True


@dataclasses.dataclass(eq=False)
class _Stream:
    tenant_id: str
    outbox: Outbox
    worker_id: str = ""
    # (task, invocation) -> the (branch, node)s already handed over on this stream
    sent: OrderedDict[tuple[str, int], set[tuple[int, int]]] = dataclasses.field(
        default_factory=OrderedDict
    )


class DurableService(V1DispatcherServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        auth: GrpcContextAuth,
        durable: DurableLog,
        signals: DurableSignals,
        bus: Bus,
        max_payload_bytes: int,
    ) -> None:
        self._auth = auth
        self._log = durable
        self._signals = signals
        # open ListenForDurableEvent streams, told of every satisfied node
        self._signal_listeners: set[Callable[[dict[str, Any]], None]] = set()
        self._max = max_payload_bytes
        # worker id -> its open streams on this replica
        self._streams: dict[str, set[_Stream]] = defaultdict(set)
        self._pushes: set[asyncio.Task[None]] = set()
        bus.subscribe("durable", self._on_bus)

    def _on_bus(self, message: dict[str, Any]) -> None:
        """A node of ``task`` was satisfied: hand over what its invocation may have now."""
        for listener in list(self._signal_listeners):
            listener(message)
        task_id = str(message.get("task"))
        for stream in self._streams.get(str(message.get("worker")), ()):
            push = asyncio.get_running_loop().create_task(self._push_ready(stream, task_id))
            self._pushes.add(push)
            push.add_done_callback(self._pushes.discard)

    async def _push_ready(
        self, stream: _Stream, task_id: str, *, resend: frozenset[tuple[int, int]] = frozenset()
    ) -> None:
        """Put the task's deliverable completions that this stream has not handed over yet
        (or that the worker says it still waits for) in its outbox, in satisfied order."""
        try:
            ready = await self._log.ready(tenant_id=stream.tenant_id, task_id=task_id)
        except Exception as exc:  # the worker's status poll asks again
            if not is_database_unavailable(exc):
                log.exception("reading the durable log of task %s failed", task_id)
            return
        if ready is None or ready.worker_id != stream.worker_id:
            return
        # no await from here on: a concurrent push cannot interleave its puts with ours
        key = (task_id, ready.invocation)
        sent = stream.sent.pop(key, set())
        stream.sent[key] = sent
        while len(stream.sent) > _SENT_MEMORY:
            stream.sent.popitem(last=False)
        for completion in ready.completions:
            node = (completion.ref.branch_id, completion.ref.node_id)
            if node in sent and node not in resend:
                continue
            sent.add(node)
            stream.outbox.put_nowait(_completed(completion))

    async def DurableTask(
        self, request_iterator: AsyncIterator[pb.DurableTaskRequest], context: Ctx
    ) -> AsyncIterator[pb.DurableTaskResponse]:
        tenant_id = await self._auth.tenant(context)
        stream = _Stream(tenant_id=tenant_id, outbox=asyncio.Queue())
        outbox = stream.outbox
        reader = asyncio.create_task(self._read(request_iterator, stream))
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
            if stream.worker_id:
                self._streams[stream.worker_id].discard(stream)
                if not self._streams[stream.worker_id]:
                    del self._streams[stream.worker_id]

    async def _read(self, requests: AsyncIterator[pb.DurableTaskRequest], stream: _Stream) -> None:
        """Answer the stream's requests: one task's in the order they came, different tasks'
        side by side (``lanes.py``)."""
        lanes = Lanes(limit=_CONCURRENT_REQUESTS)
        polling: asyncio.Task[None] | None = None
        try:
            async for request in requests:
                kind = request.WhichOneof("message")
                if kind == "register_worker":
                    raw_id = request.register_worker.worker_id
                    worker_id = require_uuid(raw_id, what="worker_id")
                    if worker_id is None:
                        # the stream stays unregistered: every request on it is refused as
                        # not held by this worker, instead of reaching the database with a
                        # bad id
                        stream.outbox.put_nowait(
                            _error(
                                None, None, f"register_worker: worker_id {raw_id!r} is not a UUID"
                            )
                        )
                        continue
                    if not stream.worker_id:
                        stream.worker_id = worker_id
                        self._streams[worker_id].add(stream)
                    stream.outbox.put_nowait(
                        pb.DurableTaskResponse(
                            register_worker=pb.DurableTaskResponseRegisterWorker(
                                worker_id=worker_id
                            )
                        )
                    )
                    continue
                if kind is None:
                    continue
                if kind == "worker_status":
                    # off the read loop, one at a time: the SDK polls every second, so a
                    # poll that comes while one is answered is dropped
                    if polling is None or polling.done():
                        polling = asyncio.create_task(
                            self._worker_status(request.worker_status, stream)
                        )
                        lanes.track(polling)
                    continue
                lane = _task_id(getattr(request, kind)) or ""
                lanes.submit(lane, functools.partial(self._handle, kind, request, stream))
            await lanes.drain()  # the worker closed its side: answer what it sent before that
        finally:
            lanes.cancel()

    async def _handle(self, kind: str, request: pb.DurableTaskRequest, stream: _Stream) -> None:
        answer = await self._answer(kind, request, stream)
        for response in answer.responses:
            stream.outbox.put_nowait(response)
        task_id = _task_id(getattr(request, kind))
        if answer.push and task_id is not None and stream.worker_id:
            # a replay moved on: results it unblocks go out after its ack
            await self._push_ready(stream, task_id)

    async def _answer(self, kind: str, request: pb.DurableTaskRequest, stream: _Stream) -> _Answer:
        body = getattr(request, kind)
        task_id = _task_id(body)
        invocation = _invocation(body)
        tenant_id, worker_id = stream.tenant_id, stream.worker_id
        try:
            if task_id is None:
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
                return _Answer([pb.DurableTaskResponse(memo_ack=memo)], push=ack.replayed)
            if kind == "complete_memo":
                ref = body.ref
                await self._log.complete_memo(
                    tenant_id=tenant_id,
                    ref=Ref(str(task_id), ref.invocation_count, ref.branch_id, ref.node_id),
                    key=body.memo_key,
                    payload=body.payload,
                )
                return _Answer([], push=False)  # a memo's value travels in its ack
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
                waited = pb.DurableTaskEventWaitForAckResponse(ref=_ref(wait.ref))
                return _Answer([pb.DurableTaskResponse(wait_for_ack=waited)], push=wait.replayed)
            if kind == "trigger_runs":
                return _Answer([await self._trigger_runs(body, tenant_id, worker_id, str(task_id))])
            if kind == "evict_invocation":
                await self._log.evict(
                    tenant_id=tenant_id,
                    worker_id=worker_id,
                    task_id=str(task_id),
                    invocation=invocation,
                    reason=body.reason if body.HasField("reason") else "",
                )
                evicted = pb.DurableTaskEvictionAckResponse(
                    invocation_count=invocation, durable_task_external_id=str(task_id)
                )
                # an evicted task is handed nothing until it is restored
                return _Answer([pb.DurableTaskResponse(eviction_ack=evicted)], push=False)
            raise DurableRequestError(f"unknown durable request {kind!r}")
        except StaleInvocation as exc:
            return _Answer([_evict_notice(exc.task_id, exc.invocation, "stale invocation")])
        except NonDeterminism as exc:
            return _Answer(
                [_error(body, task_id, str(exc), node_id=exc.node_id, nondeterminism=True)]
            )
        except (DurableRequestError, TriggerError) as exc:
            return _Answer([_error(body, task_id, str(exc))])
        except Exception as exc:
            if not is_database_unavailable(exc):
                log.exception("durable %s request failed", kind)
            return _Answer(
                [_error(body, task_id, f"the engine could not record the {kind}: {exc}")]
            )

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

    async def _worker_status(self, body: Any, stream: _Stream) -> None:
        """The worker's poll of what it waits for: re-send what is deliverable (a completion
        may have been lost with an earlier stream) and tell it which invocations are stale."""
        waiting = [
            Ref(task, e.invocation_count, e.branch_id, e.node_id)
            for e in body.waiting_entries
            if (task := require_uuid(e.durable_task_external_id, what="task")) is not None
        ]
        if not waiting:
            return
        try:
            answer = await self._log.poll(tenant_id=stream.tenant_id, waiting=waiting)
        except Exception as exc:
            if not is_database_unavailable(exc):
                log.exception("durable worker_status failed")
            return
        for task_id, asked in answer.resend.items():
            await self._push_ready(stream, task_id, resend=asked)
        for task_id, invocation in answer.stale:
            stream.outbox.put_nowait(_evict_notice(task_id, invocation, "stale invocation"))

    # -- the pre-eviction API (SDKs for engines before v0.80) ---------------------------

    async def RegisterDurableEvent(
        self, request: pb.RegisterDurableEventRequest, context: Ctx
    ) -> pb.RegisterDurableEventResponse:
        tenant_id = await self._auth.tenant(context)
        task_id = require_uuid(request.task_id, what="task_id")
        if task_id is None:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "task_id must be a UUID")
        try:
            conditions = parse_conditions(
                MessageToDict(request.conditions, preserving_proto_field_name=True),
                parents=(),
                where="durable wait",
                actions=DURABLE_ACTIONS,
            )
            await self._signals.register(
                tenant_id=tenant_id,
                task_id=str(task_id),
                signal_key=request.signal_key,
                conditions=conditions,
            )
        except DurableTaskNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except (InvalidCondition, DurableRequestError) as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.RegisterDurableEventResponse()

    async def ListenForDurableEvent(
        self, request_iterator: AsyncIterator[pb.ListenForDurableEventRequest], context: Ctx
    ) -> AsyncIterator[pb.DurableEvent]:
        """Each request subscribes to one (task, signal key); its event is sent once, when
        the signal is satisfied (at once if it already is)."""
        tenant_id = await self._auth.tenant(context)
        wanted: set[tuple[str, str]] = set()
        # tasks to look at again: a subscription arrived, or one of its nodes was satisfied
        recheck: asyncio.Queue[str | None] = asyncio.Queue()

        async def read() -> None:
            async for request in request_iterator:
                task_id = require_uuid(request.task_id, what="task_id")
                if task_id is not None and request.signal_key:
                    wanted.add((str(task_id), request.signal_key))
                    recheck.put_nowait(str(task_id))
            recheck.put_nowait(None)

        def on_bus(message: dict[str, Any]) -> None:
            task_id = str(message.get("task"))
            if any(task == task_id for task, _ in wanted):
                recheck.put_nowait(task_id)

        self._signal_listeners.add(on_bus)
        reader = asyncio.create_task(read())
        try:
            while (task_id := await recheck.get()) is not None:
                for task, key in sorted(k for k in wanted if k[0] == task_id):
                    try:
                        data = await self._signals.result(
                            tenant_id=tenant_id, task_id=task, signal_key=key
                        )
                    except DurableTaskNotFound:
                        wanted.discard((task, key))
                        continue
                    if data is not None:
                        wanted.discard((task, key))
                        yield pb.DurableEvent(task_id=task, signal_key=key, data=data)
        finally:
            self._signal_listeners.discard(on_bus)
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader


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
