"""Error responses in Hatchet's ``APIErrors`` shape, and the middleware that produces them.

Every failure leaves as ``{"errors": [{"description": ...}]}`` with a meaningful status: the
SDK decides whether to retry on the status alone (it retries 404 and 5xx), and nothing about
the server's internals (stack traces, SQL) may reach the client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from hatchet_sdk.clients.rest.models.api_error import APIError
from hatchet_sdk.clients.rest.models.api_errors import APIErrors

from hewer.engine.services.outage import is_database_unavailable, outage_log

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """Raised by handlers; turned into an ``APIErrors`` response with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BadRequest(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class Unauthorized(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


class Forbidden(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(403, message)


class NotFound(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(404, message)


def error_body(*messages: str) -> str:
    body = APIErrors(errors=[APIError(description=m) for m in messages])
    return json.dumps(body.model_dump(by_alias=True, exclude_none=True, mode="json"))


def error_response(status: int, *messages: str) -> web.Response:
    return web.Response(status=status, text=error_body(*messages), content_type="application/json")


# aiohttp's own exceptions carry a reason such as "Not Found"; keep ours short and stable.
_DEFAULT_MESSAGES = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like pass through untouched
        message = _DEFAULT_MESSAGES.get(exc.status, exc.reason or "error")
        if exc.status == 413 and exc.text:
            # aiohttp's text names the limit: HEWER_MAX_PAYLOAD_BYTES plus 64 KiB of envelope
            message = f"{message} (HEWER_MAX_PAYLOAD_BYTES plus 64 KiB): {exc.text}"
        response = error_response(exc.status, message)
        if exc.status == 405:
            allow = exc.headers.get("Allow")
            if allow:
                response.headers["Allow"] = allow
        return response
    except Exception as exc:
        if is_database_unavailable(exc):
            outage_log("REST").failed(exc)
            return error_response(503, "the engine's database is unavailable; retry")
        # Log the detail here; the client only learns that something went wrong.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal server error")
