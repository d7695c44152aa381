"""Durable tasks off their worker, against PostgreSQL: eviction frees the slot and a met
wait restores the task (a new invocation that replays the log); REST/gRPC restore; cancel
of an evicted task; resetting a task from a node (a new branch of its log).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from tests.integration.durable_flow import Flow, event, flow, push, queue_items, sleep
from tests.integration.harness import Replica, drain

from hewer.engine.services.durable import DurableRequestError, DurableTaskNotFound

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


async def test_a_restored_task_keeps_its_concurrency_slot_and_queues_at_once(
    engine: Replica, tenant: str
) -> None:
    """Eviction keeps the task's concurrency slot (like its retry count); going through
    admission again on restore left it waiting for the slot it held itself."""
    name = "durable-keyed"
    await engine.register(
        tenant,
        {
            "name": name,
            "tasks": [
                {
                    "readable_id": "d",
                    "action": f"{name}:d",
                    "is_durable": True,
                    "concurrency": [
                        {
                            "expression": "'one'",
                            "max_runs": 1,
                            "limit_strategy": "GROUP_ROUND_ROBIN",
                        }
                    ],
                }
            ],
        },
    )
    worker = await engine.connect_worker(tenant, [f"{name}:d"], slots={"durable": 5})
    f = Flow(engine=engine, tenant=tenant, worker=worker, name=name)
    f.run_id = f.task_id = await engine.trigger(tenant, name)
    await engine.admission.run_pass(tenant)
    await f.assign()
    await f.wait(event("never"))
    await f.evict()
    assert await engine.control.restore(tenant_id=tenant, task_id=f.task_id)
    assert (await f.status(), await queue_items(engine, f.task_id)) == ("QUEUED", 1)
    slots = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM concurrency_slots WHERE holder_id = $1", f.task_id
    )
    assert slots == 1
    await f.assign()
    assert (await f.status(), f.invocation) == ("RUNNING", 2)
