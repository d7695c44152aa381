"""The durable event log's pure rules (``core/durable.py``): what a node asked for, which
branch holds a node, what a satisfied node hands back, and in which order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hewer.engine.core.conditions import (
    DURABLE_ACTIONS,
    Action,
    Condition,
    ConditionKind,
    InvalidCondition,
    parse_conditions,
)
from hewer.engine.core.durable import (
    CHILD_CANCELLED,
    Branch,
    ChildTask,
    EntryKind,
    LoggedNode,
    NonDeterminism,
    branch_holding,
    check_entry,
    child_outcome,
    deliverable,
    durable_conditions,
    is_visible,
    memo_key,
    run_key,
    sleep_data,
    wait_key,
    wait_result,
)

WAIT, MEMO, RUN = EntryKind.WAIT_FOR, EntryKind.MEMO, EntryKind.RUN


def sleep(seconds: float, *, group: str, text: str = "") -> Condition:
    return Condition(
        kind=ConditionKind.SLEEP,
        action=Action.CREATE,
        or_group_id=group,
        readable_data_key=f"sleep:{text or seconds}",
        sleep_seconds=seconds,
        sleep_for=text or f"{seconds}s",
    )


def event(
    key: str, *, group: str, expression: str = "", scope: str = "", since: str = ""
) -> Condition:
    return Condition(
        kind=ConditionKind.USER_EVENT,
        action=Action.CREATE,
        or_group_id=group,
        readable_data_key=key,
        expression=expression,
        event_key=key,
        event_scope=scope,
        events_since=since,
    )


# -- what a node asked for -------------------------------------------------------------------


def test_a_wait_key_ignores_the_random_or_group_ids_and_the_listing_order() -> None:
    first = [sleep(5, group="g-1"), event("approve", group="g-2", expression="input.ok")]
    again = [event("approve", group="x-9", expression="input.ok"), sleep(5, group="x-8")]
    assert wait_key(first) == wait_key(again)


def test_a_wait_key_tells_an_or_group_from_separate_conditions() -> None:
    anded = [sleep(5, group="a"), event("go", group="b")]
    ored = [sleep(5, group="a"), event("go", group="a")]
    assert wait_key(anded) != wait_key(ored)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param([sleep(6, group="a")], id="sleep"),
        pytest.param([event("stop", group="a")], id="event-key"),
        pytest.param([event("go", group="a", expression="input.n > 1")], id="expression"),
        pytest.param([event("go", group="a", scope="tenant-b")], id="scope"),
    ],
)
def test_a_wait_key_changes_with_what_is_waited_for(changed: list[Condition]) -> None:
    assert wait_key([event("go", group="a")]) != wait_key(changed)


def test_a_wait_key_ignores_the_look_back_start_which_moves_on_every_replay() -> None:
    before = event("go", group="a", since="2025-01-01T00:00:00+00:00")
    later = event("go", group="b", since="2025-01-01T00:05:00+00:00")
    assert wait_key([before]) == wait_key([later])


def test_equal_sleeps_written_differently_are_the_same_wait() -> None:
    assert wait_key([sleep(60, group="a", text="60s")]) == wait_key(
        [sleep(60, group="b", text="1m")]
    )


def test_a_child_key_names_the_spawn_by_itself() -> None:
    keyed = run_key(workflow_name="child", input_json='{"n": 1}', child_key="k")
    assert keyed == run_key(workflow_name="child", input_json='{"n": 2}', child_key="k")
    assert keyed != run_key(workflow_name="child", input_json='{"n": 1}', child_key="other")
    assert keyed != run_key(workflow_name="other", input_json='{"n": 1}', child_key="k")


def test_without_a_child_key_the_input_and_workflow_name_the_spawn() -> None:
    plain = run_key(workflow_name="child", input_json='{"n": 1}', child_key=None)
    assert plain == run_key(workflow_name="child", input_json='{"n": 1}', child_key="")
    assert plain != run_key(workflow_name="child", input_json='{"n": 2}', child_key=None)
    assert plain != run_key(workflow_name="other", input_json='{"n": 1}', child_key=None)


def test_kinds_never_share_a_key() -> None:
    # a memo whose client key happens to equal another node's digest is still a memo
    waited = wait_key([sleep(1, group="a")])
    assert memo_key(waited) != waited
    assert memo_key(b"a") != memo_key(b"b")
    assert memo_key(b"a") == memo_key(b"a")


# -- non-determinism -------------------------------------------------------------------------


def test_the_recorded_node_asked_for_again_passes() -> None:
    check_entry(node_id=3, recorded_kind="MEMO", recorded_key=b"k", kind=MEMO, key=b"k")
    # the database hands back a memoryview for bytea
    check_entry(node_id=3, recorded_kind="RUN", recorded_key=memoryview(b"k"), kind=RUN, key=b"k")


def test_another_kind_at_a_recorded_node_names_both_kinds_and_the_node() -> None:
    with pytest.raises(NonDeterminism) as info:
        check_entry(node_id=2, recorded_kind="WAIT_FOR", recorded_key=b"k", kind=MEMO, key=b"k")
    message = str(info.value)
    assert info.value.node_id == 2
    assert "non-determinism detected at node 2" in message
    assert "MEMO where the log recorded WAIT_FOR" in message


def test_another_key_of_the_same_kind_is_a_different_request() -> None:
    with pytest.raises(NonDeterminism, match="asked for a different run") as info:
        check_entry(node_id=1, recorded_kind="RUN", recorded_key=b"old", kind=RUN, key=b"new")
    assert info.value.node_id == 1
    assert "same waits, memos and spawns in the same order" in str(info.value)


# -- branches --------------------------------------------------------------------------------


def test_without_branches_every_node_is_on_the_root_branch() -> None:
    assert branch_holding({}, current=1, node_id=7) == 1


def test_a_branch_reads_the_nodes_before_its_start_from_its_parent() -> None:
    branches = {2: Branch(2, 1, 3)}
    assert [branch_holding(branches, current=2, node_id=n) for n in (1, 2, 3, 4)] == [1, 1, 2, 2]
    # the old branch still reads its own nodes
    assert branch_holding(branches, current=1, node_id=4) == 1


def test_nested_branches_resolve_through_each_parent() -> None:
    # branch 2 from node 3 of branch 1; branch 3 from node 5 of branch 2
    branches = {2: Branch(2, 1, 3), 3: Branch(3, 2, 5)}
    holders = [branch_holding(branches, current=3, node_id=n) for n in range(1, 7)]
    assert holders == [1, 1, 2, 2, 3, 3]


def test_a_branch_off_an_old_branch_skips_the_newer_one() -> None:
    # branch 3 starts at node 2 of branch 1, not of branch 2
    branches = {2: Branch(2, 1, 3), 3: Branch(3, 1, 2)}
    assert [branch_holding(branches, current=3, node_id=n) for n in (1, 2, 3)] == [1, 3, 3]


def test_a_branch_cycle_does_not_loop_forever() -> None:
    branches = {2: Branch(2, 3, 5), 3: Branch(3, 2, 5)}
    assert branch_holding(branches, current=2, node_id=1) in (2, 3)


def test_entries_of_an_abandoned_branch_are_not_read() -> None:
    # branch 2 from node 2 of branch 1: (1, 2) and (1, 3) were left behind
    branches = {2: Branch(2, 1, 2)}
    logged = {(1, 1), (1, 2), (1, 3), (2, 2)}
    read = [n for n in sorted(logged) if is_visible(n, branches, current=2, logged=logged)]
    assert read == [(1, 1), (2, 2)]
    # the pre-eviction API's signals (branch 0) are never part of an invocation's log
    assert not is_visible((0, 1), {}, current=1, logged={(0, 1)})
    assert is_visible((1, 4), {}, current=1, logged=set())


# -- ordered delivery ------------------------------------------------------------------------


def node(branch: int, node_id: int, order: int | None, kind: EntryKind = WAIT) -> LoggedNode:
    return LoggedNode(branch_id=branch, node_id=node_id, kind=kind, satisfied_order=order)


def ids(nodes: list[LoggedNode]) -> list[tuple[int, int]]:
    return [(n.branch_id, n.node_id) for n in nodes]


def test_satisfied_nodes_are_delivered_in_the_order_they_were_satisfied() -> None:
    log = [node(1, 1, 3), node(1, 2, 1), node(1, 3, 2), node(1, 4, None)]
    assert ids(deliverable(log, {}, current=1, reached=4)) == [(1, 2), (1, 3), (1, 1)]


def test_delivery_stops_at_the_first_satisfied_node_the_replay_has_not_reached() -> None:
    # node 2 was satisfied first: node 1's result waits until the replay asks for node 2
    log = [node(1, 1, 2), node(1, 2, 1), node(1, 3, 3)]
    assert deliverable(log, {}, current=1, reached=1) == []
    assert ids(deliverable(log, {}, current=1, reached=2)) == [(1, 2), (1, 1)]
    assert ids(deliverable(log, {}, current=1, reached=3)) == [(1, 2), (1, 1), (1, 3)]


def test_a_fresh_invocation_that_reached_nothing_gets_nothing() -> None:
    assert deliverable([node(1, 1, 1)], {}, current=1, reached=0) == []


def test_memos_and_unsatisfied_nodes_are_never_delivered() -> None:
    log = [node(1, 1, 1, MEMO), node(1, 2, None), node(1, 3, 2, RUN)]
    assert ids(deliverable(log, {}, current=1, reached=3)) == [(1, 3)]


def test_an_unreached_memo_does_not_hold_back_later_results() -> None:
    # a memo's satisfied order is recorded too, but it is not delivered, so it does not gate
    log = [node(1, 1, 1), node(1, 2, 2, MEMO), node(1, 3, 3)]
    assert ids(deliverable(log, {}, current=1, reached=1)) == [(1, 1)]


def test_a_branch_sees_its_parents_nodes_before_its_start_and_its_own_after() -> None:
    branches = {2: Branch(2, 1, 2)}
    log = [node(1, 1, 1), node(1, 2, 2), node(1, 3, 3), node(2, 2, 4)]
    assert ids(deliverable(log, branches, current=2, reached=3)) == [(1, 1), (2, 2)]
    # the old branch, read as current, still sees its own nodes
    assert ids(deliverable(log, branches, current=1, reached=3)) == [(1, 1), (1, 2), (1, 3)]


def test_a_node_the_parent_branch_never_reached_is_read_from_the_current_branch() -> None:
    # branch 3 from node 4 of branch 2; branch 2 (from node 2 of branch 1) stopped at node 2,
    # so node 3 of the new invocation was written to branch 3 (services/durable.py _next_node)
    branches = {2: Branch(2, 1, 2), 3: Branch(3, 2, 4)}
    log = [node(1, 1, 1), node(2, 2, 2), node(3, 3, 3), node(3, 4, 4)]
    assert ids(deliverable(log, branches, current=3, reached=4)) == [
        (1, 1),
        (2, 2),
        (3, 3),
        (3, 4),
    ]
    # once the parent holds the node, its copy wins and the current branch's is shadowed
    shadowed = [*log, node(2, 3, 5)]
    assert (3, 3) not in ids(deliverable(shadowed, branches, current=3, reached=4))


# -- what a satisfied node hands back --------------------------------------------------------


def test_a_wait_result_groups_data_by_readable_key_under_create() -> None:
    result = wait_result([("sleep:5s", sleep_data("5s")), ("go", {"n": 1}), ("go", {"n": 2})])
    assert json.loads(result) == {
        "CREATE": {"sleep:5s": [{"sleep_duration": "5s"}], "go": [{"n": 1}, {"n": 2}]}
    }


def test_sleep_data_is_the_duration_as_the_task_sent_it() -> None:
    assert sleep_data("1m30s") == {"sleep_duration": "1m30s"}


def child(
    readable_id: str, status: str, output: str | None = None, error: str | None = None
) -> ChildTask:
    return ChildTask(readable_id=readable_id, status=status, output=output, error=error)


def test_a_single_task_child_hands_back_its_output_as_is() -> None:
    outcome = child_outcome([child("only", "COMPLETED", '{"v": 1}')])
    assert (outcome.is_failure, outcome.error_message) == (False, None)
    assert outcome.result is not None and json.loads(outcome.result) == {"v": 1}


def test_a_dag_child_hands_back_each_tasks_output_by_name() -> None:
    outcome = child_outcome([child("a", "COMPLETED", '{"v": 1}'), child("b", "COMPLETED", "")])
    assert outcome.result is not None
    assert json.loads(outcome.result) == {"a": {"v": 1}, "b": {}}


def test_an_output_that_is_not_json_is_handed_back_as_text() -> None:
    outcome = child_outcome([child("a", "COMPLETED", "plain words")])
    assert outcome.result is not None and json.loads(outcome.result) == "plain words"


def test_a_failed_child_is_an_error_with_its_message_and_wins_over_a_cancelled_one() -> None:
    outcome = child_outcome(
        [child("a", "CANCELLED"), child("b", "FAILED", error="boom"), child("c", "COMPLETED")]
    )
    assert (outcome.result, outcome.is_failure, outcome.error_message) == (None, True, "boom")
    assert child_outcome([child("a", "FAILED")]).error_message == "child task failed"


def test_a_cancelled_child_is_an_error_with_hatchets_message() -> None:
    outcome = child_outcome([child("a", "CANCELLED"), child("b", "COMPLETED", "{}")])
    assert (outcome.is_failure, outcome.error_message) == (True, CHILD_CANCELLED)


# -- what a durable wait may ask for ---------------------------------------------------------


def test_a_wait_on_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one sleep or user-event condition"):
        durable_conditions([])


@pytest.mark.parametrize("kind", [ConditionKind.PARENT, ConditionKind.CHILD])
def test_a_wait_on_a_parent_or_child_condition_is_refused(kind: ConditionKind) -> None:
    condition = Condition(kind=kind, action=Action.CREATE, or_group_id="a", readable_data_key="k")
    with pytest.raises(ValueError, match=f"cannot wait for a {kind.value} condition"):
        durable_conditions([sleep(1, group="s"), condition])


def test_sleeps_and_user_events_may_be_waited_for() -> None:
    durable_conditions([sleep(1, group="a"), event("go", group="a")])


def durable_wait(raw: dict[str, Any]) -> tuple[Condition, ...]:
    return parse_conditions(raw, parents=(), where="durable wait", actions=DURABLE_ACTIONS)


def base(**fields: Any) -> dict[str, Any]:
    return {"or_group_id": "g", "readable_data_key": "k", **fields}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            {
                "user_event_conditions": [
                    {"base": base(expression="input.(("), "user_event_key": "e"}
                ]
            },
            "condition expression",
            id="invalid-cel",
        ),
        pytest.param(
            {"sleep_conditions": [{"base": base(), "sleep_for": "-5s"}]}, "sleep", id="negative"
        ),
        pytest.param(
            {"sleep_conditions": [{"base": base(), "sleep_for": "soon"}]}, "sleep", id="unparsable"
        ),
        pytest.param(
            {"sleep_conditions": [{"base": base(), "sleep_for": "0s"}]}, "positive", id="zero"
        ),
        pytest.param(
            {"sleep_conditions": [{"base": base(action="QUEUE"), "sleep_for": "5s"}]},
            "must be one of CREATE",
            id="dag-action",
        ),
        pytest.param(
            {"user_event_conditions": [{"base": base(), "user_event_key": " "}]},
            "no event key",
            id="no-event-key",
        ),
        pytest.param(
            {"parent_override_conditions": [{"base": base(), "parent_readable_id": "a"}]},
            "not a parent",
            id="parent",
        ),
    ],
)
def test_a_bad_durable_wait_is_refused_with_a_message(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCondition, match=message) as info:
        durable_wait(raw)
    assert str(info.value).startswith("durable wait")


def test_a_durable_condition_without_an_action_is_a_create() -> None:
    # the SDK's CREATE is the proto default (0), which MessageToDict leaves out
    (parsed,) = durable_wait({"sleep_conditions": [{"base": base(), "sleep_for": "5s"}]})
    assert (parsed.action, parsed.sleep_seconds, parsed.sleep_for) == (Action.CREATE, 5.0, "5s")
