"""The gRPC boundary: every call is authenticated before any work, its messages must decode,
and no string in them may hold a NUL character (PostgreSQL cannot store one).

One interceptor does this for every method, so a caller without a valid token is answered
UNAUTHENTICATED before its message is even decoded, and a message that does not decode is
INVALID_ARGUMENT with one warning line, where grpcio would log a traceback and answer UNKNOWN.
While the database is unavailable, calls answer UNAVAILABLE (which the SDKs retry), logged as
one warning line every few seconds (services/outage.py), not a traceback per call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from hewer.engine.services.auth import Authenticator, AuthError, Identity
from hewer.engine.services.outage import is_database_unavailable, outage_log

log = logging.getLogger(__name__)

# the identity the interceptor checked, read by GrpcContextAuth.tenant in the same call
CALLER: ContextVar[Identity | None] = ContextVar("hewer_grpc_caller", default=None)

# fields whose NUL characters the services strip on purpose (a worker's error text)
_NUL_TOLERANT_FIELDS = frozenset({"event_payload"})


class Undecodable:
    """Stands in for a request message whose bytes did not decode."""

    def __init__(self, error: Exception) -> None:
        self.error = error


@dataclass(frozen=True, slots=True)
class HasNul:
    """A request whose string field ``field`` holds a NUL character (refused)."""

    field: str


def find_nul(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field of ``message`` holding a NUL, or None."""
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.name in _NUL_TOLERANT_FIELDS:
            continue
        values: list[Any]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            values = [*value.keys(), *value.values()]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, str) and "\x00" in item:
                return name
            if isinstance(item, Message):
                found = find_nul(item, f"{name}.")
                if found is not None:
                    return found
    return None


def _metadata_token(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _safe_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    inner = deserializer

    def decode(raw: bytes) -> Any:
        try:
            message = inner(raw)
        except Exception as exc:  # any decode failure is the caller's, not ours
            return Undecodable(exc)
        # A NUL character in a string field is a 0x00 byte on the wire; most messages have
        # none at all (proto3 does not write zero scalars), so the field walk is skipped.
        if b"\x00" in raw and isinstance(message, Message):
            field = find_nul(message)
            if field is not None:
                return HasNul(field)
        return message

    return decode


async def _check(request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    if isinstance(request, Undecodable):
        log.warning("%s: request message does not decode: %s", method, request.error)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"request message does not decode: {request.error}"
        )
    if isinstance(request, HasNul):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{request.field} must not contain NUL characters (\\u0000)",
        )


async def _checked_stream(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any], method: str
) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable | HasNul):  # checked here: no coroutine per message
            await _check(request, context, method)
        yield request


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's responses: grpcio lets it be an async generator, or a coroutine
    that writes with ``context.write`` (or only aborts)."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


def _rejecting(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of ``handler``'s kind that answers ``code`` without decoding the request."""

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def streaming(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield None  # pragma: no cover - makes this an async generator

    ignore = _ignore_bytes
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary, request_deserializer=ignore)
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=streaming, request_deserializer=ignore)
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=unary, request_deserializer=ignore)
    return handler._replace(stream_stream=streaming, request_deserializer=ignore)


def _ignore_bytes(raw: bytes) -> None:
    return None


UNAVAILABLE_MESSAGE = "the engine's database is unavailable; retry"


async def _unavailable(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    outage_log("gRPC").failed(exc)
    await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)


def _guarded(handler: Any, identity: Identity, method: str) -> Any:
    decoder = _safe_deserializer(handler.request_deserializer)
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            CALLER.set(identity)
            await _check(request, context, method)
            try:
                return await inner_uu(request, context)
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                await _unavailable(context, exc)

        return handler._replace(unary_unary=unary_unary, request_deserializer=decoder)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            CALLER.set(identity)
            await _check(request, context, method)
            try:
                async for item in _responses(inner_us(request, context)):
                    yield item
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                await _unavailable(context, exc)

        return handler._replace(unary_stream=unary_stream, request_deserializer=decoder)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            CALLER.set(identity)
            try:
                return await inner_su(_checked_stream(requests, context, method), context)
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                await _unavailable(context, exc)

        return handler._replace(stream_unary=stream_unary, request_deserializer=decoder)
    inner_ss = handler.stream_stream

    async def stream_stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        CALLER.set(identity)
        responses = inner_ss(_checked_stream(requests, context, method), context)
        try:
            async for item in _responses(responses):
                yield item
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            await _unavailable(context, exc)

    return handler._replace(stream_stream=stream_stream, request_deserializer=decoder)


class BoundaryInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpcio answers UNIMPLEMENTED
            return handler
        method = str(handler_call_details.method)
        try:
            identity = await self._auth.authenticate(_metadata_token(handler_call_details))
        except AuthError as exc:
            rejected: grpc.RpcMethodHandler[Any, Any] = _rejecting(
                handler, grpc.StatusCode.UNAUTHENTICATED, str(exc)
            )
            return rejected
        except Exception as exc:  # the token check reads the database
            if not is_database_unavailable(exc):
                raise
            outage_log("gRPC").failed(exc)
            unavailable: grpc.RpcMethodHandler[Any, Any] = _rejecting(
                handler, grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE
            )
            return unavailable
        guarded: grpc.RpcMethodHandler[Any, Any] = _guarded(handler, identity, method)
        return guarded
