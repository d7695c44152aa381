"""Assignment as a pure decision: queued items x worker capacity x policies -> assignments.

The scheduler service feeds this with the items it claimed and the free capacity of the
workers it holds streams for, then applies the result. Policies (sticky placement, labels,
concurrency, rate limits...) plug in here as filters and scores without touching I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class QueuedItem:
    queue_id: int
    task_id: str
    action_id: str
    priority: int
    slot_requests: Mapping[str, int]
    desired_worker_id: str | None = None


@dataclass(slots=True)
class WorkerCapacity:
    worker_id: str
    actions: frozenset[str]
    free: dict[str, int]
    # how many tasks this round already gave the worker: spreads work across workers
    given: int = field(default=0)

    def fits(self, requests: Mapping[str, int]) -> bool:
        return all(self.free.get(kind, 0) >= units for kind, units in requests.items())

    def take(self, requests: Mapping[str, int]) -> None:
        for kind, units in requests.items():
            self.free[kind] = self.free.get(kind, 0) - units
        self.given += 1


@dataclass(frozen=True, slots=True)
class Assignment:
    item: QueuedItem
    worker_id: str


def free_capacity(slot_config: Mapping[str, int], used: Mapping[str, int]) -> dict[str, int]:
    """Free units per slot kind; never negative even if more is held than configured."""
    return {kind: max(0, total - used.get(kind, 0)) for kind, total in slot_config.items()}


def assign(items: Sequence[QueuedItem], workers: Sequence[WorkerCapacity]) -> list[Assignment]:
    """Assign items in order (highest priority first, then FIFO) to workers with room.

    Among eligible workers the one given the fewest tasks this round wins, so a burst is
    spread over every worker instead of filling the first one. A sticky item goes to its
    desired worker when that worker is eligible, and otherwise falls back to any worker.
    """
    ordered = sorted(items, key=lambda i: (-i.priority, i.queue_id))
    result: list[Assignment] = []
    for item in ordered:
        eligible = [
            w for w in workers if item.action_id in w.actions and w.fits(item.slot_requests)
        ]
        if not eligible:
            continue
        chosen = None
        if item.desired_worker_id is not None:
            chosen = next((w for w in eligible if w.worker_id == item.desired_worker_id), None)
        if chosen is None:
            chosen = min(eligible, key=lambda w: w.given)
        chosen.take(item.slot_requests)
        result.append(Assignment(item=item, worker_id=chosen.worker_id))
    return result
