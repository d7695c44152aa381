"""Durable execution against PostgreSQL: the durable event log (``services/durable.py``).

A durable task's requests (memo, wait, spawn) become log nodes; a replay (a new invocation,
after eviction and restore) walks the log again and gets the recorded results. Waits are
matches (``services/matches.py``) satisfied by the timer loop, event ingestion or a child
run's end; a satisfied node is handed to the running invocation in satisfied order, or
restores an evicted task.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.integration.harness import Replica, drain, eventually

from hewer.engine.core.conditions import Action, Condition, ConditionKind
from hewer.engine.services.durable import (
    DurableRequestError,
    DurableTaskNotFound,
    NonDeterminism,
    Ref,
    StaleInvocation,
)
from hewer.engine.services.events import Events, NewEvent
from hewer.engine.services.triggers import TriggerRequest
from hewer.engine.services.workers import ActionMessage, WorkerSession

_names = itertools.count()


def sleep(seconds: float, *, group: str = "") -> Condition:
    return Condition(
        kind=ConditionKind.SLEEP,
        action=Action.CREATE,
        or_group_id=group or f"g{next(_names)}",
        readable_data_key=f"sleep:{seconds}s",
        sleep_seconds=seconds,
        sleep_for=f"{seconds}s",
    )


def event(
    key: str, *, group: str = "", expression: str = "", scope: str = "", since: str = ""
) -> Condition:
    return Condition(
        kind=ConditionKind.USER_EVENT,
        action=Action.CREATE,
        or_group_id=group or f"g{next(_names)}",
        readable_data_key=key,
        expression=expression,
        event_key=key,
        event_scope=scope,
        events_since=since,
    )


@dataclass
class Flow:
    """One durable task run on a test worker, driven like the SDK drives the stream."""

    engine: Replica
    tenant: str
    worker: WorkerSession
    name: str
    run_id: str = ""
    task_id: str = ""
    invocation: int = 0
    # messages of the worker's outbox not taken yet (a round may start a child too)
    inbox: list[ActionMessage] = field(default_factory=list)

    @property
    def child(self) -> str:
        return f"{self.name}-child"

    async def start(self) -> Flow:
        self.run_id = await self.engine.trigger(self.tenant, self.name)
        await self.assign()
        self.task_id = self.run_id  # a single-task run's task has the run's id
        return self

    async def started(self, run_id: str) -> ActionMessage:
        """The message that started ``run_id`` on the worker, after a round if needed."""
        for _ in range(2):
            self.inbox += drain(self.worker)
            for message in self.inbox:
                if message.workflow_run_id == run_id:
                    self.inbox.remove(message)
                    return message
            await self.engine.scheduler.run_round(self.tenant)
        raise AssertionError(f"run {run_id} was not started")

    async def assign(self) -> None:
        """The next scheduling round hands this task to the worker: a new invocation."""
        message = await self.started(self.run_id)
        assert message.invocation_count is not None
        self.invocation = message.invocation_count

    async def memo(self, key: bytes) -> Any:
        return await self.engine.durable.memo(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            key=key,
        )

    async def wait(self, *conditions: Condition) -> Ref:
        ack = await self.engine.durable.wait_for(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            conditions=conditions,
            label=None,
        )
        return ack.ref

    async def spawn(self, *requests: TriggerRequest) -> list[tuple[Ref, str]]:
        return await self.engine.durable.trigger_runs(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            requests=requests,
        )

    def child_request(self, **fields: Any) -> TriggerRequest:
        return TriggerRequest(
            workflow_name=fields.pop("workflow_name", self.child),
            input=fields.pop("input", {}),
            parent_task_id=self.task_id,
            **fields,
        )

    async def evict(self) -> None:
        await self.engine.durable.evict(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            reason="test eviction",
        )

    async def delivered(self) -> list[tuple[int, int, Any]]:
        """(branch, node, decoded result) the running invocation may be handed now."""
        ready = await self.engine.durable.ready(tenant_id=self.tenant, task_id=self.task_id)
        assert ready is not None, "the task is not running"
        assert ready.invocation == self.invocation
        return [
            (
                c.ref.branch_id,
                c.ref.node_id,
                json.loads(c.result) if c.result else c.error_message,
            )
            for c in ready.completions
        ]

    async def status(self) -> str:
        return str((await self.engine.task_row(self.task_id))["status"])

    async def complete(self, output: str = "{}") -> None:
        row = await self.engine.task_row(self.task_id)
        await self.engine.lifecycle.completed(
            tenant_id=self.tenant,
            task_id=self.task_id,
            retry_count=int(row["retry_count"]),
            output=output,
        )


async def flow(engine: Replica, tenant: str, *, durable_slots: int = 10) -> Flow:
    name = f"durable-{next(_names)}"
    await engine.register(
        tenant,
        {"name": name, "tasks": [{"readable_id": "d", "action": f"{name}:d", "is_durable": True}]},
    )
    await engine.register(
        tenant, {"name": f"{name}-child", "tasks": [{"readable_id": "c", "action": f"{name}:c"}]}
    )
    worker = await engine.connect_worker(
        tenant, [f"{name}:d", f"{name}:c"], slots={"default": 10, "durable": durable_slots}
    )
    return Flow(engine=engine, tenant=tenant, worker=worker, name=name)


async def push(
    engine: Replica, tenant: str, key: str, payload: dict[str, Any], scope: str = ""
) -> None:
    events = Events(repo=engine.repo, triggers=engine.triggers)
    events.matches = engine.matches
    await events.push(
        tenant_id=tenant,
        events=[NewEvent(key=key, payload=payload, additional_metadata={}, scope=scope or None)],
    )


async def queue_items(engine: Replica, task_id: str) -> int:
    count = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM queue_items WHERE task_id = $1", task_id
    )
    return int(count)


async def finish_child(f: Flow, run_id: str, output: str) -> None:
    """Run one child to completion on the flow's worker."""
    message = await f.started(run_id)
    await f.engine.lifecycle.completed(
        tenant_id=f.tenant, task_id=message.task_id, retry_count=0, output=output
    )


