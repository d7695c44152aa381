"""Batch assignment decisions: config validation, group keys, when groups flush."""

from __future__ import annotations

import json

import pytest

from hewer.engine.core.batches import (
    KEY_ERROR_PREFIX,
    BatchConfig,
    FlushReason,
    GroupKeyError,
    InvalidBatchConfig,
    PendingItem,
    batch_payload,
    evaluate_group_key,
    parse_batch_config,
    plan_flushes,
)
from hewer.engine.core.definition import InvalidDefinition, parse_workflow


def items(*specs: tuple[str, float], size: int = 100, start: int = 1) -> list[PendingItem]:
    return [
        PendingItem(queue_id=start + i, key=key, size_bytes=size, ready_at=ready)
        for i, (key, ready) in enumerate(specs)
    ]


# -- config -----------------------------------------------------------------------------------


def test_parse_full_config() -> None:
    config = parse_batch_config(
        {
            "batch_max_size": 3,
            "batch_max_interval_ms": 200,
            "batch_group_key": " input.group ",
            "batch_group_max_runs": 2,
            "broadcast_output": True,
        }
    )
    assert config == BatchConfig(
        max_size=3,
        max_interval_ms=200,
        group_key="input.group",
        group_max_runs=2,
        broadcast_output=True,
    )
    assert config.max_interval_seconds == 0.2


def test_absent_config_is_none_and_unset_fields_mean_no_limit() -> None:
    assert parse_batch_config(None) is None
    config = parse_batch_config({"batch_max_size": 1, "batch_group_max_runs": 0})
    assert config == BatchConfig(max_size=1)
    assert config.max_interval_seconds is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"batch_max_size": 0}, "batch_max_size must be at least 1"),
        ({}, "batch_max_size must be at least 1"),
        ({"batch_max_interval_ms": 5}, "batch_max_size must be at least 1"),
        ({"batch_max_size": 2, "batch_max_interval_ms": -1}, "must not be negative"),
        ({"batch_max_size": 2, "batch_group_max_runs": -3}, "must not be negative"),
        ({"batch_max_size": "many"}, "batch_max_size must be an integer"),
        ({"batch_max_size": 2, "batch_group_key": "input.("}, "invalid CEL expression"),
    ],
)
def test_bad_configs_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidBatchConfig, match=message):
        parse_batch_config(raw)


def test_registration_refuses_a_bad_batch_config_and_keeps_a_good_one() -> None:
    task = {"readable_id": "b", "action": "w:b", "batch": {"batch_max_size": 0}}
    with pytest.raises(InvalidDefinition, match=r"task 'b'.*batch_max_size must be at least 1"):
        parse_workflow({"name": "w", "tasks": [task]})
    task["batch"] = {"batch_max_size": 4, "batch_group_key": "input.k"}
    spec = parse_workflow({"name": "w", "tasks": [task]})
    assert spec.steps[0].batch == BatchConfig(max_size=4, group_key="input.k")
    assert spec.unenforced == ()


# -- group keys -------------------------------------------------------------------------------


def test_group_key_is_evaluated_and_trimmed() -> None:
    def key(expression: str, **input: object) -> str:
        return evaluate_group_key(
            expression,
            input=input,
            additional_metadata={"t": "meta"},
            parents={"first": {"n": "p"}},
            workflow_run_id="-r",
        )

    assert key("input.group", group=" a ") == "a"
    assert key("additional_metadata.t + workflow_run_id") == "meta-r"
    assert key("parents.first.n") == "p"


@pytest.mark.parametrize("input", [{"group": 123}, {}])
def test_group_key_that_is_not_a_string_is_an_error(input: dict[str, object]) -> None:
    with pytest.raises(GroupKeyError, match=KEY_ERROR_PREFIX):
        evaluate_group_key(
            "input.group",
            input=input,
            additional_metadata={},
            parents={},
            workflow_run_id="r",
        )


# -- flush planning ---------------------------------------------------------------------------


