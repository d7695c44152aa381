"""Task lifecycle against PostgreSQL: trigger, schedule, complete, fail, retry, DAG advance.

Services are assembled in-process (``harness.Replica``); a worker is a ``WorkerSession``
attached to the replica's hub, and each test reads what reached its outbox and what the
database holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.integration.harness import Replica, drain, next_message, payload

from hewer.engine.services.lifecycle import StaleAttempt
from hewer.engine.services.triggers import TriggerError, TriggerRequest
from hewer.engine.services.workers import ActionKind


def single(name: str = "solo", **task: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [{"readable_id": "run", "action": f"{name}:run", "timeout": "60s", **task}],
    }


DAG = {
    "name": "dag",
    "tasks": [
        {"readable_id": "a", "action": "dag:a", "timeout": "60s"},
        {"readable_id": "b", "action": "dag:b", "parents": ["a"]},
        {"readable_id": "c", "action": "dag:c", "parents": ["a", "b"]},
    ],
}
DAG_ACTIONS = ["dag:a", "dag:b", "dag:c"]

WITH_HANDLER = {
    "name": "guarded",
    "tasks": [
        {"readable_id": "a", "action": "guarded:a"},
        {"readable_id": "b", "action": "guarded:b", "parents": ["a"]},
    ],
    "on_failure_task": {"readable_id": "cleanup", "action": "guarded:cleanup"},
}
HANDLER_ACTIONS = ["guarded:a", "guarded:b", "guarded:cleanup"]


# -- the happy paths ------------------------------------------------------------------------


async def test_standalone_task_runs_and_completes_its_run(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    worker = await engine.connect_worker(tenant, ["solo:run"], slots={"default": 1})
    run_id = await engine.trigger(tenant, "solo", {"x": 1}, additional_metadata={"source": "test"})
    assert (await engine.run_row(run_id))["status"] == "QUEUED"

    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert message.kind is ActionKind.START
    # a single-task run shares its id with its task, as Hatchet's does
    assert (message.task_id, message.workflow_run_id) == (run_id, run_id)
    assert (message.action_id, message.readable_id, message.retry_count) == ("solo:run", "run", 0)
    assert payload(message)["input"] == {"x": 1}
    assert payload(message)["parents"] == {}
    assert message.additional_metadata == '{"source": "test"}'
    task = await engine.task_row(run_id)
    assert (task["status"], str(task["worker_id"]), task["slot_held"]) == (
        "RUNNING",
        worker.worker_id,
        True,
    )
    assert (await engine.run_row(run_id))["status"] == "RUNNING"

    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=run_id, retry_count=0, output='{"ok": true}'
    )
    task = await engine.task_row(run_id)
    assert (task["status"], task["output"], task["slot_held"]) == (
        "COMPLETED",
        '{"ok": true}',
        False,
    )
    run = await engine.run_row(run_id)
    assert run["status"] == "COMPLETED"
    assert run["finished_at"] is not None
    assert await engine.events(run_id) == [("QUEUED", 0), ("ASSIGNED", 0), ("COMPLETED", 0)]
    assert not await engine.scheduler.run_round(tenant)


async def test_dag_children_get_their_parents_outputs(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, DAG)
    worker = await engine.connect_worker(tenant, DAG_ACTIONS)
    run_id = await engine.trigger(tenant, "dag", {"order": 7})
    assert set(await engine.tasks_by_name(run_id)) == {"a"}

    await engine.scheduler.run_round(tenant)
    (a,) = drain(worker)
    assert a.readable_id == "a"
    assert a.task_id != run_id
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=a.task_id, retry_count=0, output='{"n": 1}'
    )
    tasks = await engine.tasks_by_name(run_id)
    assert set(tasks) == {"a", "b"}  # c still waits for b
    # queued; or assigned already, by the hop itself when the last round drained the queue
    assert tasks["b"]["status"] in ("QUEUED", "RUNNING")
    assert (await engine.run_row(run_id))["status"] == "RUNNING"

    await engine.scheduler.run_round(tenant)
    (b,) = drain(worker)
    assert b.readable_id == "b"
    assert payload(b)["input"] == {"order": 7}
    assert payload(b)["parents"] == {"a": {"n": 1}}
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=b.task_id, retry_count=0, output='{"m": 2}'
    )

    await engine.scheduler.run_round(tenant)
    (c,) = drain(worker)
    assert c.readable_id == "c"
    assert payload(c)["parents"] == {"a": {"n": 1}, "b": {"m": 2}}
    assert (await engine.run_row(run_id))["finished_at"] is None
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=c.task_id, retry_count=0, output="{}"
    )
    run = await engine.run_row(run_id)
    assert (run["status"], run["finished_at"] is not None) == ("COMPLETED", True)


async def test_a_worker_never_holds_more_tasks_than_its_slots(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    worker = await engine.connect_worker(tenant, ["solo:run"], slots={"default": 2})
    for i in range(5):
        await engine.trigger(tenant, "solo", {"i": i})

    assert await engine.scheduler.run_round(tenant)
    first = drain(worker)
    assert len(first) == 2
    assert not await engine.scheduler.run_round(tenant)  # full: nothing more
    assert drain(worker) == []
    held = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE worker_id = $1 AND slot_held", worker.worker_id
    )
    assert held == 2

    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=first[0].task_id, retry_count=0, output="{}"
    )
    assert await engine.scheduler.run_round(tenant)
    assert len(drain(worker)) == 1
    # FIFO: the oldest runs went first
    inputs = [payload(m)["input"]["i"] for m in first]
    assert inputs == [0, 1]


async def test_higher_priority_runs_are_assigned_first(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    worker = await engine.connect_worker(tenant, ["solo:run"], slots={"default": 1})
    await engine.trigger(tenant, "solo", {"name": "low"}, priority=1)
    urgent = await engine.trigger(tenant, "solo", {"name": "high"}, priority=3)
    await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert message.task_id == urgent
    assert message.priority == 3


async def test_desired_worker_receives_the_run(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    workers = [await engine.connect_worker(tenant, ["solo:run"]) for _ in range(3)]
    target = workers[1]
    for _ in range(3):
        await engine.trigger(tenant, "solo", desired_worker_id=target.worker_id)
    await engine.scheduler.run_round(tenant)
    assert [len(drain(w)) for w in workers] == [0, 3, 0]


async def test_only_workers_for_the_action_get_work(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    other = await engine.connect_worker(tenant, ["else:run"])
    assert not await engine.scheduler.run_round(tenant)
    run_id = await engine.trigger(tenant, "solo")
    assert not await engine.scheduler.run_round(tenant)
    assert drain(other) == []
    assert (await engine.task_row(run_id))["status"] == "QUEUED"


# -- failures and retries ---------------------------------------------------------------------


async def test_retries_wait_for_their_backoff(engine: Replica, tenant: str) -> None:
    # factor 5: 5 s then 25 s, long enough that "not yet" holds even on a loaded machine
    await engine.register(tenant, single(retries=2, backoff_factor=5))
    worker = await engine.connect_worker(tenant, ["solo:run"])
    run_id = await engine.trigger(tenant, "solo")

    for attempt, expected_delay in ((0, 5.0), (1, 25.0)):
        await engine.scheduler.run_round(tenant)
        (message,) = drain(worker)
        assert message.retry_count == attempt
        await engine.lifecycle.failed(
            tenant_id=tenant, task_id=run_id, retry_count=attempt, error=f"boom {attempt}"
        )
        task = await engine.task_row(run_id)
        assert (task["status"], task["retry_count"], task["app_retry_count"]) == (
            "QUEUED",
            attempt + 1,
            attempt + 1,
        )
        assert task["worker_id"] is None
        assert not task["slot_held"]
        # the retry and its queue item are written in one transaction: same now()
        delay = await engine.repo.pool.fetchval(
            "SELECT extract(epoch FROM q.available_at - e.created_at) "
            "FROM queue_items q JOIN task_events e ON e.task_id = q.task_id "
            "WHERE q.task_id = $1 AND e.event_type = 'RETRYING' AND e.retry_count = $2",
            run_id,
            attempt + 1,
        )
        assert float(delay) == expected_delay
        # not claimable before its time...
        assert not await engine.scheduler.run_round(tenant)
        assert drain(worker) == []
        # ...and claimable once it has come
        await engine.repo.pool.execute(
            "UPDATE queue_items SET available_at = now() - interval '1 second' WHERE task_id = $1",
            run_id,
        )

    await engine.scheduler.run_round(tenant)
    (last,) = drain(worker)
    assert last.retry_count == 2
    await engine.lifecycle.failed(tenant_id=tenant, task_id=run_id, retry_count=2, error="final")

    task = await engine.task_row(run_id)
    assert (task["status"], task["error"], task["retry_count"]) == ("FAILED", "final", 2)
    assert (await engine.run_row(run_id))["status"] == "FAILED"
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM queue_items") == 0
    assert await engine.events(run_id) == [
        ("QUEUED", 0),
        ("ASSIGNED", 0),
        ("FAILED", 0),
        ("RETRYING", 1),
        ("ASSIGNED", 1),
        ("FAILED", 1),
        ("RETRYING", 2),
        ("ASSIGNED", 2),
        ("FAILED", 2),
    ]


async def test_retry_without_backoff_is_claimable_at_once(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single(retries=1))
    worker = await engine.connect_worker(tenant, ["solo:run"])
    run_id = await engine.trigger(tenant, "solo")
    await engine.scheduler.run_round(tenant)
    drain(worker)
    await engine.lifecycle.failed(tenant_id=tenant, task_id=run_id, retry_count=0, error="oops")
    assert await engine.scheduler.run_round(tenant)
    (retry,) = drain(worker)
    assert retry.retry_count == 1


async def test_non_retryable_failure_fails_at_once(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single(retries=3))
    worker = await engine.connect_worker(tenant, ["solo:run"])
    run_id = await engine.trigger(tenant, "solo")
    await engine.scheduler.run_round(tenant)
    drain(worker)
    await engine.lifecycle.failed(
        tenant_id=tenant, task_id=run_id, retry_count=0, error="fatal", non_retryable=True
    )
    task = await engine.task_row(run_id)
    assert (task["status"], task["retry_count"], task["error"]) == ("FAILED", 0, "fatal")
    assert (await engine.run_row(run_id))["status"] == "FAILED"
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM queue_items") == 0
    assert not await engine.scheduler.run_round(tenant)


async def test_failure_cancels_downstream_and_runs_on_failure(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, WITH_HANDLER)
    worker = await engine.connect_worker(tenant, HANDLER_ACTIONS)
    run_id = await engine.trigger(tenant, "guarded", {"k": "v"})
    await engine.scheduler.run_round(tenant)
    (a,) = drain(worker)
    await engine.lifecycle.failed(tenant_id=tenant, task_id=a.task_id, retry_count=0, error="boom")

    tasks = await engine.tasks_by_name(run_id)
    assert {n: t["status"] for n, t in tasks.items()} == {
        "a": "FAILED",
        "b": "CANCELLED",
        "cleanup": "QUEUED",
    }
    run = await engine.run_row(run_id)
    assert (run["status"], run["finished_at"]) == ("RUNNING", None)

    await engine.scheduler.run_round(tenant)
    (cleanup,) = drain(worker)
    assert cleanup.readable_id == "cleanup"
    assert payload(cleanup)["step_run_errors"] == {"a": "boom"}
    assert payload(cleanup)["input"] == {"k": "v"}
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=cleanup.task_id, retry_count=0, output='{"cleaned": true}'
    )
    run = await engine.run_row(run_id)
    assert run["status"] == "FAILED"
    assert run["finished_at"] is not None
    assert await engine.events(str(tasks["b"]["id"])) == [("CANCELLED", 0)]


async def test_on_failure_is_skipped_when_the_run_succeeds(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, WITH_HANDLER)
    worker = await engine.connect_worker(tenant, HANDLER_ACTIONS)
    run_id = await engine.trigger(tenant, "guarded")
    for expected in ("a", "b"):
        await engine.scheduler.run_round(tenant)
        (message,) = drain(worker)
        assert message.readable_id == expected
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
        )
    cleanup = (await engine.tasks_by_name(run_id))["cleanup"]
    assert (cleanup["status"], cleanup["is_skipped"]) == ("COMPLETED", True)
    assert (await engine.run_row(run_id))["status"] == "COMPLETED"
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []


# -- cancellation and replay -------------------------------------------------------------------


async def test_cancelling_a_running_task_tells_its_worker(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, DAG)
    worker = await engine.connect_worker(tenant, DAG_ACTIONS)
    run_id = await engine.trigger(tenant, "dag")
    await engine.scheduler.run_round(tenant)
    (a,) = drain(worker)

    cancelled = await engine.control.cancel(tenant_id=tenant, external_ids=[run_id])
    assert cancelled == [a.task_id]
    cancel = await next_message(worker)  # forwarded over the bus to the stream's replica
    assert cancel.kind is ActionKind.CANCEL
    assert (cancel.task_id, cancel.retry_count, cancel.workflow_run_id) == (a.task_id, 0, run_id)

    tasks = await engine.tasks_by_name(run_id)
    assert {n: t["status"] for n, t in tasks.items()} == {
        "a": "CANCELLED",
        "b": "CANCELLED",
        "c": "CANCELLED",
    }
    assert not tasks["a"]["slot_held"]
    run = await engine.run_row(run_id)
    assert (run["status"], run["finished_at"] is not None) == ("CANCELLED", True)

    # the worker's late result changes nothing
    with pytest.raises(StaleAttempt):
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=a.task_id, retry_count=0, output="{}"
        )
    assert (await engine.task_row(a.task_id))["status"] == "CANCELLED"
    # nothing left to cancel
    assert await engine.control.cancel(tenant_id=tenant, external_ids=[run_id]) == []


async def test_cancelling_a_queued_task_dequeues_it(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    run_id = await engine.trigger(tenant, "solo")
    assert await engine.control.cancel(tenant_id=tenant, external_ids=[run_id]) == [run_id]
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM queue_items") == 0
    worker = await engine.connect_worker(tenant, ["solo:run"])
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    assert (await engine.run_row(run_id))["status"] == "CANCELLED"


async def test_replay_reruns_a_finished_run(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, DAG)
    worker = await engine.connect_worker(tenant, DAG_ACTIONS)
    run_id = await engine.trigger(tenant, "dag")

    async def run_to_completion(expected_attempt: int) -> dict[str, str]:
        ids: dict[str, str] = {}
        for name in ("a", "b", "c"):
            await engine.scheduler.run_round(tenant)
            (message,) = drain(worker)
            assert message.readable_id == name
            assert message.retry_count == (expected_attempt if name == "a" else 0)
            ids[name] = message.task_id
            await engine.lifecycle.completed(
                tenant_id=tenant,
                task_id=message.task_id,
                retry_count=message.retry_count,
                output=f'{{"attempt": {expected_attempt}}}',
            )
        return ids

    first = await run_to_completion(0)
    assert (await engine.run_row(run_id))["status"] == "COMPLETED"

    replayed = await engine.control.replay(tenant_id=tenant, external_ids=[run_id])
    assert replayed == [first["a"]]
    tasks = await engine.tasks_by_name(run_id)
    assert set(tasks) == {"a"}  # downstream removed, recreated as the run advances
    assert (tasks["a"]["status"], tasks["a"]["retry_count"], tasks["a"]["output"]) == (
        "QUEUED",
        1,
        None,
    )
    run = await engine.run_row(run_id)
    assert (run["status"], run["finished_at"]) == ("QUEUED", None)

    second = await run_to_completion(1)
    assert second["a"] == first["a"]
    assert second["b"] != first["b"]
    run = await engine.run_row(run_id)
    assert (run["status"], run["finished_at"] is not None) == ("COMPLETED", True)
    assert (await engine.tasks_by_name(run_id))["c"]["output"] == '{"attempt": 1}'


async def test_replay_of_an_active_run_does_nothing(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    run_id = await engine.trigger(tenant, "solo")
    assert await engine.control.replay(tenant_id=tenant, external_ids=[run_id]) == []
    assert (await engine.task_row(run_id))["retry_count"] == 0


# -- child runs ---------------------------------------------------------------------------------


async def test_child_spawns_are_deduplicated_and_inherit_metadata(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, single("parent"))
    await engine.register(tenant, single("child"))
    worker = await engine.connect_worker(tenant, ["parent:run", "child:run"])
    parent_run = await engine.trigger(
        tenant,
        "parent",
        additional_metadata={"team": "core", "hatchet__internal": "not inherited"},
    )
    await engine.scheduler.run_round(tenant)
    drain(worker)
    parent_task = parent_run  # single-task run

    async def spawn(**fields: Any) -> str:
        return await engine.trigger(tenant, "child", {"c": 1}, parent_task_id=parent_task, **fields)

    first = await spawn(child_index=0, additional_metadata={"extra": 1})
    again = await spawn(child_index=0, additional_metadata={"extra": 2})
    assert again == first
    second = await spawn(child_index=1)
    keyed = await spawn(child_index=5, child_key="k")
    keyed_again = await spawn(child_index=6, child_key="k")
    assert keyed_again == keyed
    assert len({first, second, keyed}) == 3
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM workflow_runs") == 4

    child = await engine.run_row(first)
    assert child["additional_metadata"] == {
        "team": "core",
        "extra": 1,
        "hatchet__parent_workflow_run_id": parent_run,
        "hatchet__parent_step_run_id": parent_task,
    }
    assert (str(child["parent_task_id"]), str(child["parent_run_id"])) == (parent_task, parent_run)
    assert child["child_index"] == 0

    await engine.scheduler.run_round(tenant)
    messages = {m.task_id: m for m in drain(worker)}
    assert set(messages) == {first, second, keyed}
    assert (messages[first].parent_task_id, messages[first].child_index) == (parent_task, 0)
    assert messages[keyed].child_key == "k"


async def test_duplicate_spawns_in_one_bulk_call_create_one_run(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, single("parent"))
    await engine.register(tenant, single("child"))
    parent = await engine.trigger(tenant, "parent")
    request = TriggerRequest(workflow_name="child", input={}, parent_task_id=parent, child_index=3)
    ids = await engine.triggers.trigger(tenant_id=tenant, requests=[request, request])
    assert ids[0] == ids[1]
    assert (
        await engine.repo.pool.fetchval(
            "SELECT count(*) FROM workflow_runs WHERE parent_task_id = $1", parent
        )
        == 1
    )
    assert (
        await engine.repo.pool.fetchval(
            "SELECT count(*) FROM tasks WHERE workflow_run_id = $1", ids[0]
        )
        == 1
    )


async def test_trigger_refusals_create_nothing(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single())
    with pytest.raises(TriggerError, match="not found"):
        await engine.trigger(tenant, "missing")
    with pytest.raises(TriggerError, match="parent task"):
        await engine.trigger(tenant, "solo", parent_task_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(TriggerError, match="priority"):
        await engine.trigger(tenant, "solo", priority=4)
    with pytest.raises(TriggerError, match="at most"):
        await engine.triggers.trigger(
            tenant_id=tenant, requests=[TriggerRequest("solo", {})] * 1001
        )
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM workflow_runs") == 0


async def test_replaying_one_task_reruns_it_and_what_follows(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, DAG)
    worker = await engine.connect_worker(tenant, DAG_ACTIONS)
    run_id = await engine.trigger(tenant, "dag")
    ids: dict[str, str] = {}
    for name in ("a", "b", "c"):
        await engine.scheduler.run_round(tenant)
        (message,) = drain(worker)
        ids[name] = message.task_id
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=message.task_id, retry_count=0, output=f'"{name}0"'
        )

    assert await engine.control.replay(tenant_id=tenant, external_ids=[ids["b"]]) == [ids["b"]]
    tasks = await engine.tasks_by_name(run_id)
    assert set(tasks) == {"a", "b"}  # c, downstream of b, goes; a is kept as it was
    assert (tasks["a"]["status"], tasks["a"]["retry_count"]) == ("COMPLETED", 0)
    assert (tasks["b"]["status"], tasks["b"]["retry_count"]) == ("QUEUED", 1)

    await engine.scheduler.run_round(tenant)
    (b,) = drain(worker)
    assert (b.task_id, b.retry_count) == (ids["b"], 1)
    assert payload(b)["parents"] == {"a": "a0"}
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=b.task_id, retry_count=1, output='"b1"'
    )
    await engine.scheduler.run_round(tenant)
    (c,) = drain(worker)
    assert payload(c)["parents"] == {"a": "a0", "b": "b1"}


# -- lock order ----------------------------------------------------------------------------


async def test_cancel_waits_for_a_claim_in_flight_instead_of_deadlocking(
    engine: Replica, tenant: str
) -> None:
    """A claim locks the queue item, then updates the task; cancel must lock in that order.
    With the task locked first, the claim's update and the cancel's dequeue waited on each
    other (PostgreSQL broke it with a deadlock error, a 500 on a bulk cancel)."""
    await engine.register(tenant, single())
    run_id = await engine.trigger(tenant, "solo", {})
    async with engine.repo.pool.acquire() as claimer:
        claim = claimer.transaction()
        await claim.start()
        await claimer.execute("SELECT id FROM queue_items WHERE task_id = $1 FOR UPDATE", run_id)
        cancel = asyncio.create_task(
            engine.lifecycle.cancel(tenant_id=tenant, task_ids=[run_id], reason="test")
        )
        await asyncio.sleep(0.3)  # the cancel is now waiting on a lock
        assert not cancel.done()
        # the claim goes on to assign: it must not wait for the cancel
        await asyncio.wait_for(
            claimer.execute(
                "UPDATE tasks SET status = 'RUNNING', slot_held = true WHERE id = $1", run_id
            ),
            timeout=5,
        )
        await claimer.execute("DELETE FROM queue_items WHERE task_id = $1", run_id)
        await claim.commit()
    assert await asyncio.wait_for(cancel, timeout=5) == [run_id]
    task = await engine.task_row(run_id)
    assert (task["status"], task["slot_held"]) == ("CANCELLED", False)
