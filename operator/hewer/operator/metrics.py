"""The operator's Prometheus metrics (served on ``HEWER_OPERATOR_METRICS_PORT``).

Their own registry, so importing the operator into another process (tests, the engine)
adds nothing to that process's default registry.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["METRICS", "OperatorMetrics"]


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["namespace", "pool"]
        self.desired_replicas = Gauge(
            "hewer_operator_pool_desired_replicas",
            "Replicas the autoscaler wants for a WorkerPool.",
            labels,
            registry=self.registry,
        )
        self.queued = Gauge(
            "hewer_operator_pool_queued_tasks",
            "Runnable queued tasks of a WorkerPool's workflows, as last read from the engine.",
            labels,
            registry=self.registry,
        )
        self.running = Gauge(
            "hewer_operator_pool_running_tasks",
            "Running tasks of a WorkerPool's workflows, as last read from the engine.",
            labels,
            registry=self.registry,
        )
        self.decisions = Counter(
            "hewer_operator_scale_decisions",
            "Autoscaler decisions that changed (up, down) or held (hold) replicas, by reason.",
            ["namespace", "pool", "direction", "reason"],
            registry=self.registry,
        )
        self.drain_seconds = Histogram(
            "hewer_operator_drain_seconds",
            "How long draining the workers chosen for a scale-down took.",
            labels,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def forget(self, namespace: str, pool: str) -> None:
        for gauge in (self.desired_replicas, self.queued, self.running):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, pool)


METRICS = OperatorMetrics()
