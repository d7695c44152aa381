"""Assignment as a pure decision: queued items x worker capacity x policies -> assignments.

The scheduler service feeds this with the items it claimed and the free capacity of the
workers it holds streams for, then applies the result. Policies (sticky placement, labels,
concurrency, rate limits...) plug in here as filters and scores without touching I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hewer.engine.core.placement import DesiredLabel, rank


@dataclass(frozen=True, slots=True)
class QueuedItem:
    queue_id: int
    task_id: str
    action_id: str
    priority: int
    slot_requests: Mapping[str, int]
    desired_worker_id: str | None = None
    # the workflow's sticky strategy (SOFT, HARD or None) and the desired worker labels
    sticky: str | None = None
    labels: tuple[DesiredLabel, ...] = ()


@dataclass(slots=True)
class WorkerCapacity:
    worker_id: str
    actions: frozenset[str]
    free: dict[str, int]
    # how many tasks this round already gave the worker: spreads work across workers
    given: int = field(default=0)
    labels: Mapping[str, str | int] = field(default_factory=dict)

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

    Each item goes to the best-ranked worker with room (``core.placement.rank``: its desired
    worker first, then the label score; workers it may not use are left out). Among equally
    ranked workers the one given the fewest tasks this round wins, then the one with the
    most room, so a burst is spread over every worker instead of filling the first one.
    An item no worker may take now stays queued.
    """
    ordered = sorted(items, key=lambda i: (-i.priority, i.queue_id))
    result: list[Assignment] = []
    for item in ordered:
        best: tuple[tuple[int, int], int, int] | None = None
        chosen: WorkerCapacity | None = None
        for w in workers:
            if item.action_id not in w.actions or not w.fits(item.slot_requests):
                continue
            wanted = rank(
                worker_id=w.worker_id,
                worker_labels=w.labels,
                desired_worker_id=item.desired_worker_id,
                sticky=item.sticky,
                labels=item.labels,
            )
            if wanted is None:
                continue
            key = (wanted, -w.given, sum(w.free.values()))
            if best is None or key > best:
                best, chosen = key, w
        if chosen is None:
            continue
        chosen.take(item.slot_requests)
        result.append(Assignment(item=item, worker_id=chosen.worker_id))
    return result


def came_back_full(*, claimed: Sequence[str], limits: Mapping[str, int]) -> bool:
    """Whether a claim pass took as many items as it asked for of some action: then the queue
    may hold more of it, and the scheduler goes again instead of waiting for a wake-up."""
    got = Counter(claimed)
    return any(got[action] >= limit for action, limit in limits.items())


def further_limits(
    *,
    claimed: Sequence[str],
    placed: Sequence[str],
    limits: Mapping[str, int],
    capacities: Sequence[WorkerCapacity],
    most: int,
) -> dict[str, int]:
    """After a claim pass (the action of every claimed and every placed item): how many more
    items to claim per action.

    Only where a full page was claimed (there may be more), some of it stayed unplaced
    (placement held it back) and workers of that action still have room. Each pass looks
    further ahead (x8) than the last, so a long head of held-back items is passed in a few.
    """
    got = Counter(claimed)
    left = got - Counter(placed)
    more: dict[str, int] = {}
    for action, limit in limits.items():
        if got[action] < limit or not left[action]:
            continue
        room = sum(sum(c.free.values()) for c in capacities if action in c.actions)
        if room > 0:
            more[action] = min(most, max(room, limit) * 8)
    return more