def test_full_group_flushes_by_size_and_the_rest_waits_for_its_interval() -> None:
    config = BatchConfig(max_size=2, max_interval_ms=1000)
    plan = plan_flushes(items(("", 10.0), ("", 10.1), ("", 10.2)), config=config, now=10.5)
    assert [(b.queue_ids, b.reason) for b in plan.batches] == [((1, 2), FlushReason.SIZE)]
    assert plan.next_deadline == pytest.approx(11.2)


def test_partial_group_flushes_when_its_oldest_item_waited_the_interval() -> None:
    config = BatchConfig(max_size=5, max_interval_ms=200)
    waiting = items(("", 10.0), ("", 10.15))
    assert plan_flushes(waiting, config=config, now=10.1).batches == ()
    plan = plan_flushes(waiting, config=config, now=10.2)
    assert [(b.queue_ids, b.reason) for b in plan.batches] == [((1, 2), FlushReason.INTERVAL)]
    assert plan.next_deadline is None


def test_without_interval_a_partial_group_waits_for_more() -> None:
    plan = plan_flushes(items(("", 0.0)), config=BatchConfig(max_size=3), now=1e9)
    assert plan.batches == () and plan.next_deadline is None


def test_groups_flush_independently_oldest_first() -> None:
    config = BatchConfig(max_size=3, max_interval_ms=150, group_key="input.group")
    pending = items(("t1", 5.01), ("t2", 5.0), ("t1", 5.02), ("t1", 5.03))
    plan = plan_flushes(pending, config=config, now=5.05)
    assert [(b.key, b.queue_ids) for b in plan.batches] == [("t1", (1, 3, 4))]
    assert plan.next_deadline == pytest.approx(5.15)
    later = plan_flushes(pending, config=config, now=5.2)
    assert [(b.key, b.reason) for b in later.batches] == [
        ("t2", FlushReason.INTERVAL),
        ("t1", FlushReason.SIZE),
    ]


def test_payload_size_splits_a_group_before_the_message_limit() -> None:
    config = BatchConfig(max_size=100, max_interval_ms=10_000)
    pending = items(*[("", 0.0)] * 100, size=100_300)
    plan = plan_flushes(pending, config=config, now=1.0)
    sizes = [len(b.queue_ids) for b in plan.batches]
    assert sizes == [41, 41]  # 41 * 100_300 bytes fit in MAX_BATCH_BYTES, 42 do not
    assert all(b.reason == FlushReason.PAYLOAD for b in plan.batches)
    assert plan.next_deadline == pytest.approx(10.0)  # the last 18 wait for the interval
    final = plan_flushes(pending[82:], config=config, now=10.0)
    assert [len(b.queue_ids) for b in final.batches] == [18]


def test_an_item_bigger_than_the_limit_still_goes_alone() -> None:
    config = BatchConfig(max_size=10, max_interval_ms=0)
    plan = plan_flushes(items(("", 0.0), ("", 0.0), size=10**8), config=config, now=0.0)
    assert [b.queue_ids for b in plan.batches] == [(1,), (2,)]


def test_group_max_runs_limits_new_batches_per_key() -> None:
    config = BatchConfig(max_size=1, group_key="input.k", group_max_runs=2)
    pending = items(("a", 1.0), ("a", 1.1), ("a", 1.2), ("b", 1.3))
    plan = plan_flushes(pending, config=config, now=2.0, running={"a": 1})
    assert [(b.key, b.queue_ids) for b in plan.batches] == [("a", (1,)), ("b", (4,))]
    full = plan_flushes(pending, config=config, now=2.0, running={"a": 2, "b": 2})
    assert full.batches == () and full.next_deadline is None


def test_batch_payload_maps_task_ids_to_their_action_payloads() -> None:
    text = batch_payload([("t1", "r1", '{"input":{"a":1}}'), ("t2", "r2", '{"input":{}}')])
    assert json.loads(text) == {
        "t1": {"payload": {"input": {"a": 1}}, "workflow_run_id": "r1"},
        "t2": {"payload": {"input": {}}, "workflow_run_id": "r2"},
    }
