"""Prometheus metrics: the global and tenant metrics of Hatchet's "Prometheus Metrics" page,
plus Hewer's queue depth gauge and trigger-to-start latency histogram.

Counters count what this replica did (scrape every replica, then sum). Gauges that describe
shared state (queue depth, worker slots) are refreshed from the database at scrape time.

A replica of ``hewer serve --processes N`` is N processes behind one port, and a scrape
reaches one of them: there the parent sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh
directory before it starts them, every process records into its own files in it (the
client picks that storage at import when the variable is set), and :meth:`render` sums
the files of all of them, those of a process that died and was restarted included, so
counters never go backwards. The shared-state gauges are not recorded at all but yielded
by a collector from the rows the scraping process has just read: summing them across
processes would count the same database N times.

Hatchet names four tenant counters without ``_total`` (``hatchet_tenant_assigned_tasks``,
``..._scheduling_timed_out``, ``..._rate_limited``, ``..._queued_to_assigned``,
``..._reassigned_tasks``); the Python client always appends ``_total`` to counters, so to
keep Hatchet's names these are exported as monotonically increasing gauges.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# the *_created samples double the output for no use here
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DURATION_MS_BUCKETS = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)
T = ("tenant_id",)
# set by the parent of several engine processes (see the module docstring)
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class SharedStateGauges(Collector):
    """Queue depth and worker slots as last read from the database by this process."""

    def __init__(self) -> None:
        self._depths: list[tuple[str, str, float]] = []
        self._slots: list[tuple[str, int, int]] = []

    def set_queue_depths(self, rows: Iterable[Any]) -> None:
        self._depths = [(str(r["tenant_id"]), r["action_id"], float(r["n"])) for r in rows]

    def set_worker_slots(self, rows: Iterable[Any]) -> None:
        self._slots = [(str(r["tenant_id"]), int(r["total"]), int(r["used"])) for r in rows]

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "hatchet_tenant_used_worker_slots", "Worker slots in use", labels=T
        )
        available = GaugeMetricFamily(
            "hatchet_tenant_available_worker_slots", "Free worker slots", labels=T
        )
        slots = GaugeMetricFamily(
            "hatchet_tenant_worker_slots", "Worker slots (free + used)", labels=T
        )
        for tenant, total, in_use in self._slots:
            used.add_metric([tenant], in_use)
            available.add_metric([tenant], max(0, total - in_use))
            slots.add_metric([tenant], total)
        depth = GaugeMetricFamily(
            "hewer_queue_depth",
            "Task attempts waiting in the queue",
            labels=("tenant_id", "action_id"),
        )
        for tenant, action, n in self._depths:
            depth.add_metric([tenant, action], n)
        yield from (used, available, slots, depth)


class EngineMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()

        def c(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        # global
        self.queue_invocations = c("hatchet_queue_invocations_total", "Queuer invocations")
        self.created = c("hatchet_created_tasks_total", "Tasks created")
        self.retried = c("hatchet_retried_tasks_total", "Tasks retried")
        self.succeeded = c("hatchet_succeeded_tasks_total", "Tasks that succeeded")
        self.failed = c("hatchet_failed_tasks_total", "Tasks that failed (final state)")
        self.skipped = c("hatchet_skipped_tasks_total", "Tasks skipped")
        self.cancelled = c("hatchet_cancelled_tasks_total", "Tasks cancelled")
        self.assigned = c("hatchet_assigned_tasks_total", "Tasks assigned to a worker")
        self.sched_timed_out = c(
            "hatchet_scheduling_timed_out_total", "Tasks that timed out waiting to be scheduled"
        )
        self.rate_limited = c("hatchet_rate_limited_total", "Tasks that were rate limited")
        self.queued_to_assigned = c(
            "hatchet_queued_to_assigned_total", "Tasks queued and later assigned to a worker"
        )
        self.queued_to_assigned_seconds = Histogram(
            "hatchet_queued_to_assigned_seconds",
            "Seconds spent in the queue before being assigned to a worker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reassigned = c("hatchet_reassigned_tasks_total", "Tasks reassigned to a worker")
        # tenant
        self.t_workflow_duration = Histogram(
            "hatchet_tenant_workflow_duration_milliseconds",
            "Duration of workflow execution in milliseconds (DAGs and single tasks)",
            ("tenant_id", "workflow_name", "status"),
            buckets=_DURATION_MS_BUCKETS,
            registry=r,
        )
        self.t_queue_invocations = c(
            "hatchet_tenant_queue_invocations_total", "Queuer invocations", T
        )
        self.t_created = c("hatchet_tenant_created_tasks_total", "Tasks created", T)
        self.t_retried = c("hatchet_tenant_retried_tasks_total", "Tasks retried", T)
        self.t_succeeded = c("hatchet_tenant_succeeded_tasks_total", "Tasks that succeeded", T)
        self.t_failed = c("hatchet_tenant_failed_tasks_total", "Tasks that failed (final)", T)
        self.t_skipped = c("hatchet_tenant_skipped_tasks_total", "Tasks skipped", T)
        self.t_cancelled = c("hatchet_tenant_cancelled_tasks_total", "Tasks cancelled", T)

        def g(name: str, doc: str, labels: Sequence[str] = T) -> Gauge:
            # counters in all but name: across processes their sum is the total
            return Gauge(name, doc, labels, registry=r, multiprocess_mode="sum")

        self.t_assigned = g("hatchet_tenant_assigned_tasks", "Tasks assigned (counter)")
        self.t_sched_timed_out = g(
            "hatchet_tenant_scheduling_timed_out", "Tasks that timed out waiting (counter)"
        )
        self.t_rate_limited = g("hatchet_tenant_rate_limited", "Tasks rate limited (counter)")
        self.t_queued_to_assigned = g(
            "hatchet_tenant_queued_to_assigned", "Tasks queued then assigned (counter)"
        )
        self.t_queued_to_assigned_seconds = Histogram(
            "hatchet_tenant_queued_to_assigned_time_seconds",
            "Seconds spent in the queue before being assigned to a worker",
            T,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.t_reassigned = g("hatchet_tenant_reassigned_tasks", "Tasks reassigned (counter)")
        self.shared_state = SharedStateGauges()
        r.register(self.shared_state)
        # Hewer
        self.trigger_to_start = Histogram(
            "hewer_trigger_to_start_seconds",
            "Seconds from a run's trigger to the dispatch of its first task attempt",
            T,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.partition_changes_deferred = c(
            "hewer_partition_changes_deferred_total",
            "Day-partition creations or drops left to a later pass because other transactions"
            " held the tables (a creation that keeps being deferred until its day arrives"
            " leaves that day's rows in the DEFAULT partition)",
            ("change",),
        )
        # event kind -> (engine-wide counter, per-tenant counter)
        self._by_kind: dict[str, tuple[Counter, Counter | Gauge]] = {
            "QUEUED": (self.created, self.t_created),
            "COMPLETED": (self.succeeded, self.t_succeeded),
            "FAILED": (self.failed, self.t_failed),
            "RETRYING": (self.retried, self.t_retried),
            "SKIPPED": (self.skipped, self.t_skipped),
            "REASSIGNED": (self.reassigned, self.t_reassigned),
            "CANCELLED": (self.cancelled, self.t_cancelled),
        }

    # -- recording --------------------------------------------------------------------------

    def task_events(self, tenant_id: str, events: Iterable[Any]) -> None:
        """Count task state changes from the monitoring events being written.

        Counted per batch, one ``inc`` per kind: a labelled child looked up per event was a
        measurable share of the engine's CPU under load."""
        kinds: collections.Counter[str] = collections.Counter()
        timed_out = 0
        for e in events:
            kinds[e.event_type] += 1
            if e.event_type == "CANCELLED" and "SCHEDULING_TIMED_OUT" in (e.message or ""):
                timed_out += 1
        for kind, count in kinds.items():
            pair = self._by_kind.get(kind)
            if pair is not None:
                pair[0].inc(count)
                pair[1].labels(tenant_id).inc(count)
        if timed_out:
            self.sched_timed_out.inc(timed_out)
            self.t_sched_timed_out.labels(tenant_id).inc(timed_out)

    def queue_round(self, tenant_id: str) -> None:
        self.queue_invocations.inc()
        self.t_queue_invocations.labels(tenant_id).inc()

    def assigned_rows(self, tenant_id: str, rows: Sequence[Any]) -> None:
        if not rows:
            return
        now = datetime.now(UTC)
        self.assigned.inc(len(rows))
        self.t_assigned.labels(tenant_id).inc(len(rows))
        waits = self.t_queued_to_assigned_seconds.labels(tenant_id)
        starts = self.trigger_to_start.labels(tenant_id)
        queued = 0
        for row in rows:
            queued_at = _get(row, "queued_at")
            if queued_at is not None:
                waited = max(0.0, (now - queued_at).total_seconds())
                queued += 1
                self.queued_to_assigned_seconds.observe(waited)
                waits.observe(waited)
            created = _get(row, "run_created_at")
            if created is not None and _get(row, "retry_count") == 0:
                starts.observe(max(0.0, (now - created).total_seconds()))
        if queued:
            self.queued_to_assigned.inc(queued)
            self.t_queued_to_assigned.labels(tenant_id).inc(queued)

    def run_finished(
        self, tenant_id: str, workflow_name: str, status: str, duration_ms: float
    ) -> None:
        self.t_workflow_duration.labels(tenant_id, workflow_name, status).observe(duration_ms)

    # -- scrape-time state --------------------------------------------------------------------

    def set_queue_depths(self, rows: Iterable[Any]) -> None:
        self.shared_state.set_queue_depths(rows)

    def set_worker_slots(self, rows: Iterable[Any]) -> None:
        self.shared_state.set_worker_slots(rows)

    def render(self) -> bytes:
        multiproc_dir = os.environ.get(MULTIPROC_DIR_VARIABLE)
        if not multiproc_dir:
            return generate_latest(self.registry)
        # every process's recorded metrics, read from their files at each scrape
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=multiproc_dir)  # type: ignore[no-untyped-call]
        merged.register(self.shared_state)
        return generate_latest(merged)

    def render_tenant(self, tenant_id: str) -> bytes:
        """Only the samples labelled with this tenant (the tenant REST endpoint)."""
        lines = []
        for line in self.render().decode().splitlines():
            if line.startswith("#") or f'tenant_id="{tenant_id}"' in line:
                lines.append(line)
        return ("\n".join(lines) + "\n").encode()


def _get(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (KeyError, IndexError):
        return None


# One per process: the repository and the scheduler record into it, /metrics renders it.
METRICS = EngineMetrics()
