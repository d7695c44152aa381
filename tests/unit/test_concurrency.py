"""Concurrency strategies as pure decisions, and their validation at registration."""

from __future__ import annotations

from typing import Any

import pytest

from hewer.engine.core.concurrency import (
    ConcurrencySpec,
    Group,
    InvalidConcurrency,
    KeyEvaluationError,
    Slot,
    Strategy,
    decide,
    evaluate_key,
    key_variables,
    parse_specs,
)
from hewer.engine.core.definition import InvalidDefinition, parse_workflow, stored_policies


def waiting(*ids: int, priority: int = 1) -> list[Slot]:
    return [Slot(id=i, priority=priority, admitted=False) for i in ids]


def running(*ids: int, priority: int = 1) -> list[Slot]:
    return [Slot(id=i, priority=priority, admitted=True) for i in ids]


def test_round_robin_gives_every_key_its_own_quota() -> None:
    # keys A x 10 and B x 1 at max_runs=1: B is admitted beside the first A, not after it
    a = Group(Strategy.GROUP_ROUND_ROBIN, 1, waiting(*range(1, 11)))
    b = Group(Strategy.GROUP_ROUND_ROBIN, 1, waiting(11))
    decision = decide([a, b])
    assert sorted(decision.admit) == [1, 11]
    assert decision.cancel == []


def test_round_robin_fills_only_free_slots_by_priority_then_arrival() -> None:
    group = Group(
        Strategy.GROUP_ROUND_ROBIN,
        3,
        [*running(1), *waiting(2, 3), *waiting(4, priority=3), *waiting(5, priority=4)],
    )
    assert decide([group]).admit == [5, 4]


def test_a_full_key_admits_nothing_and_cancels_nothing() -> None:
    group = Group(Strategy.GROUP_ROUND_ROBIN, 2, [*running(1, 2), *waiting(3, 4)])
    decision = decide([group])
    assert decision.admit == [] and decision.cancel == []


def test_cancel_in_progress_keeps_the_newest_and_cancels_running_ones() -> None:
    group = Group(Strategy.CANCEL_IN_PROGRESS, 1, [*running(1), *waiting(2, 3)])
    decision = decide([group])
    assert decision.admit == [3]
    assert decision.cancel == [1, 2]


def test_cancel_in_progress_with_room_cancels_nothing() -> None:
    group = Group(Strategy.CANCEL_IN_PROGRESS, 3, [*running(1), *waiting(2)])
    decision = decide([group])
    assert decision.admit == [2] and decision.cancel == []


def test_cancel_newest_keeps_the_oldest_and_cancels_arrivals_that_do_not_fit() -> None:
    group = Group(Strategy.CANCEL_NEWEST, 2, [*running(1), *waiting(2, 3, 4)])
    decision = decide([group])
    assert decision.admit == [2]
    assert decision.cancel == [3, 4]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ()),
        (
            {"expression": "input.user", "max_runs": 2, "limit_strategy": "GROUP_ROUND_ROBIN"},
            (ConcurrencySpec("input.user", 2, Strategy.GROUP_ROUND_ROBIN),),
        ),
        # proto defaults: max_runs 1, strategy CANCEL_IN_PROGRESS (Hatchet's default)
        ({"expression": "'x'"}, (ConcurrencySpec("'x'", 1, Strategy.CANCEL_IN_PROGRESS),)),
        (
            [{"expression": "'a'", "limit_strategy": "DROP_NEWEST"}],
            (ConcurrencySpec("'a'", 1, Strategy.CANCEL_NEWEST),),
        ),
    ],
)
def test_specs_are_parsed_with_hatchets_defaults(raw: Any, expected: Any) -> None:
    assert parse_specs(raw, where="w") == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"expression": "input.(("}, "invalid CEL expression"),
        ({"expression": ""}, "expression is required"),
        ({"expression": "'a'", "max_runs": -1}, "max_runs must be at least 1"),
        ({"expression": "'a'", "limit_strategy": 17}, "unknown limit_strategy 17"),
        ({"expression": "'a'", "limit_strategy": "FIFO"}, "unknown limit_strategy 'FIFO'"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(raw: Any, message: str) -> None:
    with pytest.raises(InvalidConcurrency, match=message):
        parse_specs(raw, where="w")


def test_a_registration_with_bad_cel_is_refused_whole() -> None:
    definition = {
        "name": "orders",
        "tasks": [{"readable_id": "a", "action": "orders:a", "concurrency": [{"expression": "("}]}],
    }
    with pytest.raises(InvalidDefinition, match=r"task 'a'.*expression '\('"):
        parse_workflow(definition)


def test_stored_policies_are_read_back_per_task_and_for_the_workflow() -> None:
    definition = {
        "name": "orders",
        "concurrency": {"expression": "input.user", "max_runs": 2},
        "tasks": [
            {"readable_id": "a", "action": "orders:a", "concurrency": [{"expression": "'k'"}]},
            {"readable_id": "b", "action": "orders:b"},
        ],
    }
    spec = parse_workflow(definition)
    assert spec.concurrency[0].max_runs == 2
    assert "concurrency" not in " ".join(spec.unenforced)
    policies = stored_policies(definition)
    assert policies.concurrency == spec.concurrency
    assert set(policies.step_concurrency) == {"a"}


def test_keys_are_strings_from_input_and_metadata() -> None:
    variables = key_variables(
        input={"user": "ann", "n": 3}, additional_metadata={"team": "x"}, workflow_run_id="r"
    )
    spec = ConcurrencySpec("input.user + '-' + additional_metadata.team", 1, Strategy.CANCEL_NEWEST)
    assert evaluate_key(spec, variables) == "ann-x"
    with pytest.raises(KeyEvaluationError, match="did not evaluate to a string"):
        evaluate_key(ConcurrencySpec("input.n", 1, Strategy.CANCEL_NEWEST), variables)
    with pytest.raises(KeyEvaluationError, match=r"input\.missing"):
        evaluate_key(ConcurrencySpec("input.missing", 1, Strategy.CANCEL_NEWEST), variables)
