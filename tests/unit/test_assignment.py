"""Pure assignment: priority then FIFO, capacity per slot kind, spreading, sticky placement."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pytest

from hewer.engine.core.assignment import (
    Assignment,
    QueuedItem,
    WorkerCapacity,
    assign,
    free_capacity,
)


def item(
    queue_id: int,
    *,
    action: str = "wf:a",
    priority: int = 1,
    slots: Mapping[str, int] | None = None,
    desired: str | None = None,
) -> QueuedItem:
    return QueuedItem(
        queue_id=queue_id,
        task_id=f"task-{queue_id}",
        action_id=action,
        priority=priority,
        slot_requests=slots if slots is not None else {"default": 1},
        desired_worker_id=desired,
    )


def worker(worker_id: str, free: dict[str, int] | None = None, *actions: str) -> WorkerCapacity:
    return WorkerCapacity(
        worker_id=worker_id,
        actions=frozenset(actions or ("wf:a",)),
        free=dict(free) if free is not None else {"default": 10},
    )


def placement(assignments: list[Assignment]) -> list[tuple[int, str]]:
    return [(a.item.queue_id, a.worker_id) for a in assignments]


# -- free_capacity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "used", "expected"),
    [
        ({"default": 5}, {}, {"default": 5}),
        ({"default": 5}, {"default": 2}, {"default": 3}),
        ({"default": 5}, {"default": 5}, {"default": 0}),
        # more held than configured (config shrank on reconnect): clamp at zero
        ({"default": 2}, {"default": 7}, {"default": 0}),
        ({"default": 3, "durable": 2}, {"durable": 1}, {"default": 3, "durable": 1}),
        # a held kind the worker no longer declares gives it no capacity
        ({"default": 3}, {"gpu": 4}, {"default": 3}),
        ({}, {"default": 1}, {}),
    ],
)
def test_free_capacity(
    config: dict[str, int], used: dict[str, int], expected: dict[str, int]
) -> None:
    assert free_capacity(config, used) == expected


# -- ordering --------------------------------------------------------------------------------


def test_highest_priority_first_then_fifo() -> None:
    items = [
        item(1, priority=1),
        item(2, priority=3),
        item(3, priority=2),
        item(4, priority=3),
        item(5, priority=1),
    ]
    result = assign(items, [worker("w", {"default": 3})])
    assert [a.item.queue_id for a in result] == [2, 4, 3]


def test_fifo_by_queue_id_not_by_input_order() -> None:
    result = assign([item(9), item(3), item(5)], [worker("w", {"default": 2})])
    assert [a.item.queue_id for a in result] == [3, 5]


def test_nothing_to_assign_without_workers_or_items() -> None:
    assert assign([item(1)], []) == []
    assert assign([], [worker("w")]) == []


# -- capacity --------------------------------------------------------------------------------


def test_never_more_than_the_free_slots() -> None:
    w = worker("w", {"default": 2})
    result = assign([item(i) for i in range(1, 6)], [w])
    assert len(result) == 2
    assert w.free == {"default": 0}
    assert w.given == 2


def test_requests_are_matched_per_slot_kind() -> None:
    durable = item(1, slots={"durable": 1})
    plain = item(2)
    workers = [worker("plain", {"default": 5}), worker("durable", {"durable": 1})]
    assert sorted(placement(assign([durable, plain], workers))) == [
        (1, "durable"),
        (2, "plain"),
    ]


def test_multi_unit_request_needs_every_unit() -> None:
    big = item(1, slots={"default": 3})
    assert assign([big], [worker("w", {"default": 2})]) == []
    assert placement(assign([big], [worker("w", {"default": 3})])) == [(1, "w")]


def test_request_spanning_kinds_needs_every_kind() -> None:
    mixed = item(1, slots={"default": 1, "gpu": 1})
    assert assign([mixed], [worker("w", {"default": 4})]) == []
    w = worker("w", {"default": 4, "gpu": 1})
    assert placement(assign([mixed], [w])) == [(1, "w")]
    assert w.free == {"default": 3, "gpu": 0}


def test_an_item_that_does_not_fit_does_not_block_smaller_ones_behind_it() -> None:
    items = [item(1, priority=3, slots={"default": 5}), item(2, priority=1)]
    assert placement(assign(items, [worker("w", {"default": 2})])) == [(2, "w")]


def test_only_workers_registered_for_the_action_get_it() -> None:
    workers = [worker("a-only", None, "wf:a"), worker("b-only", None, "wf:b")]
    result = assign([item(1, action="wf:b"), item(2, action="wf:c")], workers)
    assert placement(result) == [(1, "b-only")]


# -- spreading ---------------------------------------------------------------------------------


def test_a_burst_is_spread_over_every_worker() -> None:
    workers = [worker(f"w{i}", {"default": 100}) for i in range(3)]
    result = assign([item(i) for i in range(1, 10)], workers)
    assert Counter(a.worker_id for a in result) == {"w0": 3, "w1": 3, "w2": 3}


def test_full_workers_are_skipped_while_spreading() -> None:
    workers = [worker("small", {"default": 1}), worker("large", {"default": 10})]
    result = assign([item(i) for i in range(1, 6)], workers)
    assert Counter(a.worker_id for a in result) == {"small": 1, "large": 4}


# -- sticky placement ---------------------------------------------------------------------


def test_desired_worker_wins_even_when_it_already_got_more() -> None:
    workers = [worker("w1"), worker("w2")]
    items = [item(i, desired="w2") for i in range(1, 4)]
    assert placement(assign(items, workers)) == [(1, "w2"), (2, "w2"), (3, "w2")]


@pytest.mark.parametrize(
    "desired_worker",
    [
        worker("w2", {"default": 0}),  # full
        worker("w2", None, "wf:other"),  # does not run the action
    ],
    ids=["full", "wrong-action"],
)
def test_desired_worker_falls_back_to_any_eligible_worker(desired_worker: WorkerCapacity) -> None:
    result = assign([item(1, desired="w2")], [worker("w1"), desired_worker])
    assert placement(result) == [(1, "w1")]


def test_unknown_desired_worker_falls_back() -> None:
    assert placement(assign([item(1, desired="gone")], [worker("w1")])) == [(1, "w1")]


def test_fits_and_take() -> None:
    w = worker("w", {"default": 2, "durable": 1})
    assert w.fits({"default": 2})
    assert w.fits({"default": 1, "durable": 1})
    assert not w.fits({"default": 3})
    assert not w.fits({"gpu": 1})
    w.take({"default": 2})
    assert not w.fits({"default": 1})
    assert w.fits({"durable": 1})
    assert w.given == 1
