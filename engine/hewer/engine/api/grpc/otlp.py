"""The OTLP ``opentelemetry.proto.collector.trace.v1.TraceService`` on the engine's gRPC port.

The SDKs' instrumentation (``HatchetInstrumentor``) exports spans here with the client's
token, as to Hatchet's engine. Each span is checked and converted to ``core.traces.Span``:
ids of the right length, a name, start and end times in order, and the SDK's correlation
attributes (``hatchet.step_run_id``, ``hatchet.workflow_run_id``: UUIDs; ``hatchet.retry_count``:
a count). Per the OTLP specification a request whose spans are all malformed is refused with
INVALID_ARGUMENT naming the first problem (not retryable), and one with some bad spans stores
the rest and answers with ``partial_success`` (how many were rejected, and why). A span whose
attributes, events and links encode to more than HEWER_MAX_PAYLOAD_BYTES is always rejected
through ``partial_success``; a request larger than the gRPC message limit is
RESOURCE_EXHAUSTED from grpcio itself.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from hewer.engine.api.grpc.common import GrpcContextAuth, abort
from hewer.engine.core.traces import (
    ATTR_RETRY_COUNT,
    ATTR_TASK_RUN_ID,
    ATTR_WORKFLOW_RUN_ID,
    Span,
    SpanKind,
    SpanStatus,
)
from hewer.engine.services.traces import Traces

_KINDS = list(SpanKind)  # proto enum order: UNSPECIFIED, INTERNAL, ..., CONSUMER
_STATUSES = {0: SpanStatus.UNSET, 1: SpanStatus.OK, 2: SpanStatus.ERROR}
_MAX_NS = 2**63 - 1  # stored as bigint


class MalformedSpan(ValueError):
    pass


@dataclass(slots=True)
class DecodedExport:
    """The spans of one export that can be stored, and what was wrong with the others."""

    spans: list[Span] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    oversized: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [*self.malformed, *self.oversized]


def any_value(value: common_pb2.AnyValue) -> Any:
    """An attribute value as JSON: bytes as base64 (as Hatchet does), NaN and infinities as
    strings (JSONB has no such numbers)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)
    return getattr(value, which)


def attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def _event(event: trace_pb2.Span.Event) -> dict[str, Any]:
    out: dict[str, Any] = {"name": event.name, "time_unix_nano": event.time_unix_nano}
    if event.attributes:
        out["attributes"] = attributes(event.attributes)
    if event.dropped_attributes_count:
        out["dropped_attributes_count"] = event.dropped_attributes_count
    return out


def _link(link: trace_pb2.Span.Link) -> dict[str, Any]:
    out: dict[str, Any] = {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
    if link.trace_state:
        out["trace_state"] = link.trace_state
    if link.attributes:
        out["attributes"] = attributes(link.attributes)
    return out


def _correlation_id(attrs: dict[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    if value is None or value == "":
        return None
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise MalformedSpan(f"attribute {key} must be a UUID, got {value!r}") from None


def _retry_count(attrs: dict[str, Any]) -> int:
    value = attrs.get(ATTR_RETRY_COUNT)
    if value is None:
        return 0  # the SDK leaves it out on a first attempt
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise MalformedSpan(f"attribute {ATTR_RETRY_COUNT} must be a count, got {value!r}")
    return value


def span_from_proto(
    span: trace_pb2.Span, *, resource: dict[str, Any], scope: common_pb2.InstrumentationScope
) -> Span:
    """A stored span from an OTLP span; raises :class:`MalformedSpan` saying what is wrong."""
    if len(span.trace_id) != 16 or not any(span.trace_id):
        raise MalformedSpan(f"trace_id must be 16 bytes, not all zero (got {len(span.trace_id)})")
    if len(span.span_id) != 8 or not any(span.span_id):
        raise MalformedSpan(f"span_id must be 8 bytes, not all zero (got {len(span.span_id)})")
    if len(span.parent_span_id) not in (0, 8):
        got = len(span.parent_span_id)
        raise MalformedSpan(f"parent_span_id must be empty or 8 bytes (got {got})")
    if not span.name:
        raise MalformedSpan("name is required")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not 0 < start <= end <= _MAX_NS:
        raise MalformedSpan(
            f"start_time_unix_nano ({start}) and end_time_unix_nano ({end}) must be set, "
            "in order, and fit in 63 bits"
        )
    attrs = attributes(span.attributes)
    return Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id if any(span.parent_span_id) else None,
        name=span.name,
        kind=_KINDS[span.kind] if 0 <= span.kind < len(_KINDS) else SpanKind.UNSPECIFIED,
        start_ns=start,
        end_ns=end,
        status=_STATUSES.get(span.status.code, SpanStatus.UNSET),
        status_message=span.status.message,
        attributes=attrs,
        resource_attributes=resource,
        events=[_event(e) for e in span.events],
        links=[_link(link) for link in span.links],
        scope_name=scope.name,
        scope_version=scope.version,
        task_run_id=_correlation_id(attrs, ATTR_TASK_RUN_ID),
        workflow_run_id=_correlation_id(attrs, ATTR_WORKFLOW_RUN_ID),
        retry_count=_retry_count(attrs),
    )


def _encoded_size(span: Span) -> int:
    parts = (span.attributes, span.resource_attributes, span.events, span.links)
    return sum(len(json.dumps(p).encode()) for p in parts) + len(span.status_message.encode())


def decode_export(request: otlp.ExportTraceServiceRequest, *, max_span_bytes: int) -> DecodedExport:
    decoded = DecodedExport()
    for r, resource_spans in enumerate(request.resource_spans):
        resource = attributes(resource_spans.resource.attributes)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            for i, proto_span in enumerate(scope_spans.spans):
                where = f"resource_spans[{r}].scope_spans[{s}].spans[{i}]"
                try:
                    span = span_from_proto(proto_span, resource=resource, scope=scope_spans.scope)
                except MalformedSpan as exc:
                    decoded.malformed.append(f"{where}: {exc}")
                    continue
                size = _encoded_size(span)
                if size > max_span_bytes:
                    decoded.oversized.append(
                        f"{where}: {size} bytes of attributes, events and links, larger than "
                        f"HEWER_MAX_PAYLOAD_BYTES ({max_span_bytes})"
                    )
                    continue
                decoded.spans.append(span)
    return decoded


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{len(problems)} span(s) rejected: {problems[0]}{more}"


class TraceCollector(otlp_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, *, auth: GrpcContextAuth, traces: Traces, max_span_bytes: int) -> None:
        self._auth = auth
        self._traces = traces
        self._max_span_bytes = max_span_bytes

    async def Export(
        self,
        request: otlp.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> otlp.ExportTraceServiceResponse:
        tenant_id = await self._auth.tenant(context)
        decoded = decode_export(request, max_span_bytes=self._max_span_bytes)
        if decoded.malformed and not decoded.spans and not decoded.oversized:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, _summary(decoded.malformed))
        if decoded.spans:
            await self._traces.ingest(tenant_id=tenant_id, spans=decoded.spans)
        problems = decoded.problems
        if not problems:
            return otlp.ExportTraceServiceResponse()
        return otlp.ExportTraceServiceResponse(
            partial_success=otlp.ExportTracePartialSuccess(
                rejected_spans=len(problems), error_message=_summary(problems)
            )
        )
