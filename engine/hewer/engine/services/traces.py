"""OpenTelemetry traces: stores the spans SDKs export, and reads a run's trace.

A trace read joins two sources (``core/traces.py``): the spans stored for the trace id, and
the engine's spans of every run in that trace, derived from the run tables. The runs in a
trace are the run asked for, the runs related to it by spawning (its root ancestor and every
descendant) and the runs the stored spans name, kept when their own trace is this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hewer.engine.core.engine_spans import RunFacts, TaskEventFact, TaskFacts, engine_spans
from hewer.engine.core.traces import Span, SpanKind, SpanStatus, reparented, run_trace
from hewer.engine.db.base import Record
from hewer.engine.db.repository import Repository

log = logging.getLogger(__name__)

# bounds on one trace read: the stored spans of the trace and the runs whose engine spans
# are derived (a fan-out of thousands of child runs is not one waterfall)
MAX_STORED_SPANS = 10_000
MAX_TRACE_RUNS = 500


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: bytes
    spans: list[Span]  # by start time


class Traces:
    def __init__(self, *, repo: Repository) -> None:
        self._repo = repo

    async def ingest(self, *, tenant_id: str, spans: Sequence[Span]) -> int:
        """Store exported spans (each SDK task span re-parented under the engine's span of
        its attempt); returns how many were new (a span sent twice is kept once)."""
        stored = await self._repo.insert_spans(
            tenant_id=tenant_id, spans=[reparented(s) for s in spans]
        )
        log.debug("stored %d of %d spans for tenant %s", stored, len(spans), tenant_id)
        return stored

    async def trace_of(
        self, *, tenant_id: str, external_id: str, now: datetime | None = None
    ) -> Trace | None:
        """The trace of a run or task (by external id), or None when the tenant has neither
        the run nor any span naming it."""
        repo = self._repo
        run_id = await repo.resolve_run(tenant_id=tenant_id, external_id=external_id)
        rows = (
            [] if run_id is None else await repo.trace_runs(tenant_id=tenant_id, run_ids=[run_id])
        )
        family: list[str] = []
        if run_id is not None and rows:
            trace_id = run_trace(run_id=run_id, traceparent=rows[0]["traceparent"]).trace_id
            # the run itself first: a family larger than the bound still includes it
            family = [run_id] + await repo.trace_run_family(
                tenant_id=tenant_id, run_id=run_id, limit=MAX_TRACE_RUNS
            )
        else:  # no such run (any more): a trace its spans name
            found = await repo.trace_of_spans(tenant_id=tenant_id, external_id=external_id)
            if found is None:
                return None
            trace_id = found
        stored = [
            _stored_span(r)
            for r in await repo.trace_spans(
                tenant_id=tenant_id, trace_id=trace_id, limit=MAX_STORED_SPANS
            )
        ]
        named = (s.workflow_run_id for s in stored if s.workflow_run_id is not None)
        candidates = _unique([*family, *named])[:MAX_TRACE_RUNS]
        runs = await self._runs_in_trace(tenant_id, candidates, trace_id)
        moment = now or datetime.now(UTC)
        tasks = {t.id: t for run in runs for t in run.tasks}
        derived = [
            span
            for run in runs
            for span in engine_spans(
                run,
                now=moment,
                parent_task=tasks.get(run.parent_task_id) if run.parent_task_id else None,
            )
        ]
        spans = sorted([*stored, *derived], key=lambda s: (s.start_ns, s.name, s.span_id))
        return Trace(trace_id=trace_id, spans=spans)

    async def spans_for_run(self, *, tenant_id: str, run_id: str) -> list[Span]:
        """The spans of the trace a run (or task) belongs to, by start time: what the run
        detail page draws as a waterfall. Empty when there is none."""
        trace = await self.trace_of(tenant_id=tenant_id, external_id=run_id)
        return [] if trace is None else trace.spans

    async def _runs_in_trace(
        self, tenant_id: str, run_ids: Sequence[str], trace_id: bytes
    ) -> list[RunFacts]:
        if not run_ids:
            return []
        rows = [
            r
            for r in await self._repo.trace_runs(tenant_id=tenant_id, run_ids=run_ids)
            if run_trace(run_id=str(r["id"]), traceparent=r["traceparent"]).trace_id == trace_id
        ]
        if not rows:
            return []
        task_rows = await self._repo.trace_task_events(
            tenant_id=tenant_id, run_ids=[str(r["id"]) for r in rows]
        )
        tasks = _task_facts(task_rows)
        return [_run_facts(r, tasks.get(str(r["id"]), [])) for r in rows]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _stored_span(row: Record) -> Span:
    start = int(row["start_ns"])
    return Span(
        trace_id=bytes(row["trace_id"]),
        span_id=bytes(row["span_id"]),
        parent_span_id=None if row["parent_span_id"] is None else bytes(row["parent_span_id"]),
        name=row["name"],
        kind=SpanKind(row["kind"]),
        start_ns=start,
        end_ns=start + int(row["duration_ns"]),
        status=SpanStatus(row["status_code"]),
        status_message=row["status_message"],
        attributes=row["attributes"],
        resource_attributes=row["resource_attributes"],
        events=row["events"],
        links=row["links"],
        scope_name=row["scope_name"],
        scope_version=row["scope_version"],
        task_run_id=_opt(row["task_run_id"]),
        workflow_run_id=_opt(row["workflow_run_id"]),
        retry_count=int(row["retry_count"]),
    )


def _task_facts(rows: Iterable[Record]) -> dict[str, list[TaskFacts]]:
    """Task rows joined with their events (one row per event) to each run's tasks."""
    events: dict[str, list[TaskEventFact]] = {}
    first: dict[str, Record] = {}
    for r in rows:
        task_id = str(r["id"])
        first.setdefault(task_id, r)
        task_events = events.setdefault(task_id, [])
        if r["event_type"] is not None:
            task_events.append(
                TaskEventFact(
                    event_type=r["event_type"],
                    retry_count=int(r["retry_count"]),
                    at=r["event_at"],
                    message=r["message"] or "",
                )
            )
    by_run: dict[str, list[TaskFacts]] = {}
    for task_id, r in first.items():
        by_run.setdefault(str(r["workflow_run_id"]), []).append(
            TaskFacts(
                id=task_id,
                run_id=str(r["workflow_run_id"]),
                step_id=str(r["step_id"]),
                readable_id=r["readable_id"],
                action_id=r["action_id"],
                created_at=r["created_at"],
                events=tuple(events[task_id]),
            )
        )
    return by_run


def _run_facts(row: Record, tasks: Sequence[TaskFacts]) -> RunFacts:
    return RunFacts(
        id=str(row["id"]),
        workflow_id=str(row["workflow_id"]),
        workflow_name=row["workflow_name"],
        workflow_version_id=str(row["workflow_version_id"]),
        status=row["status"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        traceparent=row["traceparent"],
        parent_task_id=_opt(row["parent_task_id"]),
        triggering_event_id=_opt(row["triggering_event_id"]),
        triggering_event_key=row["triggering_event_key"],
        event_seen_at=row["event_seen_at"],
        tasks=tuple(tasks),
    )
