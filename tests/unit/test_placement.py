"""Placement: label scoring, comparators, sticky ranks, inherited workers, and assign()."""

from __future__ import annotations

from collections import Counter

import pytest

from hewer.engine.core.assignment import (
    QueuedItem,
    WorkerCapacity,
    assign,
    came_back_full,
    further_limits,
)
from hewer.engine.core.placement import (
    Comparator,
    DesiredLabel,
    InvalidLabel,
    inherited_worker,
    label_score,
    labels_from_json,
    labels_to_json,
    parse_desired_labels,
    rank,
)


def label(
    key: str,
    value: str | int,
    comparator: Comparator = Comparator.EQUAL,
    *,
    weight: int = 100,
    required: bool = False,
) -> DesiredLabel:
    return DesiredLabel(
        key=key, value=value, comparator=comparator, weight=weight, required=required
    )


# -- comparators: the worker's value against the desired value ----------------------------


@pytest.mark.parametrize(
    ("have", "comparator", "want", "met"),
    [
        ("gpu", Comparator.EQUAL, "gpu", True),
        ("cpu", Comparator.EQUAL, "gpu", False),
        (4, Comparator.EQUAL, 4, True),
        # types differ: an int label never equals the string of it
        (4, Comparator.EQUAL, "4", False),
        ("cpu", Comparator.NOT_EQUAL, "gpu", True),
        ("gpu", Comparator.NOT_EQUAL, "gpu", False),
        (4, Comparator.NOT_EQUAL, "5", False),
        (5, Comparator.GREATER_THAN, 4, True),
        (4, Comparator.GREATER_THAN, 4, False),
        (4, Comparator.GREATER_THAN_OR_EQUAL, 4, True),
        (3, Comparator.GREATER_THAN_OR_EQUAL, 4, False),
        (3, Comparator.LESS_THAN, 4, True),
        (4, Comparator.LESS_THAN, 4, False),
        (4, Comparator.LESS_THAN_OR_EQUAL, 4, True),
        (5, Comparator.LESS_THAN_OR_EQUAL, 4, False),
        # ordering comparators are for ints only: a string worker label never meets them
        ("9", Comparator.GREATER_THAN, 4, False),
    ],
)
def test_comparator_compares_worker_value_against_desired(
    have: str | int, comparator: Comparator, want: str | int, met: bool
) -> None:
    score = label_score([label("k", want, comparator)], {"k": have})
    assert score == (100 if met else 0)


def test_met_labels_add_their_weights_and_missing_keys_add_nothing() -> None:
    desired = [label("a", "x", weight=10), label("b", "y", weight=5), label("c", 1)]
    assert label_score(desired, {"a": "x", "b": "y"}) == 15
    assert label_score(desired, {"a": "x", "b": "other"}) == 10
    assert label_score(desired, {}) == 0


def test_an_unmet_required_label_excludes_the_worker() -> None:
    desired = [label("region", "eu", required=True), label("gpu", "yes")]
    assert label_score(desired, {"region": "us", "gpu": "yes"}) is None
    assert label_score(desired, {"gpu": "yes"}) is None
    assert label_score(desired, {"region": "eu"}) == 100  # a met required label counts too


# -- sticky ranks ------------------------------------------------------------------------


def test_hard_sticky_admits_only_the_desired_worker() -> None:
    common = {"worker_labels": {}, "sticky": "HARD", "labels": ()}
    assert rank(worker_id="w1", desired_worker_id="w1", **common) == (1, 0)  # type: ignore[arg-type]
    assert rank(worker_id="w2", desired_worker_id="w1", **common) is None  # type: ignore[arg-type]
    # no desired worker yet (a root task): anyone
    assert rank(worker_id="w2", desired_worker_id=None, **common) == (0, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("sticky", ["SOFT", None])
def test_soft_sticky_prefers_the_desired_worker_and_admits_others(sticky: str | None) -> None:
    assert rank(
        worker_id="w1", worker_labels={}, desired_worker_id="w1", sticky=sticky, labels=()
    ) == (1, 0)
    assert rank(
        worker_id="w2", worker_labels={}, desired_worker_id="w1", sticky=sticky, labels=()
    ) == (0, 0)


def test_required_labels_still_apply_to_sticky_tasks() -> None:
    labels = (label("region", "eu", required=True),)
    assert (
        rank(
            worker_id="w1",
            worker_labels={"region": "us"},
            desired_worker_id="w1",
            sticky="SOFT",
            labels=labels,
        )
        is None
    )


# -- inherited worker (DAG children of a sticky workflow) ---------------------------------


def test_child_inherits_the_worker_of_its_first_parent() -> None:
    parents = {"a": (), "b": (), "c": ("b", "a")}
    ran_on = {"a": "wa", "b": "wb"}
    assert inherited_worker(readable_id="c", parents=parents, ran_on=ran_on) == "wb"


def test_a_skipped_parent_passes_on_its_own_inheritance() -> None:
    parents = {"a": (), "b": ("a",), "c": ("b",)}
    ran_on: dict[str, str | None] = {"a": "wa", "b": None}
    assert inherited_worker(readable_id="c", parents=parents, ran_on=ran_on) == "wa"


def test_a_root_inherits_nothing() -> None:
    assert inherited_worker(readable_id="a", parents={"a": ()}, ran_on={}) is None


# -- parsing and storage ------------------------------------------------------------------


def test_parse_applies_defaults_and_reads_ints_and_enum_names() -> None:
    parsed = parse_desired_labels(
        {
            "model": {"str_value": "llama"},
            "memory": {"int_value": 512, "comparator": "GREATER_THAN_OR_EQUAL", "weight": 7},
            "zone": {"str_value": "a", "required": True, "comparator": 1},
        },
        where="task t",
    )
    assert parsed == (
        label("memory", 512, Comparator.GREATER_THAN_OR_EQUAL, weight=7),
        label("model", "llama"),
        label("zone", "a", Comparator.NOT_EQUAL, required=True),
    )
    assert labels_from_json(labels_to_json(parsed)) == parsed
    assert labels_to_json(()) is None
    assert labels_from_json(None) == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"k": {"str_value": "big", "comparator": "GREATER_THAN"}}, "compares integers"),
        ({"k": {"str_value": "x", "comparator": "ROUGHLY"}}, "unknown comparator"),
        ({"k": {"str_value": "x", "comparator": 17}}, "unknown comparator"),
        ({"k": {"required": True}}, "has no value"),
        ({"k": "x"}, "must be an object"),
    ],
)
def test_parse_rejects_bad_labels_with_the_reason(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidLabel, match=message) as caught:
        parse_desired_labels(raw, where="task t")
    assert "'k'" in str(caught.value)


