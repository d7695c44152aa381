"""Traces against PostgreSQL: stored SDK spans and the engine's spans of runs, read as one
trace by run or task id; spawned runs in their parent's trace; tenants apart; retention."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.integration.harness import Replica, drain

from hewer.engine.core.traces import (
    Span,
    SpanKind,
    attempt_span_id,
    ensure_traceparent,
    format_traceparent,
    run_span_id,
    run_trace_id,
)
from hewer.engine.services.retention import Retention
from hewer.engine.services.traces import Traces

SDK_TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
PRODUCER = bytes.fromhex("00f067aa0ba902b7")
SOLO = {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run"}]}
DAG = {
    "name": "dag",
    "tasks": [
        {"readable_id": "a", "action": "dag:a"},
        {"readable_id": "b", "action": "dag:b", "parents": ["a"]},
    ],
}
KID = {"name": "kid", "tasks": [{"readable_id": "k", "action": "kid:k"}]}


def sdk_span(
    name: str,
    *,
    span_id: bytes,
    parent: bytes | None,
    start: int,
    trace_id: bytes = SDK_TRACE,
    run_id: str | None = None,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=SpanKind.INTERNAL,
        start_ns=start,
        end_ns=start + 1000,
        attributes={"hatchet.step_run_id": run_id} if run_id else {"x": 1},
        resource_attributes={"service.name": "worker"},
        task_run_id=run_id,
        workflow_run_id=run_id,
    )


async def run_task(engine: Replica, tenant: str, worker: Any, *, output: str = "{}") -> str:
    """Assign the next queued task to ``worker`` and complete it; returns its id."""
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    await engine.lifecycle.started(
        tenant_id=tenant, task_id=message.task_id, retry_count=message.retry_count
    )
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, output=output
    )
    return message.task_id


async def test_a_runs_trace_joins_the_sdks_spans_and_the_engines(
    engine: Replica, tenant: str
) -> None:
    traces = Traces(repo=engine.repo)
    await engine.register(tenant, SOLO)
    worker = await engine.connect_worker(tenant, ["solo:run"])
    traceparent = format_traceparent(SDK_TRACE, PRODUCER)
    run_id = await engine.trigger(tenant, "solo", additional_metadata={"traceparent": traceparent})
    await run_task(engine, tenant, worker)

    now = 1_700_000_000_000_000_000
    step_id, child_id = b"\x01" * 8, b"\x02" * 8
    step = sdk_span(
        "hatchet.start_step_run", span_id=step_id, parent=PRODUCER, start=now, run_id=run_id
    )
    child = sdk_span(
        "custom.child.span", span_id=child_id, parent=step_id, start=now + 1, run_id=run_id
    )
    producer = sdk_span("hatchet.run_workflow", span_id=PRODUCER, parent=None, start=now - 5)
    assert await traces.ingest(tenant_id=tenant, spans=[step, child, producer]) == 3
    # an exporter that sends a span again (two processors, a retry) stores it once
    assert await traces.ingest(tenant_id=tenant, spans=[child]) == 0

    trace = await traces.trace_of(tenant_id=tenant, external_id=run_id)
    assert trace is not None and trace.trace_id == SDK_TRACE
    spans = {s.name: s for s in trace.spans}
    assert sorted(spans) == [
        "custom.child.span",
        "hatchet.engine.queued",
        "hatchet.engine.start_step_run",
        "hatchet.engine.workflow_run",
        "hatchet.run_workflow",
        "hatchet.start_step_run",
    ]
    assert {s.trace_id for s in trace.spans} == {SDK_TRACE}
    engine_attempt = spans["hatchet.engine.start_step_run"]
    assert engine_attempt.span_id == attempt_span_id(run_id, 0, "step_run")
    # the SDK's task span was stored under the engine's span of its attempt
    assert spans["hatchet.start_step_run"].parent_span_id == engine_attempt.span_id
    assert spans["custom.child.span"].parent_span_id == b"\x01" * 8
    assert spans["hatchet.engine.workflow_run"].parent_span_id == PRODUCER
    assert spans["custom.child.span"].attributes == {"hatchet.step_run_id": run_id}
    assert [s.start_ns for s in trace.spans] == sorted(s.start_ns for s in trace.spans)
    assert await traces.spans_for_run(tenant_id=tenant, run_id=run_id) == trace.spans


async def test_a_dag_its_tasks_and_its_child_runs_read_as_one_trace(
    engine: Replica, tenant: str
) -> None:
    traces = Traces(repo=engine.repo)
    for definition in (DAG, KID):
        await engine.register(tenant, definition)
    worker = await engine.connect_worker(tenant, ["dag:a", "dag:b", "kid:k"])
    dag_id = await engine.trigger(tenant, "dag")  # no traceparent: the trace is derived
    a_task = await run_task(engine, tenant, worker)
    # a child spawned from task a by an uninstrumented SDK carries the action's metadata,
    # which holds the traceparent the dispatcher added
    inherited = json.loads(ensure_traceparent("{}", run_id=dag_id))
    kid_id = await engine.trigger(
        tenant, "kid", additional_metadata=inherited, parent_task_id=a_task, child_index=0
    )
    # a child spawned without it starts a trace of its own
    loner_id = await engine.trigger(tenant, "kid", parent_task_id=a_task, child_index=1)

    trace = await traces.trace_of(tenant_id=tenant, external_id=dag_id)
    assert trace is not None and trace.trace_id == run_trace_id(dag_id)
    runs = {s.workflow_run_id for s in trace.spans if s.name == "hatchet.engine.workflow_run"}
    assert runs == {dag_id, kid_id}
    kid_root = next(
        s
        for s in trace.spans
        if s.name == "hatchet.engine.workflow_run" and s.workflow_run_id == kid_id
    )
    assert kid_root.parent_span_id == attempt_span_id(a_task, 0, "step_run")
    dag_root = next(s for s in trace.spans if s.span_id == run_span_id(dag_id))
    assert dag_root.parent_span_id is None
    # the same trace by the task's id and by the child's (its family reaches the root)
    for other in (a_task, kid_id):
        again = await traces.trace_of(tenant_id=tenant, external_id=other)
        assert again is not None and again.trace_id == trace.trace_id
        assert {s.span_id for s in again.spans} == {s.span_id for s in trace.spans}
    loner = await traces.trace_of(tenant_id=tenant, external_id=loner_id)
    assert loner is not None and loner.trace_id == run_trace_id(loner_id)
    assert {s.workflow_run_id for s in loner.spans} == {loner_id}


async def test_unknown_runs_spans_only_runs_and_other_tenants(engine: Replica, tenant: str) -> None:
    traces = Traces(repo=engine.repo)
    assert await traces.trace_of(tenant_id=tenant, external_id=str(uuid.uuid4())) is None
    # spans of a run this engine has no row for (deleted, or never seen): found by the id
    gone = str(uuid.uuid4())
    span = sdk_span(
        "hatchet.start_step_run", span_id=b"\x05" * 8, parent=None, start=9, run_id=gone
    )
    await traces.ingest(tenant_id=tenant, spans=[span])
    trace = await traces.trace_of(tenant_id=tenant, external_id=gone)
    assert trace is not None and [s.span_id for s in trace.spans] == [b"\x05" * 8]
    other = await engine.repo.ensure_tenant("tenant-b")
    assert await traces.trace_of(tenant_id=other, external_id=gone) is None
    assert await traces.spans_for_run(tenant_id=other, run_id=gone) == []


async def test_retention_deletes_spans_received_before_the_cutoff(
    engine: Replica, tenant: str
) -> None:
    traces = Traces(repo=engine.repo)
    old = sdk_span("old", span_id=b"\x07" * 8, parent=None, start=1)
    new = sdk_span("new", span_id=b"\x08" * 8, parent=None, start=2)
    await traces.ingest(tenant_id=tenant, spans=[old, new])
    await engine.repo.pool.execute(
        "UPDATE otel_spans SET received_at = now() - interval '800 hours' WHERE span_id = $1",
        old.span_id,
    )
    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()
    assert deleted["spans"] == 1
    names = [r["name"] for r in await engine.repo.pool.fetch("SELECT name FROM otel_spans")]
    assert names == ["new"]
