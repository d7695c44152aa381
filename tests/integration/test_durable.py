"""Durable execution against PostgreSQL: the durable event log (``services/durable.py``).

A durable task's requests (memo, wait, spawn) become log nodes; a replay (a new invocation)
walks the log again and gets the recorded results. Waits are matches
(``services/matches.py``) satisfied by the timer loop, event ingestion or a child run's end;
a satisfied node is handed to the running invocation in satisfied order.
Eviction, restore and branches: ``test_durable_eviction.py``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.integration.durable_flow import (
    delivered_nodes,
    event,
    finish_child,
    flow,
    push,
    restore_to_new_invocation,
    sleep,
)
from tests.integration.harness import Replica, eventually

from hewer.engine.services.durable import (
    DurableRequestError,
    DurableTaskNotFound,
    NonDeterminism,
    Ref,
    StaleInvocation,
)

# -- memo ------------------------------------------------------------------------------------


async def test_a_memo_is_recorded_once_and_replayed_as_recorded(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    first = await f.memo(b"now")
    assert (first.existed, first.result, first.ref.node_id) == (False, None, 1)
    await engine.durable.complete_memo(
        tenant_id=tenant, ref=first.ref, key=b"now", payload=b'{"t": 1}'
    )
    second = await f.memo(b"other")
    assert (second.existed, second.ref.node_id) == (False, 2)

    await restore_to_new_invocation(f)
    replayed = await f.memo(b"now")
    assert (replayed.existed, replayed.result, replayed.ref.node_id) == (True, b'{"t": 1}', 1)
    # a memo asked for but never completed is computed again, at the same node
    again = await f.memo(b"other")
    assert (again.existed, again.result, again.ref.node_id) == (False, None, 2)
    # a memo's result is never pushed like a wait's
    assert await f.delivered() == []


async def test_completing_a_memo_checks_the_node_and_its_key(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    ack = await f.memo(b"k")
    with pytest.raises(NonDeterminism):
        await engine.durable.complete_memo(tenant_id=tenant, ref=ack.ref, key=b"x", payload=b"1")
    missing = Ref(f.task_id, f.invocation, 1, 9)
    with pytest.raises(DurableRequestError, match="memo node 9 of branch 1 does not exist"):
        await engine.durable.complete_memo(tenant_id=tenant, ref=missing, key=b"k", payload=b"1")
    await engine.durable.complete_memo(tenant_id=tenant, ref=ack.ref, key=b"k", payload=b"1")
    # a second completion (a duplicate request) does not overwrite the recorded value
    await engine.durable.complete_memo(tenant_id=tenant, ref=ack.ref, key=b"k", payload=b"2")
    await restore_to_new_invocation(f)
    assert (await f.memo(b"k")).result == b"1"


# -- waits -----------------------------------------------------------------------------------


async def test_a_durable_sleep_is_woken_by_the_timer_loop(engine: Replica, tenant: str) -> None:
    pushed: list[dict[str, Any]] = []
    engine.bus.subscribe("durable", pushed.append)
    f = await (await flow(engine, tenant)).start()
    ref = await f.wait(sleep(0.3))
    assert (ref.branch_id, ref.node_id) == (1, 1)
    await engine.timers.run_once()
    assert await f.delivered() == []  # not due yet
    await asyncio.sleep(0.35)
    await engine.timers.run_once()
    assert await f.delivered() == [(1, 1, {"CREATE": {"sleep:0.3s": [{"sleep_duration": "0.3s"}]}})]
    await eventually(lambda: any(m.get("task") == f.task_id for m in pushed), within=5)
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM task_matches") == 0
    assert await f.status() == "RUNNING"  # a wait never takes the slot away by itself


async def test_an_event_wait_needs_its_key_expression_and_scope(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(event("order", expression="input.n > 1", scope="shop-a"))
    await push(engine, tenant, "order", {"n": 1}, scope="shop-a")  # expression false
    await push(engine, tenant, "order", {"n": 2}, scope="shop-b")  # another scope
    await push(engine, tenant, "order", {"n": 2})  # no scope
    await push(engine, tenant, "other", {"n": 2}, scope="shop-a")  # another key
    assert await f.delivered() == []
    await push(engine, tenant, "order", {"n": 3}, scope="shop-a")
    assert await f.delivered() == [(1, 1, {"CREATE": {"order": [{"n": 3}]}})]


async def test_a_look_back_sees_an_event_pushed_before_the_wait(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await push(engine, tenant, "signup", {"user": "ann"}, scope="ann")
    await push(engine, tenant, "signup", {"user": "bob"}, scope="bob")
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    await f.wait(event("signup", scope="bob", since=since))
    assert await f.delivered() == [(1, 1, {"CREATE": {"signup": [{"user": "bob"}]}})]
    # a look-back starting after the event, or in another scope, does not see it
    await f.wait(event("signup", scope="bob", since=datetime.now(UTC).isoformat()))
    await f.wait(event("signup", scope="cid", since=since))
    assert [node for _, node, _ in await f.delivered()] == [1]


async def test_an_or_group_fires_on_either_member_and_groups_are_anded(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(sleep(30, group="either"), event("go", group="either"))
    await f.wait(sleep(0.1, group="first"), event("also", group="second"))
    await push(engine, tenant, "go", {"via": "event"})
    assert await f.delivered() == [(1, 1, {"CREATE": {"go": [{"via": "event"}]}})]
    await asyncio.sleep(0.15)
    await engine.timers.run_once()
    assert [node for _, node, _ in await f.delivered()] == [1]  # node 2 still needs "also"
    await push(engine, tenant, "also", {})
    (_, _, second) = (await f.delivered())[1]
    assert second == {"CREATE": {"sleep:0.1s": [{"sleep_duration": "0.1s"}], "also": [{}]}}


async def test_results_of_concurrent_waits_replay_in_the_order_they_were_satisfied(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(event("a"))
    await f.wait(event("b"))
    await push(engine, tenant, "b", {"n": "b"})  # node 2 first
    await push(engine, tenant, "a", {"n": "a"})
    assert [node for _, node, _ in await f.delivered()] == [2, 1]

    await restore_to_new_invocation(f)
    await f.wait(event("a"))
    # node 1's result waits until the replay asks for node 2, which was satisfied first
    assert await f.delivered() == []
    await f.wait(event("b"))
    assert [node for _, node, _ in await f.delivered()] == [2, 1]


# -- children --------------------------------------------------------------------------------


async def test_a_child_spawn_is_one_child_across_invocations(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    ((ref, child_run),) = await f.spawn(f.child_request(child_key="only", input={"n": 1}))
    assert ref.node_id == 1

    await restore_to_new_invocation(f)
    ((again, same_run),) = await f.spawn(f.child_request(child_key="only", input={"n": 1}))
    assert (again.node_id, same_run) == (1, child_run)
    children = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM workflow_runs WHERE parent_task_id = $1", f.task_id
    )
    assert children == 1
    await finish_child(f, child_run, '{"done": true}')
    await eventually(lambda: delivered_nodes(f, [1]))
    assert await f.delivered() == [(1, 1, {"done": True})]


async def test_a_new_node_spawning_a_known_child_key_reuses_the_finished_child(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    ((_, child_run),) = await f.spawn(f.child_request(child_key="k"))
    await finish_child(f, child_run, '{"v": 7}')
    await eventually(lambda: delivered_nodes(f, [1]))
    # the same spawn at a new node (not a replay): deduplicated onto the finished child,
    # whose end will never be reported again, so its node is satisfied at once
    ((ref, same_run),) = await f.spawn(f.child_request(child_key="k"))
    assert (ref.node_id, same_run) == (2, child_run)
    assert [(n, r) for _, n, r in await f.delivered()] == [(1, {"v": 7}), (2, {"v": 7})]


async def test_a_failed_child_is_delivered_as_an_error(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    ((_, child_run),) = await f.spawn(f.child_request())
    message = await f.started(child_run)
    await engine.lifecycle.failed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, error="child broke"
    )
    await eventually(lambda: delivered_nodes(f, [1]))
    ready = await engine.durable.ready(tenant_id=tenant, task_id=f.task_id)
    assert ready is not None
    (completion,) = ready.completions
    assert (completion.is_failure, completion.error_message) == (True, "child broke")


# -- non-determinism -------------------------------------------------------------------------


async def test_a_replay_asking_for_something_else_is_non_determinism(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(sleep(30))
    await f.spawn(f.child_request(input={"n": 1}))
    await restore_to_new_invocation(f)

    with pytest.raises(NonDeterminism, match=r"node 1.*MEMO where the log recorded WAIT_FOR"):
        await f.memo(b"k")
    with pytest.raises(NonDeterminism, match=r"node 1.*a different wait_for"):
        await f.wait(sleep(31))
    # a refused request leaves the log as it was: the right one still gets node 1
    assert (await f.wait(sleep(30))).node_id == 1
    with pytest.raises(NonDeterminism, match=r"node 2.*a different run"):
        await f.spawn(f.child_request(input={"n": 2}))
    with pytest.raises(NonDeterminism, match="node 2"):
        await f.spawn(f.child_request(workflow_name=f.name))
    ((ref, _),) = await f.spawn(f.child_request(input={"n": 1}))
    assert ref.node_id == 2
    runs = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM workflow_runs WHERE parent_task_id = $1", f.task_id
    )
    assert runs == 1


async def test_a_request_from_an_old_invocation_or_another_worker_is_refused(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(sleep(30))
    old = f.invocation
    await restore_to_new_invocation(f)
    with pytest.raises(StaleInvocation):
        await engine.durable.wait_for(
            tenant_id=tenant,
            worker_id=f.worker.worker_id,
            task_id=f.task_id,
            invocation=old,
            conditions=[sleep(30)],
            label=None,
        )
    with pytest.raises(DurableRequestError, match="is not held by worker"):
        await engine.durable.memo(
            tenant_id=tenant,
            worker_id="someone-else",
            task_id=f.task_id,
            invocation=f.invocation,
            key=b"k",
        )
    with pytest.raises(DurableRequestError, match="not one of them"):
        await engine.durable.memo(
            tenant_id=tenant,
            worker_id=f.worker.worker_id,
            task_id=f.task_id,
            invocation=f.invocation + 1,
            key=b"k",
        )
    with pytest.raises(DurableTaskNotFound):
        await engine.durable.memo(
            tenant_id=tenant,
            worker_id=f.worker.worker_id,
            task_id="00000000-0000-0000-0000-000000000000",
            invocation=1,
            key=b"k",
        )
    polled = await engine.durable.poll(
        tenant_id=tenant, waiting=[Ref(f.task_id, old, 1, 1), Ref(f.task_id, f.invocation, 1, 1)]
    )
    assert polled.stale == [(f.task_id, old)]
    # none of the refusals took a node: the replay's first request still gets node 1
    assert (await f.wait(sleep(30))).node_id == 1


async def test_a_poll_names_the_tasks_whose_waited_nodes_are_satisfied(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    waiting = [await f.wait(event("poll-a")), await f.wait(event("poll-b"))]
    stranger = Ref("00000000-0000-0000-0000-000000000000", 1, 1, 1)
    polled = await engine.durable.poll(tenant_id=tenant, waiting=[*waiting, stranger])
    assert (polled.stale, polled.resend) == ([], {})  # nothing satisfied, the stranger ignored
    await push(engine, tenant, "poll-b", {})
    polled = await engine.durable.poll(tenant_id=tenant, waiting=waiting)
    assert polled.resend == {f.task_id: frozenset({(1, 1), (1, 2)})}
    # another tenant's poll sees none of this task
    other_tenant = await engine.repo.ensure_tenant("tenant-b")
    other = await engine.durable.poll(tenant_id=other_tenant, waiting=waiting)
    assert (other.stale, other.resend) == ([], {})
