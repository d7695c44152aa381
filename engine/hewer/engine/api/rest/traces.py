"""``GET /api/v1/stable/tenants/{tenant}/traces?run_external_id=...``: a run's trace.

The SDK's ``ObservabilityApi.v1_observability_get_trace``. The trace of a run (or task) is
every span with the run's trace id: those the SDKs exported and the engine's own
(``services/traces.py``), ordered by start time, ``offset``/``limit`` paging them (limit 1000
by default, as Hatchet). 404 when the tenant has neither the run nor any span naming it.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from hatchet_sdk.clients.rest.models.otel_span import OtelSpan
from hatchet_sdk.clients.rest.models.otel_span_kind import OtelSpanKind
from hatchet_sdk.clients.rest.models.otel_span_list import OtelSpanList
from hatchet_sdk.clients.rest.models.otel_status_code import OtelStatusCode

from hewer.engine.api.rest.context import respond, tenant_id
from hewer.engine.api.rest.convert import pagination
from hewer.engine.api.rest.errors import ApiError, NotFound
from hewer.engine.api.rest.params import Query, parse_uuid
from hewer.engine.core.traces import Span
from hewer.engine.services.traces import Traces

routes = web.RouteTableDef()
TRACES = web.AppKey("traces", Traces)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def attribute_text(value: Any) -> str:
    """An attribute value as the REST model's string: text as is, JSON for the rest."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def otel_span(span: Span) -> OtelSpan:
    return OtelSpan(
        traceId=span.trace_id.hex(),
        spanId=span.span_id.hex(),
        parentSpanId=span.parent_span_id.hex() if span.parent_span_id else None,
        spanName=span.name,
        spanKind=OtelSpanKind(span.kind.value),
        serviceName=span.service_name,
        statusCode=OtelStatusCode(span.status.value),
        statusMessage=span.status_message or None,
        durationNs=span.duration_ns,
        createdAt=span.started_at,
        resourceAttributes={k: attribute_text(v) for k, v in span.resource_attributes.items()},
        spanAttributes={k: attribute_text(v) for k, v in span.attributes.items()},
        scopeName=span.scope_name or None,
        scopeVersion=span.scope_version or None,
        retryCount=span.retry_count,
    )


def _traces(request: web.Request) -> Traces:
    found = request.app.get(TRACES)
    if found is None:
        raise ApiError(503, "traces are not available on this server")
    return found


@routes.get("/api/v1/stable/tenants/{tenant}/traces")
async def get_trace(request: web.Request) -> web.Response:
    q = Query(request.query)
    external_id = parse_uuid(q.one("run_external_id"), "run_external_id")
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    trace = await _traces(request).trace_of(tenant_id=tenant_id(request), external_id=external_id)
    if trace is None:
        raise NotFound("trace not found")
    page = trace.spans[offset : offset + limit]
    return respond(
        OtelSpanList(
            rows=[otel_span(s) for s in page],
            pagination=pagination(total=len(trace.spans), offset=offset, limit=limit),
        )
    )
