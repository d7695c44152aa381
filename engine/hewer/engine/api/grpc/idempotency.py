"""How a duplicate trigger is answered over gRPC, exactly as Hatchet answers it.

The SDK (``hatchet_sdk.clients.admin``) recognises a duplicate by the status
``ALREADY_EXISTS`` with the message ``"idempotency key collision"`` (any other
``ALREADY_EXISTS`` becomes a ``DedupeViolationError``), then unpacks a ``google.rpc.Status``
from the ``grpc-status-details-bin`` trailer: ``v1.IdempotencyCollisionError`` for a single
trigger, ``v1.BulkTriggerIdempotencyCollisionError`` for a bulk one (whose other runs were
created). (``google.rpc`` comes from googleapis-common-protos, which has no type stubs.)
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2  # type: ignore[import-untyped]
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1

from hewer.engine.services.triggers import IdempotencyCollision

COLLISION_MESSAGE = "idempotency key collision"
_DETAILS_TRAILER = "grpc-status-details-bin"


def collision_status(exc: IdempotencyCollision, *, bulk: bool) -> Any:
    """The ``google.rpc.Status`` (code, message, detail) that answers a duplicate."""
    collisions = [
        v1.IdempotencyCollisionError(
            existing_run_external_id=c.existing_run_id,
            colliding_run_external_id=c.requested_run_id,
        )
        for c in exc.collisions
    ]
    detail = any_pb2.Any()
    if bulk:
        detail.Pack(
            v1.BulkTriggerIdempotencyCollisionError(
                successful_workflow_run_external_ids=exc.created, collisions=collisions
            )
        )
    else:
        detail.Pack(collisions[0])
    return status_pb2.Status(
        code=grpc.StatusCode.ALREADY_EXISTS.value[0], message=COLLISION_MESSAGE, details=[detail]
    )


async def abort_collision(
    context: grpc.aio.ServicerContext[Any, Any], exc: IdempotencyCollision, *, bulk: bool
) -> NoReturn:
    status = collision_status(exc, bulk=bulk)
    await context.abort(
        grpc.StatusCode.ALREADY_EXISTS,
        COLLISION_MESSAGE,
        trailing_metadata=((_DETAILS_TRAILER, status.SerializeToString()),),
    )
    raise AssertionError("unreachable")  # abort raises
