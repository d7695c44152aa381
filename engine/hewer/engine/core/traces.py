"""OpenTelemetry spans: the stored shape, the deterministic ids that tie a run's spans
together, and the W3C ``traceparent`` a run carries.

A run's spans come from two sides. The SDKs export theirs (``hatchet.run_workflow`` where a
run is triggered, ``hatchet.start_step_run`` around a task, user spans inside it) to the OTLP
``TraceService``; the engine adds its own (``hatchet.engine.*``: the run, each attempt's time
in the queue and on a worker, the event that triggered it), synthesized when read from what
the run tables already record (``core/engine_spans.py``), so tracing costs the hot path no
write. Both sides meet in one trace because the ids are derived the same way Hatchet derives
them: a run's trace id is its ``traceparent``'s (set by an instrumented SDK that triggered
it), else a hash of the run id, and the engine's span ids are hashes of run, task, attempt
and event ids. A run without a ``traceparent`` is handed one when its tasks are dispatched
(:func:`ensure_traceparent`), so the worker's spans join the engine's trace.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

# the span names Hatchet's engine gives its own spans (the SDK's tests look for them)
RUN_SPAN = "hatchet.engine.workflow_run"
QUEUED_SPAN = "hatchet.engine.queued"
ATTEMPT_SPAN = "hatchet.engine.start_step_run"
EVENT_SPAN = "hatchet.engine.event"
# the SDK's span around one task attempt; re-parented under the engine's attempt span
SDK_ATTEMPT_SPAN_PREFIX = "hatchet.start_step_run"

# span attributes the SDK sets on every span inside a task (its attribute processor copies
# them onto user spans too): the correlation with runs, tasks and attempts
ATTR_TASK_RUN_ID = "hatchet.step_run_id"
ATTR_WORKFLOW_RUN_ID = "hatchet.workflow_run_id"
ATTR_RETRY_COUNT = "hatchet.retry_count"

TRACEPARENT_KEY = "traceparent"
ENGINE_SERVICE = "hewer-engine"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# what the W3C propagator of the OpenTelemetry SDK accepts (its own pattern): a traceparent
# the SDK would ignore must not decide a run's trace, or the two sides would disagree
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*$"
)


class SpanKind(StrEnum):
    """OTLP's span kinds, in proto order (the REST model spells them the same way)."""

    UNSPECIFIED = "UNSPECIFIED"
    INTERNAL = "INTERNAL"
    SERVER = "SERVER"
    CLIENT = "CLIENT"
    PRODUCER = "PRODUCER"
    CONSUMER = "CONSUMER"


class SpanStatus(StrEnum):
    UNSET = "UNSET"
    OK = "OK"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """One span, from an SDK or from the engine. Ids are raw bytes (16 for a trace, 8 for a
    span); times are nanoseconds since the Unix epoch."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: SpanKind
    start_ns: int
    end_ns: int
    status: SpanStatus = SpanStatus.UNSET
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    scope_name: str = ""
    scope_version: str = ""
    # the run and task the span belongs to (from the hatchet.* attributes), if any
    task_run_id: str | None = None
    workflow_run_id: str | None = None
    retry_count: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def service_name(self) -> str:
        name = self.resource_attributes.get("service.name")
        return name if isinstance(name, str) else ""

    @property
    def started_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.start_ns // 1000)


def to_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (a float timestamp would lose the microseconds)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _derive(size: int, *parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()[:size]


def _uuid_bytes(value: str) -> bytes:
    return uuid.UUID(value).bytes


def run_trace_id(run_id: str) -> bytes:
    """The trace of a run that no instrumented SDK started: derived from the run id as
    Hatchet does, so both engines put an uninstrumented run's spans in the same trace."""
    return _derive(16, b"hatchet-engine-wf-trace:", _uuid_bytes(run_id))


def run_span_id(run_id: str) -> bytes:
    return _derive(8, b"hatchet-engine-wf-span:", _uuid_bytes(run_id))


def attempt_span_id(task_id: str, retry_count: int, kind: str, ordinal: int = 0) -> bytes:
    """The engine's span of one attempt of a task (``kind``: "queued" or "step_run").

    ``ordinal`` counts the times one attempt was handed to a worker (a lost worker or an
    evicted durable task is assigned again under the same retry count); the first keeps
    Hatchet's id, so an SDK span names its parent without asking the engine."""
    parts = [
        b"hatchet-engine-sr-span:",
        _uuid_bytes(task_id),
        retry_count.to_bytes(4, "big"),
        kind.encode(),
    ]
    if ordinal:
        parts.append(ordinal.to_bytes(4, "big"))
    return _derive(8, *parts)


def event_span_id(event_id: str, run_id: str) -> bytes:
    return _derive(8, b"hatchet-engine-evt-span:", _uuid_bytes(event_id), _uuid_bytes(run_id))


def parse_traceparent(value: Any) -> tuple[bytes, bytes] | None:
    """``(trace_id, span_id)`` of a W3C traceparent the OpenTelemetry SDK would accept."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_hex, span_hex, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = bytes.fromhex(trace_hex), bytes.fromhex(span_hex)
    if not any(trace_id) or not any(span_id):
        return None
    return trace_id, span_id


def format_traceparent(trace_id: bytes, span_id: bytes) -> str:
    return f"00-{trace_id.hex()}-{span_id.hex()}-01"


@dataclass(frozen=True, slots=True)
class RunTrace:
    """The trace a run belongs to, and the span outside the engine that started it (the
    producer span of the instrumented SDK that triggered it), if any."""

    trace_id: bytes
    remote_parent: bytes | None


def run_trace(*, run_id: str, traceparent: Any) -> RunTrace:
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return RunTrace(run_trace_id(run_id), None)
    trace_id, parent = parsed
    # a traceparent naming the run's own span (metadata copied from its action) is no parent
    return RunTrace(trace_id, None if parent == run_span_id(run_id) else parent)


def ensure_traceparent(metadata_json: str, *, run_id: str) -> str:
    """The metadata a task's action carries: the run's own, plus a traceparent naming the
    run's span when it has no valid one, so that an instrumented worker puts its spans in
    the run's trace. Runs started by an instrumented SDK already carry one (left as is)."""
    text = metadata_json.strip() if metadata_json else ""
    if text in ("", "{}"):
        derived = format_traceparent(run_trace_id(run_id), run_span_id(run_id))
        return json.dumps({TRACEPARENT_KEY: derived})
    try:
        metadata = json.loads(text)
    except ValueError:
        return metadata_json
    if not isinstance(metadata, dict) or parse_traceparent(metadata.get(TRACEPARENT_KEY)):
        return metadata_json
    trace = run_trace(run_id=run_id, traceparent=None)
    metadata[TRACEPARENT_KEY] = format_traceparent(trace.trace_id, run_span_id(run_id))
    return json.dumps(metadata)


def reparented(span: Span) -> Span:
    """An SDK's ``hatchet.start_step_run`` span hangs under the engine's span of the same
    attempt (the SDK parents it to the run's traceparent, i.e. the trigger); other SDK spans
    keep their own parents."""
    if (
        span.name.startswith(SDK_ATTEMPT_SPAN_PREFIX)
        and span.task_run_id is not None
        and span.parent_span_id is not None
    ):
        parent = attempt_span_id(span.task_run_id, span.retry_count, "step_run")
        return replace(span, parent_span_id=parent)
    return span
