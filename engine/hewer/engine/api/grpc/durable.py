"""``v1.V1Dispatcher``: the durable-task stream.

Durable tasks that neither sleep, wait, memoize nor spawn run like any other task; the
stream only has to accept the worker's registration and status polls. Event-log requests
(memo, waits, child spawns, eviction) answer with an error the SDK raises in the task, so a
durable task using them fails clearly instead of hanging.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from hatchet_sdk.contracts.v1 import dispatcher_pb2 as pb
from hatchet_sdk.contracts.v1.dispatcher_pb2_grpc import V1DispatcherServicer

from hewer.engine.api.grpc.common import GrpcContextAuth, abort

Ctx = grpc.aio.ServicerContext[Any, Any]
UNSUPPORTED = "durable event log ({}) is not supported by this engine version yet"


class DurableService(V1DispatcherServicer):  # type: ignore[misc]
    def __init__(self, *, auth: GrpcContextAuth) -> None:
        self._auth = auth

    async def DurableTask(
        self, request_iterator: AsyncIterator[pb.DurableTaskRequest], context: Ctx
    ) -> AsyncIterator[pb.DurableTaskResponse]:
        await self._auth.tenant(context)
        async for request in request_iterator:
            kind = request.WhichOneof("message")
            if kind == "register_worker":
                yield pb.DurableTaskResponse(
                    register_worker=pb.DurableTaskResponseRegisterWorker(
                        worker_id=request.register_worker.worker_id
                    )
                )
            elif kind in ("worker_status", "complete_memo", None):
                continue
            else:
                body = getattr(request, kind)
                yield pb.DurableTaskResponse(
                    error=pb.DurableTaskErrorResponse(
                        ref=pb.DurableEventLogEntryRef(
                            durable_task_external_id=body.durable_task_external_id,
                            invocation_count=body.invocation_count,
                        ),
                        error_type=pb.DURABLE_TASK_ERROR_TYPE_UNSPECIFIED,
                        error_message=UNSUPPORTED.format(kind),
                    )
                )

    async def RegisterDurableEvent(self, request: Any, context: Ctx) -> Any:
        await abort(context, grpc.StatusCode.UNIMPLEMENTED, "use the DurableTask stream")

    async def ListenForDurableEvent(self, request_iterator: Any, context: Ctx) -> Any:
        await abort(context, grpc.StatusCode.UNIMPLEMENTED, "use the DurableTask stream")
