"""What every gRPC servicer shares: authentication, error mapping, conversions."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from hewer.engine.api.grpc.boundary import CALLER
from hewer.engine.services.auth import Authenticator, AuthError


class GrpcContextAuth:
    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    async def tenant(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The caller's tenant id; aborts with UNAUTHENTICATED when the token is bad.

        Behind :class:`BoundaryInterceptor` (the server) the token was checked before the
        call started; servicers driven without it (tests) check it here."""
        checked = CALLER.get()
        if checked is not None:
            return checked.tenant_id
        header = None
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        try:
            identity = await self._auth.authenticate(header)
        except AuthError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return identity.tenant_id


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # abort raises


def require_uuid(value: str, *, what: str) -> str | None:
    """The canonical form of ``value`` if it is a UUID, else None."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def timestamp(value: datetime | None = None) -> Timestamp:
    """``value`` (now if None) as a protobuf Timestamp. Now is read as nanoseconds: one is
    stamped on every run result sent, and going through a datetime took 5.5 us, not 0.9."""
    if value is None:
        now = time.time_ns()
        return Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC).replace(tzinfo=None))
    return ts
