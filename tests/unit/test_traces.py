"""Trace ids, traceparents and the engine's spans of a run (core.traces, core.engine_spans)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hewer.engine.core.engine_spans import (
    RunFacts,
    TaskEventFact,
    TaskFacts,
    attempt_at,
    engine_spans,
)
from hewer.engine.core.traces import (
    RunTrace,
    Span,
    SpanKind,
    SpanStatus,
    attempt_span_id,
    ensure_traceparent,
    event_span_id,
    format_traceparent,
    parse_traceparent,
    reparented,
    run_span_id,
    run_trace,
    run_trace_id,
    to_ns,
)

RUN = "0b0e6b8e-3f5c-4c55-8d0e-6e9e2a7c1f10"
TASK = "5a1f2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d"
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
SDK_TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SDK_SPAN = bytes.fromhex("00f067aa0ba902b7")
TRACEPARENT = format_traceparent(SDK_TRACE, SDK_SPAN)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def ev(kind: str, ms: int, retry: int = 0, message: str = "") -> TaskEventFact:
    return TaskEventFact(event_type=kind, retry_count=retry, at=at(ms), message=message)


def task(*events: TaskEventFact, task_id: str = TASK) -> TaskFacts:
    return TaskFacts(
        id=task_id,
        run_id=RUN,
        step_id=str(uuid.uuid4()),
        readable_id="step",
        action_id="wf:step",
        created_at=T0,
        events=events,
    )


def run(*tasks: TaskFacts, **fields: object) -> RunFacts:
    base: dict[str, object] = {
        "id": RUN,
        "workflow_id": str(uuid.uuid4()),
        "workflow_name": "wf",
        "workflow_version_id": str(uuid.uuid4()),
        "status": "COMPLETED",
        "created_at": T0,
        "finished_at": at(100),
        "traceparent": TRACEPARENT,
        "tasks": tasks,
    }
    base.update(fields)
    return RunFacts(**base)  # type: ignore[arg-type]


def by_name(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


# -- ids and traceparents -------------------------------------------------------------------


def test_derived_ids_are_hatchets_hashes_of_the_run_id() -> None:
    raw = uuid.UUID(RUN).bytes
    assert run_trace_id(RUN) == hashlib.sha256(b"hatchet-engine-wf-trace:" + raw).digest()[:16]
    assert run_span_id(RUN) == hashlib.sha256(b"hatchet-engine-wf-span:" + raw).digest()[:8]
    step = hashlib.sha256(
        b"hatchet-engine-sr-span:" + uuid.UUID(TASK).bytes + (2).to_bytes(4, "big") + b"step_run"
    ).digest()[:8]
    assert attempt_span_id(TASK, 2, "step_run") == step
    # a second assignment of the same attempt gets its own id; kinds differ too
    assert attempt_span_id(TASK, 2, "step_run", 1) != step
    assert attempt_span_id(TASK, 2, "queued") != step
    assert event_span_id(TASK, RUN) != event_span_id(RUN, TASK)


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT,
        f"  {TRACEPARENT}\t",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
    ],
)
def test_traceparents_the_sdk_accepts(value: str) -> None:
    assert parse_traceparent(value) == (SDK_TRACE, SDK_SPAN)


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        "garbage",
        TRACEPARENT.upper(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        f"{TRACEPARENT}-extra",  # version 00 has exactly four parts
        "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
    ],
)
def test_traceparents_the_sdk_ignores(value: object) -> None:
    assert parse_traceparent(value) is None


def test_a_runs_trace_is_its_traceparents_or_derived_from_its_id() -> None:
    assert run_trace(run_id=RUN, traceparent=TRACEPARENT) == RunTrace(SDK_TRACE, SDK_SPAN)
    derived = run_trace(run_id=RUN, traceparent="not one")
    assert (derived.trace_id, derived.remote_parent) == (run_trace_id(RUN), None)
    # metadata copied from the run's own action names the run's span: not a parent
    own = format_traceparent(SDK_TRACE, run_span_id(RUN))
    assert run_trace(run_id=RUN, traceparent=own).remote_parent is None


def test_ensure_traceparent_adds_the_runs_own_when_missing_or_invalid() -> None:
    expected = format_traceparent(run_trace_id(RUN), run_span_id(RUN))
    assert json.loads(ensure_traceparent("{}", run_id=RUN)) == {"traceparent": expected}
    assert json.loads(ensure_traceparent("", run_id=RUN)) == {"traceparent": expected}
    bad = json.dumps({"k": "v", "traceparent": "nope"})
    assert json.loads(ensure_traceparent(bad, run_id=RUN)) == {"k": "v", "traceparent": expected}
    # a valid one (an instrumented SDK triggered the run) is passed on byte for byte
    kept = json.dumps({"traceparent": TRACEPARENT, "k": 1})
    assert ensure_traceparent(kept, run_id=RUN) is kept
    assert ensure_traceparent("[1, 2]", run_id=RUN) == "[1, 2]"
    assert ensure_traceparent("{not json", run_id=RUN) == "{not json"


def sdk_span(name: str, *, parent: bytes | None = SDK_SPAN, retry: int = 0) -> Span:
    return Span(
        trace_id=SDK_TRACE,
        span_id=bytes(range(1, 9)),
        parent_span_id=parent,
        name=name,
        kind=SpanKind.CONSUMER,
        start_ns=1,
        end_ns=2,
        task_run_id=TASK,
        workflow_run_id=RUN,
        retry_count=retry,
    )


def test_the_sdks_task_span_hangs_under_the_engines_attempt_span() -> None:
    moved = reparented(sdk_span("hatchet.start_step_run", retry=3))
    assert moved.parent_span_id == attempt_span_id(TASK, 3, "step_run")
    named = reparented(sdk_span("hatchet.start_step_run.wf:step"))
    assert named.parent_span_id == attempt_span_id(TASK, 0, "step_run")
    user = sdk_span("custom.child.span")
    assert reparented(user) is user
    root = sdk_span("hatchet.start_step_run", parent=None)  # no trace to join: left alone
    assert reparented(root) is root


def test_nanoseconds_keep_the_microseconds() -> None:
    assert to_ns(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005_000
    span = sdk_span("x")
    assert span.started_at == datetime(1970, 1, 1, tzinfo=UTC)


# -- engine spans -------------------------------------------------------------------------------


def test_a_finished_standalone_run() -> None:
    facts = run(task(ev("QUEUED", 1), ev("ASSIGNED", 5), ev("STARTED", 8), ev("COMPLETED", 40)))
    spans = engine_spans(facts, now=at(1000))
    names = by_name(spans)
    assert sorted(names) == [
        "hatchet.engine.queued",
        "hatchet.engine.start_step_run",
        "hatchet.engine.workflow_run",
    ]
    (root,) = names["hatchet.engine.workflow_run"]
    (queued,) = names["hatchet.engine.queued"]
    (attempt,) = names["hatchet.engine.start_step_run"]
    assert {s.trace_id for s in spans} == {SDK_TRACE}
    assert (root.span_id, root.parent_span_id) == (run_span_id(RUN), SDK_SPAN)
    assert (root.start_ns, root.end_ns, root.status) == (to_ns(T0), to_ns(at(100)), SpanStatus.OK)
    assert root.attributes["hatchet.workflow_name"] == "wf"
    assert queued.span_id == attempt_span_id(TASK, 0, "queued")
    assert attempt.span_id == attempt_span_id(TASK, 0, "step_run")
    assert queued.parent_span_id == attempt.parent_span_id == root.span_id
    assert (queued.start_ns, queued.end_ns) == (to_ns(at(1)), to_ns(at(5)))
    # from the hand-over to the worker to the outcome; the start report is an event
    assert (attempt.start_ns, attempt.end_ns, attempt.status) == (
        to_ns(at(5)),
        to_ns(at(40)),
        SpanStatus.OK,
    )
    assert attempt.events == [{"name": "started", "time_unix_nano": to_ns(at(8))}]
    assert attempt.attributes["hatchet.step_run_id"] == TASK
    assert attempt.attributes["hatchet.retry_count"] == "0"
    assert (attempt.task_run_id, attempt.workflow_run_id) == (TASK, RUN)
    assert all(s.kind is SpanKind.INTERNAL and s.service_name == "hewer-engine" for s in spans)


def test_a_retried_attempt_has_its_own_spans() -> None:
    facts = run(
        task(
            ev("QUEUED", 1),
            ev("ASSIGNED", 2),
            ev("FAILED", 10, message="boom"),
            ev("RETRYING", 10, retry=1),
            ev("ASSIGNED", 30, retry=1),
            ev("COMPLETED", 50, retry=1),
        )
    )
    attempts = by_name(engine_spans(facts, now=at(1000)))["hatchet.engine.start_step_run"]
    assert [(s.retry_count, s.status, s.status_message) for s in attempts] == [
        (0, SpanStatus.ERROR, "boom"),
        (1, SpanStatus.OK, ""),
    ]
    queued = by_name(engine_spans(facts, now=at(1000)))["hatchet.engine.queued"]
    assert [(s.start_ns, s.end_ns) for s in queued] == [
        (to_ns(at(1)), to_ns(at(2))),
        (to_ns(at(10)), to_ns(at(30))),  # the back-off is time in the queue
    ]
    assert len({s.span_id for s in [*attempts, *queued]}) == 4


def test_a_lost_attempt_handed_out_again_keeps_distinct_ids() -> None:
    facts = run(
        task(
            ev("QUEUED", 1),
            ev("ASSIGNED", 2),
            ev("REASSIGNED", 20, message="worker stopped sending heartbeats"),
            ev("ASSIGNED", 25),
            ev("COMPLETED", 30),
        )
    )
    attempts = by_name(engine_spans(facts, now=at(1000)))["hatchet.engine.start_step_run"]
    assert [s.status for s in attempts] == [SpanStatus.ERROR, SpanStatus.OK]
    assert attempts[0].status_message == "worker stopped sending heartbeats"
    assert attempts[0].span_id == attempt_span_id(TASK, 0, "step_run")
    assert attempts[1].span_id == attempt_span_id(TASK, 0, "step_run", 1)


def test_a_task_cancelled_in_the_queue_and_open_spans() -> None:
    cancelled = run(task(ev("QUEUED", 1), ev("CANCELLED", 9)), status="CANCELLED")
    spans = by_name(engine_spans(cancelled, now=at(1000)))
    assert "hatchet.engine.start_step_run" not in spans
    (queued,) = spans["hatchet.engine.queued"]
    assert (queued.end_ns, queued.status, queued.status_message) == (
        to_ns(at(9)),
        SpanStatus.ERROR,
        "task CANCELLED",
    )
    assert spans["hatchet.engine.workflow_run"][0].status is SpanStatus.ERROR

    running = run(task(ev("QUEUED", 1), ev("ASSIGNED", 2)), status="RUNNING", finished_at=None)
    spans = by_name(engine_spans(running, now=at(500)))
    for name in ("hatchet.engine.workflow_run", "hatchet.engine.start_step_run"):
        (span,) = spans[name]
        assert (span.end_ns, span.status) == (to_ns(at(500)), SpanStatus.UNSET)
        assert span.attributes["hatchet.in_progress"] == "true"
    waiting = run(task(ev("QUEUED", 1)), status="QUEUED", finished_at=None)
    (queued,) = by_name(engine_spans(waiting, now=at(500)))["hatchet.engine.queued"]
    assert (queued.end_ns, queued.attributes["hatchet.in_progress"]) == (to_ns(at(500)), "true")


def test_an_event_triggered_run_hangs_under_its_event() -> None:
    event_id = str(uuid.uuid4())
    facts = run(
        triggering_event_id=event_id,
        triggering_event_key="user:created",
        event_seen_at=at(-3),
    )
    spans = by_name(engine_spans(facts, now=at(1000)))
    (event,) = spans["hatchet.engine.event"]
    (root,) = spans["hatchet.engine.workflow_run"]
    assert event.span_id == event_span_id(event_id, RUN)
    assert event.parent_span_id == SDK_SPAN  # the SDK's push_event span
    assert root.parent_span_id == event.span_id
    assert event.attributes["hatchet.event_key"] == "user:created"
    assert event.start_ns == event.end_ns == to_ns(at(-3))


def test_a_child_run_hangs_under_the_parents_attempt_that_spawned_it() -> None:
    parent_task = task(
        ev("QUEUED", 0),
        ev("ASSIGNED", 1),
        ev("FAILED", 5),
        ev("RETRYING", 5, retry=1),
        ev("ASSIGNED", 8, retry=1),
        task_id=str(uuid.uuid4()),
    )
    assert attempt_at(parent_task, at(3)) == (0, 0)
    assert attempt_at(parent_task, at(9)) == (1, 0)
    child = run(
        id=str(uuid.uuid4()), parent_task_id=parent_task.id, created_at=at(9), traceparent=None
    )
    (root,) = by_name(engine_spans(child, now=at(1000), parent_task=parent_task))[
        "hatchet.engine.workflow_run"
    ]
    assert root.parent_span_id == attempt_span_id(parent_task.id, 1, "step_run")
    assert root.trace_id == run_trace_id(child.id)
