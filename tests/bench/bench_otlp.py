"""OTLP ingest and trace-read benchmark (a script, not a test).

    .venv/bin/python tests/bench/bench_otlp.py [--exports 200] [--batch 512] [--senders 2]

Starts ``hewer dev`` on a fresh embedded PostgreSQL and, like the SDK's BatchSpanProcessor,
sends ``--exports`` OTLP exports of ``--batch`` spans each to the engine's TraceService from
``--senders`` concurrent clients. The spans look like the SDK's: the ``hatchet.*`` attributes
of a task span (with a 300-byte action payload) and a 4-attribute resource; every ten spans
share a run id and a trace. It prints spans/s, the p50/p99 latency of one export and the
engine's CPU seconds per 1000 spans, then the p50/p99 of ``GET .../traces`` for a run whose
trace holds ``--trace-spans`` stored spans. See tests/bench/README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid

import grpc
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

import bench


def _kv(key: str, value: str | int) -> common_pb2.KeyValue:
    if isinstance(value, int):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def sdk_like_span(run_id: str, trace_id: bytes, n: int, start: int) -> trace_pb2.Span:
    attrs = {
        "instrumentor": "hatchet",
        "hatchet.tenant_id": str(uuid.uuid4()),
        "hatchet.worker_id": str(uuid.uuid4()),
        "hatchet.workflow_run_id": run_id,
        "hatchet.step_id": str(uuid.uuid4()),
        "hatchet.step_run_id": run_id,
        "hatchet.action_payload": '{"input": {"message": "' + "x" * 280 + '"}}',
        "hatchet.workflow_name": "bench-otel",
        "hatchet.action_name": "bench-otel:step",
        "hatchet.step_name": "step",
        "hatchet.workflow_id": str(uuid.uuid4()),
        "hatchet.workflow_version_id": str(uuid.uuid4()),
    }
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=uuid.uuid4().bytes[:8],
        parent_span_id=uuid.uuid4().bytes[:8],
        name="hatchet.start_step_run" if n % 10 == 0 else f"user.span.{n % 10}",
        kind=trace_pb2.Span.SPAN_KIND_CONSUMER,
        start_time_unix_nano=start + n * 1000,
        end_time_unix_nano=start + n * 1000 + 500_000,
        attributes=[_kv(k, v) for k, v in attrs.items()],
    )


def export_request(batch: int, spans_per_run: int = 10) -> otlp.ExportTraceServiceRequest:
    start = time.time_ns()
    spans = []
    for n in range(batch):
        if n % spans_per_run == 0:
            run_id, trace_id = str(uuid.uuid4()), uuid.uuid4().bytes
        spans.append(sdk_like_span(run_id, trace_id, n, start))
    resource = resource_pb2.Resource(
        attributes=[
            _kv("service.name", "bench-worker"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", "1.45.2"),
        ]
    )
    scope = common_pb2.InstrumentationScope(name="hatchet_sdk", version="1.37.5")
    return otlp.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource, scope_spans=[trace_pb2.ScopeSpans(scope=scope, spans=spans)]
            )
        ]
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ingest(host: str, token: str, args: argparse.Namespace) -> list[float]:
    requests_ = [export_request(args.batch) for _ in range(args.exports)]
    latencies: list[float] = []
    queue: asyncio.Queue[otlp.ExportTraceServiceRequest] = asyncio.Queue()
    for r in requests_:
        queue.put_nowait(r)
    metadata = (("authorization", f"Bearer {token}"),)

    async def sender() -> None:
        async with grpc.aio.insecure_channel(host) as channel:
            stub = otlp_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
            while not queue.empty():
                request = queue.get_nowait()
                t = time.perf_counter()
                reply = await stub.Export(request, metadata=metadata, timeout=60)
                latencies.append(time.perf_counter() - t)
                assert not reply.HasField("partial_success"), reply

    await asyncio.gather(*(sender() for _ in range(args.senders)))
    return latencies


def read_trace(server_url: str, tenant: str, token: str, args: argparse.Namespace) -> list[float]:
    run_id, trace_id = str(uuid.uuid4()), uuid.uuid4().bytes
    start = time.time_ns()
    spans = [sdk_like_span(run_id, trace_id, n, start) for n in range(args.trace_spans)]
    request = otlp.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
    )
    url = f"{server_url}/api/v1/stable/tenants/{tenant}/traces?run_external_id={run_id}"
    headers = {"Authorization": f"Bearer {token}"}
    with grpc.insecure_channel(args.host) as channel:
        stub = otlp_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        stub.Export(request, metadata=(("authorization", f"Bearer {token}"),), timeout=60)
    latencies = []
    with requests.Session() as session:
        for _ in range(args.reads):
            t = time.perf_counter()
            response = session.get(url, headers=headers, timeout=30)
            latencies.append(time.perf_counter() - t)
            assert response.status_code == 200, response.text
            assert len(response.json()["rows"]) == args.trace_spans
    return latencies


async def run(args: argparse.Namespace, h: bench.Harness) -> int:
    dev = await bench.start_dev_engine(h, env=bench.child_env() | {"HEWER_LOG_LEVEL": "WARNING"})
    engine, client_env = dev.proc, dev.client_env
    token = client_env["HATCHET_CLIENT_TOKEN"]
    server_url = client_env["HATCHET_CLIENT_SERVER_URL"]
    args.host = dev.host
    tenant = _tenant(server_url, token)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    cpu0, t0 = bench.tree_cpu(engine.popen.pid), time.perf_counter()
    latencies = await ingest(args.host, token, args)
    wall, cpu = time.perf_counter() - t0, bench.tree_cpu(engine.popen.pid) - cpu0
    spans = args.exports * args.batch
    p50, p99 = statistics.median(latencies) * 1000, pct(latencies, 0.99) * 1000
    print(
        f"ingest: {spans} spans in {args.exports} exports of {args.batch} from {args.senders} "
        f"senders: {spans / wall:,.0f} spans/s; export p50 {p50:.0f} ms, p99 {p99:.0f} ms; "
        f"engine CPU {cpu / spans * 1000:.3f} s per 1000 spans (engine process only; "
        "PostgreSQL not counted)"
    )
    reads = await asyncio.to_thread(read_trace, server_url, tenant, token, args)
    print(
        f"read: GET .../traces of a {args.trace_spans}-span trace ({args.reads} reads): "
        f"p50 {statistics.median(reads) * 1000:.1f} ms, p99 {pct(reads, 0.99) * 1000:.1f} ms"
    )
    return 0


def _tenant(server_url: str, token: str) -> str:
    from hatchet_sdk import ClientConfig

    return ClientConfig(token=token, server_url=server_url).tenant_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--trace-spans", type=int, default=500)
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    h = bench.Harness(Path(tempfile.mkdtemp(prefix="hewer-bench-otlp-")))
    try:
        return asyncio.run(run(args, h))
    finally:
        h.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
