"""The OTLP TraceService on the engine's gRPC port and the REST trace, over the wire.

Raw OTLP stubs (as the SDK's exporter uses them) for what an exporter may send: spans the
engine keeps, malformed ones (INVALID_ARGUMENT, or partial success beside good ones), a bad
token. The trace of a real run is read with the SDK's own ``ObservabilityApi``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from e2e_support import Engine, WorkerProc, bearer
from e2e_workflows import RETRY
from hatchet_sdk import Hatchet
from hatchet_sdk.clients.rest.api.observability_api import ObservabilityApi
from hatchet_sdk.clients.rest.models.otel_span_list import OtelSpanList
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def stub(engine: Engine) -> Iterator[Any]:
    with engine.grpc_channel() as channel:
        yield otlp_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]


def export(*spans: trace_pb2.Span) -> otlp.ExportTraceServiceRequest:
    return otlp.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
    )


def span(run_id: str, span_id: bytes, **fields: Any) -> trace_pb2.Span:
    """A span of ``run_id``, in a trace of its own (derived from the run id here)."""
    base: dict[str, Any] = {
        "trace_id": uuid.UUID(run_id).bytes,
        "span_id": span_id,
        "name": "hatchet.start_step_run",
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "end_time_unix_nano": 1_700_000_000_000_001_000,
        "attributes": [
            common_pb2.KeyValue(
                key="hatchet.workflow_run_id", value=common_pb2.AnyValue(string_value=run_id)
            )
        ],
    }
    base.update(fields)
    return trace_pb2.Span(**base)


def trace_of(engine: Engine, run_id: str) -> Any:
    tenant = engine.tenant_of()
    return engine.rest("GET", f"/api/v1/stable/tenants/{tenant}/traces?run_external_id={run_id}")


def test_spans_are_stored_and_served_by_the_run_they_name(engine: Engine, stub: Any) -> None:
    run_id = str(uuid.uuid4())
    assert trace_of(engine, run_id).status_code == 404
    reply = stub.Export(
        export(span(run_id, b"\x01" * 8)), metadata=bearer(engine.token), timeout=10
    )
    assert not reply.HasField("partial_success")
    response = trace_of(engine, run_id)
    assert response.status_code == 200, response.text
    body = OtelSpanList.from_dict(response.json())
    assert body is not None and body.rows is not None
    assert [(s.trace_id, s.span_id, s.span_name) for s in body.rows] == [
        (uuid.UUID(run_id).hex, (b"\x01" * 8).hex(), "hatchet.start_step_run")
    ]
    assert trace_of(engine, "not-a-uuid").status_code == 400


def test_malformed_spans_are_refused_and_good_ones_beside_them_kept(
    engine: Engine, stub: Any
) -> None:
    run_id = str(uuid.uuid4())
    with pytest.raises(grpc.RpcError) as info:
        stub.Export(
            export(span(run_id, b"\x02" * 8, trace_id=b"\x01\x02")),
            metadata=bearer(engine.token),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "trace_id must be 16 bytes" in (info.value.details() or "")

    reply = stub.Export(
        export(span(run_id, b"\x03" * 8), span(run_id, b"\x04" * 8, name="")),
        metadata=bearer(engine.token),
        timeout=10,
    )
    assert reply.partial_success.rejected_spans == 1
    assert "spans[1]: name is required" in reply.partial_success.error_message
    rows = trace_of(engine, run_id).json()["rows"]
    assert [r["spanId"] for r in rows] == [(b"\x03" * 8).hex()]

    with pytest.raises(grpc.RpcError) as info:
        stub.Export(
            export(span(run_id, b"\x05" * 8, name="nul\x00")),
            metadata=bearer(engine.token),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.RpcError) as info:
        stub.Export(export(), metadata=bearer("not-a-token"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    engine.assert_alive()


async def test_a_retried_runs_trace_shows_each_attempt(
    engine: Engine, hatchet: Hatchet, workflows: dict[str, Any], main_worker: WorkerProc
) -> None:
    ref = await workflows[RETRY].aio_run(wait_for_result=False)
    await asyncio.wait_for(ref.aio_result(), timeout=60)

    def read() -> OtelSpanList:
        with hatchet.runs.client() as client:
            return ObservabilityApi(client).v1_observability_get_trace(
                hatchet.tenant_id, ref.workflow_run_id
            )

    trace = await asyncio.to_thread(read)
    rows = trace.rows or []
    names = Counter(s.span_name for s in rows)
    # the worker is not instrumented: the engine's spans alone, three attempts of one task
    assert names == {
        "hatchet.engine.workflow_run": 1,
        "hatchet.engine.queued": 3,
        "hatchet.engine.start_step_run": 3,
    }
    attempts = [s for s in rows if s.span_name == "hatchet.engine.start_step_run"]
    assert [(s.retry_count, s.status_code.value) for s in attempts] == [
        (0, "ERROR"),
        (1, "ERROR"),
        (2, "OK"),
    ]
    assert len({s.trace_id for s in rows}) == 1
    assert len({s.span_id for s in rows}) == len(rows)
