"""Which Pods a scale-down removes, and how they are drained first.

KEDA leaves the choice to the HPA and the ReplicaSet, which cannot tell a busy worker from
an idle one. Here the operator knows every worker's load (the engine's pool stats), so a
scale-down:

1. chooses victims among the pool's live Pods: Pods whose worker has not registered (they
   run nothing) first, then Pods of idle workers; never a Pod of a busy worker;
2. pauses the victims' workers in the engine, so they get no new work;
3. waits until they run nothing (a task assigned in the instant before the pause
   finishes), at most ``drainTimeoutSeconds``; new work wanting the replicas cancels the
   drain and resumes the workers instead;
4. marks the victims with ``controller.kubernetes.io/pod-deletion-cost`` so the ReplicaSet
   removes exactly them (it removes not-ready Pods first, so it also waits until every
   other Pod is ready);
5. lowers the Deployment's replicas.

This module holds the pure parts (victim choice, readiness); ``pool_autoscaler`` runs
the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DELETION_COST", "VICTIM_COST", "PodView", "choose_victims", "pod_views"]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# the lowest cost the API server accepts is -2147483648; any value below the default 0 works
VICTIM_COST = "-1000"


@dataclass(frozen=True, slots=True)
class PodView:
    """A live Pod of the pool and the engine's view of its worker(s)."""

    name: str
    ready: bool
    worker_ids: tuple[str, ...]
    running: int
    paused: bool

    @property
    def registered(self) -> bool:
        return bool(self.worker_ids)


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    conditions = status.get("conditions") or []
    ready = [c for c in conditions if c.get("type") == "Ready"]
    return not ready or ready[0].get("status") == "True"


def pod_views(
    pods: Sequence[Mapping[str, Any]], workers: Sequence[Mapping[str, Any]]
) -> list[PodView]:
    """Live (not terminating) Pods joined with the engine's workers by the Pod label."""
    by_pod: dict[str, list[Mapping[str, Any]]] = {}
    for w in workers:
        if w.get("pod"):
            by_pod.setdefault(str(w["pod"]), []).append(w)
    views = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        name = str(meta.get("name"))
        mine = by_pod.get(name, [])
        views.append(
            PodView(
                name=name,
                ready=_ready(pod),
                worker_ids=tuple(str(w["id"]) for w in mine),
                running=sum(int(w.get("running") or 0) for w in mine),
                paused=any(bool(w.get("paused")) for w in mine),
            )
        )
    return views


def choose_victims(
    views: Sequence[PodView], count: int, *, unaccounted_running: int = 0
) -> list[PodView]:
    """Up to ``count`` Pods that run nothing: unregistered ones first, then idle workers
    (already paused ones first: a drain left half-done), name order as tie-break.

    ``unaccounted_running``: running tasks of the pool that no registered worker of it
    holds. Then a ready Pod without a registered worker may be running them (an image whose
    SDK ignores the preset labels), so only not-ready ones count as idle."""
    idle = [
        v
        for v in views
        if v.running == 0 and (v.registered or not v.ready or unaccounted_running == 0)
    ]
    idle.sort(key=lambda v: (v.registered, not v.paused, v.name))
    return idle[: max(0, count)]
