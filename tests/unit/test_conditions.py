from typing import Any

import pytest
from tests.unit.definitions import base

from hewer.engine.core.conditions import (
    Action,
    ConditionKind,
    InvalidCondition,
    Satisfied,
    decide_at_parents,
    fired_action,
    parse_conditions,
)


def test_separate_groups_are_anded_and_members_of_a_group_ored() -> None:
    q = Action.QUEUE
    assert fired_action([Satisfied(q, "a", True), Satisfied(q, "b", False)]) is None
    assert (
        fired_action([Satisfied(q, "a", True), Satisfied(q, "b", False), Satisfied(q, "b", True)])
        is q
    )
    assert fired_action([Satisfied(q, "a", False)]) is None
    assert fired_action([]) is None


def test_skip_wins_over_cancel_over_queue() -> None:
    both = [Satisfied(Action.QUEUE, "q", True), Satisfied(Action.CANCEL, "c", True)]
    assert fired_action(both) is Action.CANCEL
    assert fired_action([*both, Satisfied(Action.SKIP, "s", True)]) is Action.SKIP
    assert fired_action([*both, Satisfied(Action.SKIP, "s", False)]) is Action.CANCEL


def test_parse_reads_all_three_kinds() -> None:
    raw = {
        "parent_override_conditions": [
            {"base": base("SKIP", "g1", "output.n > 1"), "parent_readable_id": "start"}
        ],
        "sleep_conditions": [{"base": base("QUEUE", "g2"), "sleep_for": "10s"}],
        "user_event_conditions": [
            {"base": base("CANCEL", "g3"), "user_event_key": "abort", "event_scope": "s"}
        ],
    }
    parsed = parse_conditions(raw, parents=("start",), where="t")
    assert [c.kind for c in parsed] == [
        ConditionKind.PARENT,
        ConditionKind.SLEEP,
        ConditionKind.USER_EVENT,
    ]
    assert parsed[1].sleep_seconds == 10
    assert parsed[2].event_key == "abort" and parsed[2].event_scope == "s"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"sleep_conditions": [{"base": base("QUEUE", "g"), "sleep_for": "-5s"}]},
            "invalid duration",
        ),
        (
            {"sleep_conditions": [{"base": base("QUEUE", "g"), "sleep_for": "soon"}]},
            "invalid duration",
        ),
        ({"sleep_conditions": [{"base": base("QUEUE", "g"), "sleep_for": "0s"}]}, "positive"),
        (
            {
                "parent_override_conditions": [
                    {"base": base("SKIP", "g", "output.(("), "parent_readable_id": "start"}
                ]
            },
            "invalid CEL",
        ),
        (
            {
                "parent_override_conditions": [
                    {"base": base("SKIP", "g", "true"), "parent_readable_id": "other"}
                ]
            },
            "not a parent",
        ),
        (
            {
                "user_event_conditions": [
                    {"base": base("QUEUE", "g", "input.(("), "user_event_key": "e"}
                ]
            },
            "invalid CEL",
        ),
        (
            {"user_event_conditions": [{"base": base("QUEUE", "g"), "user_event_key": ""}]},
            "no event key",
        ),
        (
            {"sleep_conditions": [{"base": {"or_group_id": "g"}, "sleep_for": "1s"}]},
            "CANCEL, QUEUE, SKIP",
        ),
    ],
)
def test_bad_conditions_are_refused_with_a_clear_message(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCondition, match=message):
        parse_conditions(raw, parents=("start",), where="t")


def parent(action: str, group: str, expression: str, name: str = "start") -> dict[str, Any]:
    return {"base": base(action, group, expression), "parent_readable_id": name}


def test_parent_skip_cancel_and_queue_at_parent_completion() -> None:
    skip = parse_conditions(
        {"parent_override_conditions": [parent("SKIP", "g", "output.n > 1")]},
        parents=("start",),
        where="t",
    )
    assert decide_at_parents(skip, {"start": {"n": 2}}).action is Action.SKIP
    assert decide_at_parents(skip, {"start": {"n": 0}}).action is Action.QUEUE
    cancel = parse_conditions(
        {"parent_override_conditions": [parent("CANCEL", "g", "output.n > 1")]},
        parents=("start",),
        where="t",
    )
    assert decide_at_parents(cancel, {"start": {"n": 2}}).action is Action.CANCEL


def test_or_group_of_parent_conditions_fires_on_one_member() -> None:
    conditions = parse_conditions(
        {
            "parent_override_conditions": [
                parent("SKIP", "g", "output.n >= 1"),
                parent("SKIP", "g", "output.n > 1000"),
            ]
        },
        parents=("start",),
        where="t",
    )
    assert decide_at_parents(conditions, {"start": {"n": 5}}).action is Action.SKIP


def test_sleep_and_event_conditions_wait_unless_a_parent_condition_decides() -> None:
    conditions = parse_conditions(
        {
            "parent_override_conditions": [parent("SKIP", "g1", "output.n > 1")],
            "sleep_conditions": [{"base": base("QUEUE", "g2"), "sleep_for": "30s"}],
        },
        parents=("start",),
        where="t",
    )
    waiting = decide_at_parents(conditions, {"start": {"n": 0}})
    assert waiting.action is None
    assert [c.kind for c in waiting.pending] == [ConditionKind.SLEEP]
    assert decide_at_parents(conditions, {"start": {"n": 5}}).action is Action.SKIP


def test_a_false_wait_for_on_a_finished_parent_skips_instead_of_waiting_forever() -> None:
    conditions = parse_conditions(
        {"parent_override_conditions": [parent("QUEUE", "g", "output.n > 1")]},
        parents=("start",),
        where="t",
    )
    assert decide_at_parents(conditions, {"start": {"n": 0}}).action is Action.SKIP
    assert decide_at_parents(conditions, {"start": {"n": 2}}).action is Action.QUEUE


def test_an_expression_that_fails_on_the_output_does_not_hold() -> None:
    conditions = parse_conditions(
        {"parent_override_conditions": [parent("SKIP", "g", "output.missing > 1")]},
        parents=("start",),
        where="t",
    )
    assert decide_at_parents(conditions, {"start": {"n": 2}}).action is Action.QUEUE