# -- assign() with placement --------------------------------------------------------------


def item(queue_id: int, **kwargs: object) -> QueuedItem:
    return QueuedItem(
        queue_id=queue_id,
        task_id=f"t{queue_id}",
        action_id="wf:a",
        priority=1,
        slot_requests={"default": 1},
        **kwargs,  # type: ignore[arg-type]
    )


def worker(worker_id: str, free: int = 10, **labels: str | int) -> WorkerCapacity:
    return WorkerCapacity(
        worker_id=worker_id, actions=frozenset({"wf:a"}), free={"default": free}, labels=labels
    )


def test_heaviest_matching_worker_wins() -> None:
    labels = (label("model", "fancy", weight=10), label("memory", 256, Comparator.GREATER_THAN))
    workers = [worker("light", model="fancy"), worker("heavy", memory=512), worker("none")]
    decided = assign([item(1, labels=labels)], workers)
    assert [a.worker_id for a in decided] == ["heavy"]


def test_lower_rank_takes_the_item_when_the_best_is_full() -> None:
    labels = (label("model", "fancy"),)
    decided = assign([item(1, labels=labels)], [worker("best", 0, model="fancy"), worker("ok")])
    assert [a.worker_id for a in decided] == ["ok"]


def test_required_label_unmet_everywhere_leaves_the_item_queued() -> None:
    labels = (label("model", "fancy", required=True),)
    assert assign([item(1, labels=labels)], [worker("a", model="plain"), worker("b")]) == []


def test_hard_sticky_waits_for_its_full_worker_while_others_proceed() -> None:
    items = [item(1, desired_worker_id="w1", sticky="HARD"), item(2)]
    decided = assign(items, [worker("w1", 0), worker("w2")])
    assert [(a.item.queue_id, a.worker_id) for a in decided] == [(2, "w2")]


def test_soft_sticky_falls_back_when_its_worker_is_full() -> None:
    items = [item(1, desired_worker_id="w1", sticky="SOFT")]
    assert [a.worker_id for a in assign(items, [worker("w1", 0), worker("w2")])] == ["w2"]
    items = [item(1, desired_worker_id="w1", sticky="SOFT")]
    assert [a.worker_id for a in assign(items, [worker("w2"), worker("w1")])] == ["w1"]


def test_equal_ranks_spread_load() -> None:
    labels = (label("pool", "x"),)
    items = [item(i, labels=labels) for i in range(9)]
    workers = [worker("a", pool="x"), worker("b", pool="x"), worker("c", pool="x"), worker("d")]
    counts = Counter(a.worker_id for a in assign(items, workers))
    assert counts == {"a": 3, "b": 3, "c": 3}


def test_equal_ranks_prefer_the_worker_with_more_room() -> None:
    decided = assign([item(1)], [worker("busy", 2), worker("idle", 9)])
    assert [a.worker_id for a in decided] == ["idle"]


# -- further claim passes -----------------------------------------------------------------


def test_claim_again_only_past_held_back_items_while_there_is_room() -> None:
    workers = [worker("w", 2)]
    # a full page, one placed, one held back, room left: look 8x further
    more = further_limits(
        claimed=["wf:a", "wf:a"], placed=["wf:a"], limits={"wf:a": 2}, capacities=workers, most=500
    )
    assert more == {"wf:a": 16}
    assert further_limits(
        claimed=["wf:a"] * 100, placed=[], limits={"wf:a": 100}, capacities=workers, most=500
    ) == {"wf:a": 500}
    # the queue ran dry (less than a page), or everything was placed: done
    assert not further_limits(
        claimed=["wf:a"], placed=[], limits={"wf:a": 2}, capacities=workers, most=500
    )
    assert not further_limits(
        claimed=["wf:a"] * 2, placed=["wf:a"] * 2, limits={"wf:a": 2}, capacities=workers, most=500
    )
    # no room left: what stayed unplaced waits for capacity, not for placement
    assert not further_limits(
        claimed=["wf:a"] * 2,
        placed=[],
        limits={"wf:a": 2},
        capacities=[worker("w", 0)],
        most=500,
    )


def test_a_claim_came_back_full_when_some_action_got_all_it_asked_for() -> None:
    limits = {"wf:a": 2, "wf:b": 3}
    assert came_back_full(claimed=["wf:a", "wf:b", "wf:a"], limits=limits)
    assert came_back_full(claimed=["wf:b"] * 3, limits=limits)
    # less than asked of every action: the queue is drained for now
    assert not came_back_full(claimed=["wf:a", "wf:b", "wf:b"], limits=limits)
    assert not came_back_full(claimed=[], limits=limits)