async def restore_to_new_invocation(f: Flow) -> None:
    """Evict the current invocation, restore it and assign it again (a replay)."""
    before = f.invocation
    await f.evict()
    await f.engine.control.restore(tenant_id=f.tenant, task_id=f.task_id)
    await f.assign()
    assert f.invocation == before + 1


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
    await eventually(lambda: _delivered_nodes(f, [1]))
    assert await f.delivered() == [(1, 1, {"done": True})]


async def test_a_new_node_spawning_a_known_child_key_reuses_the_finished_child(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    ((_, child_run),) = await f.spawn(f.child_request(child_key="k"))
    await finish_child(f, child_run, '{"v": 7}')
    await eventually(lambda: _delivered_nodes(f, [1]))
    # the same spawn at a new node (not a replay): deduplicated onto the finished child,
    # whose end will never be reported again, so its node is satisfied at once
    ((ref, same_run),) = await f.spawn(f.child_request(child_key="k"))
    assert (ref.node_id, same_run) == (2, child_run)
    assert [(n, r) for _, n, r in await f.delivered()] == [(1, {"v": 7}), (2, {"v": 7})]


async def _delivered_nodes(f: Flow, nodes: list[int]) -> bool:
    return [node for _, node, _ in await f.delivered()] == nodes


async def test_a_failed_child_is_delivered_as_an_error(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    ((_, child_run),) = await f.spawn(f.child_request())
    message = await f.started(child_run)
    await engine.lifecycle.failed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, error="child broke"
    )
    await eventually(lambda: _delivered_nodes(f, [1]))
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
    assert await engine.durable.stale(
        tenant_id=tenant, waiting=[Ref(f.task_id, old, 1, 1), Ref(f.task_id, f.invocation, 1, 1)]
    ) == [(f.task_id, old)]
    # none of the refusals took a node: the replay's first request still gets node 1
    assert (await f.wait(sleep(30))).node_id == 1


# -- eviction and restore --------------------------------------------------------------------


async def test_eviction_frees_the_slot_and_satisfaction_restores_a_new_invocation(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant, durable_slots=1)).start()
    await f.wait(sleep(0.3))
    other_run = await engine.trigger(tenant, f.name)
    assert not await engine.scheduler.run_round(tenant)  # the one durable slot is taken

    await f.evict()
    row = await engine.task_row(f.task_id)
    assert (row["status"], row["slot_held"], row["worker_id"]) == ("EVICTED", False, None)
    assert "DURABLE_EVICTED" in [e for e, _ in await engine.events(f.task_id)]
    assert await engine.scheduler.run_round(tenant)  # the freed slot runs the other task
    (message,) = drain(f.worker)
    assert message.workflow_run_id == other_run
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
    )

    await asyncio.sleep(0.35)
    await engine.timers.run_once()  # the sleep is due: the task is restored
    assert (await f.status(), await queue_items(engine, f.task_id)) == ("QUEUED", 1)
    assert "DURABLE_RESTORING" in [e for e, _ in await engine.events(f.task_id)]
    await f.assign()
    assert f.invocation == 2
    assert (await f.wait(sleep(0.3))).node_id == 1
    assert [node for _, node, _ in await f.delivered()] == [1]
    await f.complete('{"ok": true}')
    assert (await engine.run_row(f.run_id))["status"] == "COMPLETED"


