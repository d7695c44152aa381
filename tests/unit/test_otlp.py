"""OTLP spans to stored spans, and stored spans to the REST model (no server)."""

from __future__ import annotations

import math
import uuid

import pytest
from hatchet_sdk.clients.rest.models.otel_span import OtelSpan
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from hewer.engine.api.grpc.otlp import any_value, decode_export
from hewer.engine.api.rest.convert import dump
from hewer.engine.api.rest.traces import attribute_text, otel_span
from hewer.engine.core.traces import SpanKind, SpanStatus

TRACE = bytes(range(1, 17))
SPAN = bytes(range(1, 9))
PARENT = bytes(range(11, 19))
RUN = str(uuid.uuid4())


def kv(key: str, **value: object) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))  # type: ignore[arg-type]


def proto_span(**fields: object) -> trace_pb2.Span:
    base: dict[str, object] = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "parent_span_id": PARENT,
        "name": "hatchet.start_step_run",
        "kind": trace_pb2.Span.SPAN_KIND_CONSUMER,
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "end_time_unix_nano": 1_700_000_000_250_000_000,
        "attributes": [
            kv("hatchet.step_run_id", string_value=RUN),
            kv("hatchet.workflow_run_id", string_value=RUN),
            kv("hatchet.retry_count", int_value=2),
            kv("http.status_code", int_value=200),
        ],
        "status": trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
    }
    base.update(fields)
    return trace_pb2.Span(**base)  # type: ignore[arg-type]


def request(*spans: trace_pb2.Span) -> otlp.ExportTraceServiceRequest:
    return otlp.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[kv("service.name", string_value="shop")]
                ),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name="hatchet", version="1.37.5"),
                        spans=list(spans),
                    )
                ],
            )
        ]
    )


def test_a_span_converts_with_its_correlation() -> None:
    event = trace_pb2.Span.Event(
        time_unix_nano=5, name="exception", attributes=[kv("k", bool_value=True)]
    )
    link = trace_pb2.Span.Link(trace_id=TRACE, span_id=PARENT)
    decoded = decode_export(request(proto_span(events=[event], links=[link])), max_span_bytes=10**6)
    assert decoded.problems == []
    (span,) = decoded.spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, SPAN, PARENT)
    assert (span.kind, span.status, span.status_message) == (
        SpanKind.CONSUMER,
        SpanStatus.ERROR,
        "boom",
    )
    assert span.duration_ns == 250_000_000
    assert (span.task_run_id, span.workflow_run_id, span.retry_count) == (RUN, RUN, 2)
    assert span.attributes["http.status_code"] == 200
    assert span.service_name == "shop"
    assert (span.scope_name, span.scope_version) == ("hatchet", "1.37.5")
    assert span.events == [{"name": "exception", "time_unix_nano": 5, "attributes": {"k": True}}]
    assert span.links == [{"trace_id": TRACE.hex(), "span_id": PARENT.hex()}]


def test_a_root_span_and_one_without_correlation() -> None:
    plain = proto_span(parent_span_id=b"", attributes=[], name="custom")
    (span,) = decode_export(request(plain), max_span_bytes=10**6).spans
    assert (span.parent_span_id, span.task_run_id, span.retry_count) == (None, None, 0)


def test_attribute_values() -> None:
    nested = common_pb2.AnyValue(
        array_value=common_pb2.ArrayValue(
            values=[common_pb2.AnyValue(int_value=1), common_pb2.AnyValue(string_value="a")]
        )
    )
    assert any_value(nested) == [1, "a"]
    kvlist = common_pb2.AnyValue(
        kvlist_value=common_pb2.KeyValueList(values=[kv("x", double_value=1.5)])
    )
    assert any_value(kvlist) == {"x": 1.5}
    assert any_value(common_pb2.AnyValue(bytes_value=b"\x00\x01")) == "AAE="
    assert any_value(common_pb2.AnyValue(double_value=math.inf)) == "inf"
    assert any_value(common_pb2.AnyValue()) is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"trace_id": b"\x01" * 4}, "trace_id must be 16 bytes"),
        ({"trace_id": bytes(16)}, "trace_id must be 16 bytes"),
        ({"span_id": bytes(8)}, "span_id must be 8 bytes"),
        ({"parent_span_id": b"\x01" * 3}, "parent_span_id must be empty or 8 bytes"),
        ({"name": ""}, "name is required"),
        ({"start_time_unix_nano": 0}, "must be set, in order"),
        ({"end_time_unix_nano": 1}, "must be set, in order"),
        ({"end_time_unix_nano": 2**64 - 1}, "fit in 63 bits"),
        (
            {"attributes": [kv("hatchet.workflow_run_id", string_value="run-1")]},
            "hatchet.workflow_run_id must be a UUID",
        ),
        (
            {"attributes": [kv("hatchet.retry_count", string_value="-1")]},
            "hatchet.retry_count must be a count",
        ),
    ],
)
def test_malformed_spans_are_rejected_with_the_reason(
    fields: dict[str, object], problem: str
) -> None:
    decoded = decode_export(request(proto_span(**fields)), max_span_bytes=10**6)
    assert decoded.spans == []
    (message,) = decoded.malformed
    assert message.startswith("resource_spans[0].scope_spans[0].spans[0]: ")
    assert problem in message


def test_good_spans_are_kept_beside_bad_and_oversized_ones() -> None:
    big = proto_span(span_id=b"\x02" * 8, attributes=[kv("blob", string_value="x" * 5000)])
    decoded = decode_export(request(proto_span(), proto_span(name=""), big), max_span_bytes=4096)
    assert [s.span_id for s in decoded.spans] == [SPAN]
    assert len(decoded.malformed) == 1 and "spans[1]" in decoded.malformed[0]
    (oversized,) = decoded.oversized
    assert "spans[2]" in oversized and "HEWER_MAX_PAYLOAD_BYTES (4096)" in oversized


def test_the_rest_model_takes_every_attribute_as_text() -> None:
    (span,) = decode_export(request(proto_span()), max_span_bytes=10**6).spans
    body = dump(otel_span(span))
    model = OtelSpan.from_dict(body)
    assert model is not None
    assert (model.trace_id, model.span_id, model.parent_span_id) == (
        TRACE.hex(),
        SPAN.hex(),
        PARENT.hex(),
    )
    assert model.span_attributes is not None
    assert model.span_attributes["http.status_code"] == "200"
    assert model.span_attributes["hatchet.retry_count"] == "2"
    assert (model.duration_ns, model.retry_count, model.service_name) == (250_000_000, 2, "shop")
    assert model.created_at.year == 2023
    assert [attribute_text(v) for v in ("a", True, 1.5, None, [1, "b"], {"k": 1})] == [
        "a",
        "true",
        "1.5",
        "",
        '[1,"b"]',
        '{"k":1}',
    ]
