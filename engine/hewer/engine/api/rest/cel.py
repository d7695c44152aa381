"""``POST .../cel/debug``: evaluate a filter expression against sample data.

The expression sees the event-filter variables (``input``, ``additional_metadata``,
``payload`` = the filter payload, ``event_id``, ``event_key``). A compile or evaluation error
is a normal answer (status ERROR with the message), not an HTTP error.
"""

from __future__ import annotations

from aiohttp import web
from hatchet_sdk.clients.rest.models.v1_cel_debug_request import V1CELDebugRequest
from hatchet_sdk.clients.rest.models.v1_cel_debug_response import V1CELDebugResponse
from hatchet_sdk.clients.rest.models.v1_cel_debug_response_status import (
    V1CELDebugResponseStatus,
)

from hewer.engine.api.rest.context import respond
from hewer.engine.api.rest.params import read_json, validate_body
from hewer.engine.core.cel import CelError, evaluate_bool, filter_variables

routes = web.RouteTableDef()


@routes.post("/api/v1/stable/tenants/{tenant}/cel/debug")
async def cel_debug(request: web.Request) -> web.Response:
    body = validate_body(V1CELDebugRequest, await read_json(request))
    variables = filter_variables(
        input=body.input,
        additional_metadata=body.additional_metadata,
        payload=body.filter_payload,
    )
    try:
        output = evaluate_bool(body.expression, variables)
    except CelError as exc:
        return respond(V1CELDebugResponse(status=V1CELDebugResponseStatus.ERROR, error=str(exc)))
    return respond(V1CELDebugResponse(status=V1CELDebugResponseStatus.SUCCESS, output=output))