async def test_evicting_after_the_wait_was_satisfied_restores_at_once(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(event("ready"))
    await push(engine, tenant, "ready", {})
    await f.evict()  # the worker's eviction raced the satisfaction
    assert (await f.status(), await queue_items(engine, f.task_id)) == ("QUEUED", 1)


async def test_restore_is_idempotent(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(event("never"))
    await f.evict()
    await f.evict()  # a repeated eviction changes nothing
    assert await engine.control.restore(tenant_id=tenant, task_id=f.task_id)
    assert not await engine.control.restore(tenant_id=tenant, task_id=f.task_id)
    assert (await f.status(), await queue_items(engine, f.task_id)) == ("QUEUED", 1)
    await f.assign()
    assert not await engine.control.restore(tenant_id=tenant, task_id=f.task_id)
    assert (await f.status(), f.invocation) == ("RUNNING", 2)
    restoring = [e for e, _ in await engine.events(f.task_id) if e == "DURABLE_RESTORING"]
    assert len(restoring) == 1


async def test_restore_refuses_what_is_not_a_durable_task_that_can_run_again(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.complete()
    with pytest.raises(DurableRequestError, match="is COMPLETED; only an evicted task"):
        await engine.control.restore(tenant_id=tenant, task_id=f.task_id)
    plain_run = await engine.trigger(tenant, f.child)
    with pytest.raises(DurableRequestError, match="is not a durable task"):
        await engine.control.restore(tenant_id=tenant, task_id=plain_run)
    with pytest.raises(DurableTaskNotFound):
        await engine.control.restore(
            tenant_id=tenant, task_id="00000000-0000-0000-0000-000000000000"
        )


async def test_cancelling_an_evicted_task_ends_it_for_good(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(event("late"))
    await f.evict()
    assert await engine.control.cancel(tenant_id=tenant, external_ids=[f.run_id]) == [f.task_id]
    assert await f.status() == "CANCELLED"
    assert (await engine.run_row(f.run_id))["status"] == "CANCELLED"
    await push(engine, tenant, "late", {})  # the wait is met after all: nothing runs again
    assert (await f.status(), await queue_items(engine, f.task_id)) == ("CANCELLED", 0)
    with pytest.raises(DurableRequestError, match="is CANCELLED"):
        await engine.control.restore(tenant_id=tenant, task_id=f.task_id)


# -- branches --------------------------------------------------------------------------------


async def test_a_branch_from_a_missing_node_or_branch_is_refused(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(sleep(30))
    await f.evict()
    for node_id, branch_id, message in [
        (2, 1, "node 2 does not exist on branch 1"),
        (1, 5, "has no branch 5"),
        (0, 1, "must be positive"),
    ]:
        with pytest.raises(DurableRequestError, match=message):
            await engine.control.branch_durable_task(
                tenant_id=tenant, task_id=f.task_id, node_id=node_id, branch_id=branch_id
            )
    assert (
        await engine.repo.pool.fetchval(
            "SELECT count(*) FROM durable_branches WHERE task_id = $1", f.task_id
        )
        == 0
    )
    assert await f.status() == "EVICTED"  # nothing was replayed


async def test_a_reset_keeps_the_nodes_before_it_and_reexecutes_the_rest(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(event("one"))
    await f.wait(event("two"))
    await push(engine, tenant, "one", {"v": 1})
    await push(engine, tenant, "two", {"v": 2})
    await f.complete()

    branch = await engine.control.branch_durable_task(
        tenant_id=tenant, task_id=f.task_id, node_id=2, branch_id=1
    )
    assert branch == 2
    assert await f.status() == "QUEUED"  # the reset replays the task
    await f.assign()
    assert (await f.wait(event("one"))).branch_id == 1  # node 1 is read from branch 1
    second = await f.wait(event("two"))
    assert (second.branch_id, second.node_id) == (2, 2)  # node 2 runs again
    assert await f.delivered() == [(1, 1, {"CREATE": {"one": [{"v": 1}]}})]
    await push(engine, tenant, "two", {"v": 3})
    assert [(b, n) for b, n, _ in await f.delivered()] == [(1, 1), (2, 2)]


async def test_a_running_task_cannot_be_reset_from_a_node(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(sleep(30))
    with pytest.raises(DurableRequestError, match="is RUNNING; only a finished or evicted"):
        await engine.control.branch_durable_task(
            tenant_id=tenant, task_id=f.task_id, node_id=1, branch_id=1
        )
    # no branch was made: the running invocation goes on writing to branch 1
    assert (await f.wait(sleep(30))).branch_id == 1


async def test_only_the_worker_holding_the_task_may_evict_it(engine: Replica, tenant: str) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(sleep(30))
    someone_else = str(uuid.uuid4())
    with pytest.raises(DurableRequestError, match=f"is not held by worker {someone_else}"):
        await engine.durable.evict(
            tenant_id=tenant,
            worker_id=someone_else,
            task_id=f.task_id,
            invocation=f.invocation,
            reason="not mine",
        )
    row = await engine.task_row(f.task_id)
    assert (row["status"], row["slot_held"]) == ("RUNNING", True)


async def test_a_wait_left_behind_on_an_abandoned_branch_does_not_hold_an_evicted_task(
    engine: Replica, tenant: str
) -> None:
    f = await (await flow(engine, tenant)).start()
    await f.wait(event("one"))
    await f.wait(event("never"))  # node 2: the task was stuck here, so it is reset from it
    await push(engine, tenant, "one", {})
    await f.evict()
    assert await f.status() == "EVICTED"
    await engine.control.branch_durable_task(
        tenant_id=tenant, task_id=f.task_id, node_id=2, branch_id=1
    )
    await f.assign()
    await f.wait(event("one"))
    assert (await f.wait(event("two"))).branch_id == 2
    await push(engine, tenant, "two", {})
    await f.evict()  # the worker's eviction raced node 2's satisfaction on branch 2
    assert (await f.status(), await queue_items(engine, f.task_id)) == ("QUEUED", 1)
    await f.assign()

    # the abandoned wait is met after all: it is no wait of the current branch, so a task
    # evicted meanwhile stays evicted until its own wait is met
    await f.wait(event("one"))
    await f.wait(event("two"))
    await f.wait(event("three"))
    await f.evict()
    await push(engine, tenant, "never", {})
    assert await f.status() == "EVICTED"
    await push(engine, tenant, "three", {})
    assert await f.status() == "QUEUED"
