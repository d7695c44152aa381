"""The engine's own spans of a run, synthesized from what the run tables record.

Hatchet writes its engine spans as things happen; here they are derived when a trace is read,
from the run row, its tasks and their task events, so tracing adds no write to triggering,
assigning or finishing a task, and a run's spans go away with the run. The ids are the
deterministic ones of ``core/traces.py``, so the spans an SDK exported name these as parents.

Per run: ``hatchet.engine.workflow_run`` from creation to finish (still open: up to now),
under the span of the parent task's attempt for a child run, under the event span for an
event-triggered run, else under the SDK span that triggered it. An event-triggered run also
gets ``hatchet.engine.event``. Per attempt of each task: ``hatchet.engine.queued`` from
entering the queue to being assigned, and ``hatchet.engine.start_step_run`` from being sent to
a worker to its outcome (the worker's start report is its span event ``started``): the SDK's
span of the attempt starts after the one and ends before the other, so it nests inside.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hewer.engine.core.traces import (
    ATTEMPT_SPAN,
    ENGINE_SERVICE,
    EVENT_SPAN,
    QUEUED_SPAN,
    RUN_SPAN,
    Span,
    SpanKind,
    SpanStatus,
    attempt_span_id,
    event_span_id,
    run_span_id,
    run_trace,
    to_ns,
)

# task events after which an attempt waits in the queue (first queueing, a retry after its
# back-off, a lost worker's attempt handed out again, an evicted durable task restored)
_ENTERS_QUEUE = frozenset({"QUEUED", "RETRYING", "REASSIGNED", "DURABLE_RESTORING"})
_OUTCOMES = {
    "COMPLETED": SpanStatus.OK,
    "FAILED": SpanStatus.ERROR,
    "CANCELLED": SpanStatus.ERROR,
    "TIMED_OUT": SpanStatus.ERROR,
}
_RUN_STATUS = {
    "COMPLETED": (SpanStatus.OK, ""),
    "FAILED": (SpanStatus.ERROR, "run failed"),
    "CANCELLED": (SpanStatus.ERROR, "run cancelled"),
}
MAX_STATUS_MESSAGE = 4096  # an error's text with its traceback can be long: its head is enough
_RESOURCE = {"service.name": ENGINE_SERVICE}
_SCOPE = "hewer-engine"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEventFact:
    event_type: str
    retry_count: int
    at: datetime
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFacts:
    id: str
    run_id: str
    step_id: str
    readable_id: str
    action_id: str
    created_at: datetime
    events: Sequence[TaskEventFact] = ()  # in the order they were written


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFacts:
    id: str
    workflow_id: str
    workflow_name: str
    workflow_version_id: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    traceparent: str | None = None
    parent_task_id: str | None = None
    triggering_event_id: str | None = None
    triggering_event_key: str | None = None
    event_seen_at: datetime | None = None
    tasks: Sequence[TaskFacts] = field(default_factory=tuple)


def engine_spans(
    run: RunFacts, *, now: datetime, parent_task: TaskFacts | None = None
) -> list[Span]:
    """The engine's spans of ``run`` as of ``now`` (open spans end there, status UNSET,
    marked ``hatchet.in_progress``). ``parent_task``: the task that spawned a child run, to
    hang the run under the attempt that was running when it was spawned."""
    trace = run_trace(run_id=run.id, traceparent=run.traceparent)
    now_ns = to_ns(now)
    own_span = run_span_id(run.id)
    spans: list[Span] = []
    parent: bytes | None = trace.remote_parent
    if run.parent_task_id is not None:
        retry, ordinal = (0, 0) if parent_task is None else attempt_at(parent_task, run.created_at)
        parent = attempt_span_id(run.parent_task_id, retry, "step_run", ordinal)
    elif run.triggering_event_id is not None:
        parent = event_span_id(run.triggering_event_id, run.id)
        seen = to_ns(run.event_seen_at or run.created_at)
        spans.append(
            _span(
                trace.trace_id,
                parent,
                trace.remote_parent,
                EVENT_SPAN,
                seen,
                seen,
                {
                    "hatchet.span_source": "engine",
                    "hatchet.event_key": run.triggering_event_key or "",
                    "hatchet.event_id": run.triggering_event_id,
                },
                SpanStatus.OK,
                workflow_run_id=run.id,
            )
        )
    status, message = _RUN_STATUS.get(run.status, (SpanStatus.UNSET, ""))
    end = to_ns(run.finished_at) if run.finished_at is not None else now_ns
    attributes = {
        "hatchet.span_source": "engine",
        "hatchet.workflow_run_id": run.id,
        "hatchet.workflow_id": run.workflow_id,
        "hatchet.workflow_name": run.workflow_name,
    }
    if run.finished_at is None:
        attributes["hatchet.in_progress"] = "true"
    spans.append(
        _span(
            trace.trace_id,
            own_span,
            parent,
            RUN_SPAN,
            to_ns(run.created_at),
            max(end, to_ns(run.created_at)),
            attributes,
            status,
            message,
            workflow_run_id=run.id,
        )
    )
    for task in run.tasks:
        spans.extend(_TaskSpans(run, task, trace.trace_id, own_span).build(now_ns))
    return spans


def attempt_at(task: TaskFacts, moment: datetime) -> tuple[int, int]:
    """(retry count, ordinal) of the last assignment of ``task`` at or before ``moment``."""
    found = (0, 0)
    ordinals: Counter[int] = Counter()
    for event in task.events:
        if event.event_type != "ASSIGNED":
            continue
        ordinal = ordinals[event.retry_count]
        ordinals[event.retry_count] += 1
        if event.at <= moment:
            found = (event.retry_count, ordinal)
    return found


@dataclass(slots=True)
class _Attempt:
    retry_count: int
    ordinal: int
    assigned_ns: int
    started_ns: int | None = None  # when the worker's start report arrived


@dataclass(frozen=True, slots=True)
class _TaskSpans:
    """Builds the spans of one task's attempts, walking its events in order."""

    run: RunFacts
    task: TaskFacts
    trace_id: bytes
    run_span: bytes

    def build(self, now_ns: int) -> list[Span]:
        spans: list[Span] = []
        queued_since: int | None = None
        running: _Attempt | None = None
        ordinals: Counter[int] = Counter()
        for event in self.task.events:
            at = to_ns(event.at)
            kind = event.event_type
            if kind in _ENTERS_QUEUE:
                if running is not None:  # the attempt was lost (worker gone)
                    spans.append(self.attempt(running, at, SpanStatus.ERROR, event.message))
                    running = None
                queued_since = at
            elif kind == "ASSIGNED":
                ordinal = ordinals[event.retry_count]
                ordinals[event.retry_count] += 1
                since = queued_since if queued_since is not None else to_ns(self.task.created_at)
                spans.append(self.queued(event.retry_count, ordinal, since, at, SpanStatus.OK))
                queued_since = None
                running = _Attempt(event.retry_count, ordinal, at)
            elif kind == "STARTED" and running is not None and running.started_ns is None:
                running.started_ns = at
            elif kind == "DURABLE_EVICTED" and running is not None:
                evicted = {"hatchet.evicted": "true"}
                spans.append(self.attempt(running, at, SpanStatus.UNSET, "", evicted))
                running = None
            elif kind in _OUTCOMES:
                status = _OUTCOMES[kind]
                message = "" if status is SpanStatus.OK else event.message or f"task {kind}"
                if running is not None:
                    spans.append(self.attempt(running, at, status, message))
                elif queued_since is not None:  # it ended before a worker got it
                    ordinal = ordinals[event.retry_count]
                    spans.append(
                        self.queued(event.retry_count, ordinal, queued_since, at, status, message)
                    )
                running, queued_since = None, None
        open_ = {"hatchet.in_progress": "true"}
        if running is not None:
            spans.append(self.attempt(running, now_ns, SpanStatus.UNSET, "", open_))
        elif queued_since is not None:
            retry = self.task.events[-1].retry_count if self.task.events else 0
            spans.append(
                self.queued(
                    retry, ordinals[retry], queued_since, now_ns, SpanStatus.UNSET, "", open_
                )
            )
        return spans

    def attempt(
        self,
        attempt: _Attempt,
        end: int,
        status: SpanStatus,
        message: str,
        extra: Mapping[str, str] | None = None,
    ) -> Span:
        retry, ordinal, start = attempt.retry_count, attempt.ordinal, attempt.assigned_ns
        span = self.span(ATTEMPT_SPAN, retry, ordinal, start, end, status, message, extra)
        if attempt.started_ns is not None:
            span.events.append({"name": "started", "time_unix_nano": attempt.started_ns})
        return span

    def queued(
        self,
        retry_count: int,
        ordinal: int,
        start: int,
        end: int,
        status: SpanStatus,
        message: str = "",
        extra: Mapping[str, str] | None = None,
    ) -> Span:
        return self.span(QUEUED_SPAN, retry_count, ordinal, start, end, status, message, extra)

    def span(
        self,
        name: str,
        retry_count: int,
        ordinal: int,
        start: int,
        end: int,
        status: SpanStatus,
        message: str,
        extra: Mapping[str, str] | None,
    ) -> Span:
        run, task = self.run, self.task
        kind = "queued" if name == QUEUED_SPAN else "step_run"
        attributes = {
            "hatchet.span_source": "engine",
            "hatchet.step_run_id": task.id,
            "hatchet.workflow_run_id": run.id,
            "hatchet.step_name": task.readable_id,
            "hatchet.task_name": task.readable_id,
            "hatchet.retry_count": str(retry_count),
            "hatchet.action_id": task.action_id,
            "hatchet.workflow_id": run.workflow_id,
            "hatchet.workflow_version_id": run.workflow_version_id,
            "hatchet.step_id": task.step_id,
            **(extra or {}),
        }
        return _span(
            self.trace_id,
            attempt_span_id(task.id, retry_count, kind, ordinal),
            self.run_span,
            name,
            start,
            max(end, start),
            attributes,
            status,
            message,
            task_run_id=task.id,
            workflow_run_id=run.id,
            retry_count=retry_count,
        )


def _span(
    trace_id: bytes,
    span_id: bytes,
    parent: bytes | None,
    name: str,
    start: int,
    end: int,
    attributes: dict[str, str],
    status: SpanStatus,
    message: str = "",
    *,
    task_run_id: str | None = None,
    workflow_run_id: str | None = None,
    retry_count: int = 0,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=SpanKind.INTERNAL,
        start_ns=start,
        end_ns=end,
        status=status,
        status_message=message[:MAX_STATUS_MESSAGE],
        attributes=dict(attributes),
        resource_attributes=dict(_RESOURCE),
        scope_name=_SCOPE,
        task_run_id=task_run_id,
        workflow_run_id=workflow_run_id,
        retry_count=retry_count,
    )
