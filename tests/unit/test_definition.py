"""Validating workflow registrations (the SDK's request as a dict) into step specs."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from hewer.engine.core.definition import (
    DEFAULT_SCHEDULE_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    InvalidDefinition,
    checksum,
    parse_workflow,
)
from hewer.engine.core.model import StepKind


def registration(**overrides: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": "orders",
        "description": "process orders",
        "version": "v2",
        "event_triggers": ["order:created"],
        "tasks": [
            {
                "readable_id": "fetch",
                "action": "orders:fetch",
                "timeout": "90s",
                "retries": 2,
                "backoff_factor": 2.0,
                "backoff_max_seconds": 30,
            },
            {"readable_id": "charge", "action": "orders:charge", "parents": ["fetch"]},
        ],
        "on_failure_task": {"readable_id": "refund", "action": "orders:refund"},
    }
    definition.update(overrides)
    return definition


def task(readable_id: str, *parents: str, **fields: Any) -> dict[str, Any]:
    return {"readable_id": readable_id, "action": f"wf:{readable_id}", "parents": list(parents)} | (
        fields
    )


def test_a_full_registration_parses() -> None:
    spec = parse_workflow(registration())
    assert (spec.name, spec.description, spec.version) == ("orders", "process orders", "v2")
    assert spec.event_triggers == ("order:created",)
    assert spec.default_priority == 1
    assert spec.sticky is None
    fetch, charge, refund = spec.steps
    assert (fetch.readable_id, fetch.action_id, fetch.kind, fetch.position) == (
        "fetch",
        "orders:fetch",
        StepKind.TASK,
        0,
    )
    assert (fetch.timeout_seconds, fetch.retries) == (90, 2)
    assert (fetch.backoff_factor, fetch.backoff_max_seconds) == (2.0, 30)
    assert fetch.parents == ()
    assert charge.parents == ("fetch",)
    assert (refund.kind, refund.position, refund.parents) == (StepKind.ON_FAILURE, 2, ())


def test_defaults_for_omitted_fields() -> None:
    spec = parse_workflow({"name": "wf", "tasks": [{"readable_id": "a", "action": "wf:a"}]})
    (a,) = spec.steps
    assert a.timeout_seconds == DEFAULT_TIMEOUT_SECONDS
    assert a.schedule_timeout_seconds == DEFAULT_SCHEDULE_TIMEOUT_SECONDS
    assert (a.retries, a.backoff_factor, a.backoff_max_seconds) == (0, None, None)
    assert a.slot_requests == {"default": 1}
    assert a.is_durable is False
    assert spec.unenforced == ()


def test_empty_strings_mean_defaults_as_the_proto_sends_them() -> None:
    spec = parse_workflow(
        {"name": "wf", "tasks": [task("a", timeout="", schedule_timeout="")], "sticky": ""}
    )
    assert spec.steps[0].timeout_seconds == DEFAULT_TIMEOUT_SECONDS
    assert spec.steps[0].schedule_timeout_seconds == DEFAULT_SCHEDULE_TIMEOUT_SECONDS
    assert spec.sticky is None


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [("1s", 1), ("2m", 120), ("1h30m", 5400), ("1500ms", 2), ("100ms", 1), ("45", 45)],
)
def test_timeouts_are_whole_seconds_at_least_one(timeout: str, seconds: int) -> None:
    spec = parse_workflow({"name": "wf", "tasks": [task("a", timeout=timeout)]})
    assert spec.steps[0].timeout_seconds == seconds


def test_durable_tasks_use_durable_slots_by_default() -> None:
    spec = parse_workflow(
        {
            "name": "wf",
            "tasks": [
                task("d", is_durable=True),
                task("custom", slot_requests={"gpu": 2}),
                task("durable_custom", is_durable=True, slot_requests={"default": 1}),
            ],
        }
    )
    assert [s.slot_requests for s in spec.steps] == [{"durable": 1}, {"gpu": 2}, {"default": 1}]
    assert [s.is_durable for s in spec.steps] == [True, False, True]


@pytest.mark.parametrize(("given", "stored"), [(None, 1), (1, 1), (2, 2), (3, 3)])
def test_default_priority(given: int | None, stored: int) -> None:
    definition: dict[str, Any] = {"name": "wf", "tasks": [task("a")]}
    if given is not None:
        definition["default_priority"] = given
    assert parse_workflow(definition).default_priority == stored


@pytest.mark.parametrize("given", [0, 4, -1])
def test_default_priority_out_of_range_is_refused(given: int) -> None:
    with pytest.raises(InvalidDefinition, match=f"default_priority must be 1..3, got {given}"):
        parse_workflow({"name": "wf", "tasks": [task("a")], "default_priority": given})


def test_unknown_sticky_strategy_is_refused() -> None:
    with pytest.raises(InvalidDefinition, match="sticky must be one of SOFT, HARD"):
        parse_workflow({"name": "wf", "tasks": [task("a")], "sticky": "STICKY"})


def test_worker_labels_are_parsed_and_bad_comparators_refused() -> None:
    labels = {"memory": {"int_value": 512, "comparator": "GREATER_THAN"}}
    spec = parse_workflow({"name": "wf", "tasks": [task("a", worker_labels=labels)]})
    assert [(d.key, d.value, d.comparator.value) for d in spec.steps[0].desired_labels] == [
        ("memory", 512, "GREATER_THAN")
    ]
    bad = {"model": {"str_value": "big", "comparator": "GREATER_THAN"}}
    with pytest.raises(InvalidDefinition, match=r"task 'a'.*'model'.*compares integers"):
        parse_workflow({"name": "wf", "tasks": [task("a", worker_labels=bad)]})


def test_sticky_is_kept() -> None:
    assert parse_workflow({"name": "wf", "tasks": [task("a")], "sticky": "SOFT"}).sticky == "SOFT"


# -- refusals ----------------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no name", {"tasks": [task("a")]}, "name is required"),
    ("blank name", {"name": "  ", "tasks": [task("a")]}, "name is required"),
    ("no tasks", {"name": "wf", "tasks": []}, "has no tasks"),
    ("tasks missing", {"name": "wf"}, "has no tasks"),
    ("priority too high", {"name": "wf", "tasks": [task("a")], "default_priority": 4}, "1..3"),
    ("negative priority", {"name": "wf", "tasks": [task("a")], "default_priority": -1}, "1..3"),
    ("no readable id", {"name": "wf", "tasks": [{"action": "wf:a"}]}, "readable_id is required"),
    ("no action", {"name": "wf", "tasks": [{"readable_id": "a"}]}, "'service:task'"),
    ("action without colon", {"name": "wf", "tasks": [task("a", action="a")]}, "'service:task'"),
    ("action with space", {"name": "wf", "tasks": [task("a", action="w f:a")]}, "'service:task'"),
    ("action, two colons", {"name": "wf", "tasks": [task("a", action="a:b:c")]}, "service:task"),
    ("action, empty half", {"name": "wf", "tasks": [task("a", action="wf:")]}, "service:task"),
    ("bad timeout", {"name": "wf", "tasks": [task("a", timeout="soon")]}, "invalid duration"),
    (
        "bad schedule timeout",
        {"name": "wf", "tasks": [task("a", schedule_timeout="5 minutes")]},
        "invalid duration",
    ),
    ("unicode timeout", {"name": "wf", "tasks": [task("a", timeout="²")]}, "invalid duration"),
    ("zero timeout", {"name": "wf", "tasks": [task("a", timeout="0s")]}, "must be positive"),
    ("negative retries", {"name": "wf", "tasks": [task("a", retries=-1)]}, "retries"),
    (
        "zero slot units",
        {"name": "wf", "tasks": [task("a", slot_requests={"default": 0})]},
        "must be positive",
    ),
    ("duplicate names", {"name": "wf", "tasks": [task("a"), task("a")]}, "duplicate task names"),
    (
        "on-failure named like a task",
        {"name": "wf", "tasks": [task("a")], "on_failure_task": task("a")},
        "duplicate task names",
    ),
    ("missing parent", {"name": "wf", "tasks": [task("a"), task("b", "z")]}, "unknown parent 'z'"),
    ("self parent", {"name": "wf", "tasks": [task("a", "a")]}, "cycle a -> a"),
    (
        "two-step cycle",
        {"name": "wf", "tasks": [task("a", "b"), task("b", "a")]},
        "cycle",
    ),
    (
        "long cycle behind a root",
        {"name": "wf", "tasks": [task("r"), task("a", "r", "c"), task("b", "a"), task("c", "b")]},
        "cycle",
    ),
    (
        "on-failure with parents",
        {"name": "wf", "tasks": [task("a")], "on_failure_task": task("h", "a")},
        "on-failure task has parents",
    ),
]


@pytest.mark.parametrize(
    ("definition", "message"),
    [pytest.param(d, m, id=case) for case, d, m in INVALID],
)
def test_invalid_registrations_are_refused(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidDefinition, match=re.escape(message)):
        parse_workflow(definition)


def test_cycle_message_names_the_cycle() -> None:
    with pytest.raises(InvalidDefinition) as info:
        parse_workflow({"name": "wf", "tasks": [task("a", "c"), task("b", "a"), task("c", "b")]})
    message = str(info.value)
    assert "cycle" in message
    for name in ("a", "b", "c"):
        assert name in message


def test_errors_name_the_workflow_and_task() -> None:
    with pytest.raises(InvalidDefinition, match=r"workflow 'orders' task 'charge'"):
        parse_workflow(
            registration(
                tasks=[task("fetch"), task("charge", "fetch", timeout="later")],
                on_failure_task=None,
            )
        )


def test_a_valid_diamond_is_not_a_cycle() -> None:
    spec = parse_workflow(
        {"name": "wf", "tasks": [task("a"), task("b", "a"), task("c", "a"), task("d", "b", "c")]}
    )
    assert [s.parents for s in spec.steps] == [(), ("a",), ("a",), ("b", "c")]


# -- checksum and unenforced settings ----------------------------------------------------


def test_checksum_ignores_key_order_but_not_content() -> None:
    original = registration()
    reordered = dict(reversed(list(copy.deepcopy(original).items())))
    assert checksum(reordered) == checksum(original)
    assert parse_workflow(reordered).checksum == parse_workflow(original).checksum
    changed = copy.deepcopy(original)
    changed["tasks"][0]["retries"] = 3
    assert parse_workflow(changed).checksum != parse_workflow(original).checksum


def test_conditions_on_tasks_without_parents_and_their_look_back_are_enforced() -> None:
    # a root's, an on-failure task's and a child's conditions, a look-back among them: all
    # enforced, so nothing is listed as accepted-but-ignored
    look_back = {
        "base": {"action": "QUEUE", "or_group_id": "g1", "readable_data_key": "go"},
        "user_event_key": "go",
        "consider_events_since": "2024-01-01T00:00:00Z",
    }
    conditions = {
        "sleep_conditions": [
            {
                "base": {"action": "SKIP", "or_group_id": "g2", "readable_data_key": "s"},
                "sleep_for": "5s",
            }
        ],
        "user_event_conditions": [look_back],
    }
    spec = parse_workflow(
        {
            "name": "wf",
            "tasks": [task("a", conditions=conditions), task("b", "a", conditions=conditions)],
            "on_failure_task": task("h", conditions=conditions),
        }
    )
    assert spec.unenforced == ()
    assert [len(s.conditions) for s in spec.steps] == [2, 2, 2]
    assert spec.steps[0].conditions[1].events_since == "2024-01-01T00:00:00Z"


def test_empty_optional_settings_are_not_unenforced() -> None:
    definition = {
        "name": "wf",
        "concurrency": None,
        "cron_triggers": [],
        "tasks": [task("a", rate_limits=[], worker_labels={})],
    }
    assert parse_workflow(definition).unenforced == ()
