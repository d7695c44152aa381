"""The DAG hop: a parent's completion creates, queues and announces its children in a few
statements (services/lifecycle.py, services/enqueue.py ``NewTasks``, query ``create_tasks``).

What folding the hop must not lose: the children's queue items and first events, the paused
flag of a paused workflow, the NOTIFY that tells other replicas (it goes with the COMMIT),
the run lock that complete_tasks now takes (a sibling's progression must read the run after
it), and the number of round trips itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
from tests.integration.harness import FAN_IN, Replica, drain

from hewer.engine.services.workers import ActionMessage, WorkerSession

CHAIN = {
    "name": "chain",
    "tasks": [
        {"readable_id": "a", "action": "chain:a"},
        {"readable_id": "b", "action": "chain:b", "parents": ["a"]},
        {"readable_id": "c", "action": "chain:c", "parents": ["b"]},
    ],
}
ACTIONS = ["chain:a", "chain:b", "chain:c"]

# BEGIN, complete_tasks (which locks the DAG run), run_states, create_tasks (tasks, queue
# items and events), COMMIT with the NOTIFY (db/transactions.py); it was 10 before the fold
HOP_STATEMENTS = 5
# ... and when nothing older waits, the hop assigns the child before its COMMIT: the capacity
# read (on the pool's other connection), claim_queue_items and assign_tasks
ASSIGNING_HOP_STATEMENTS = HOP_STATEMENTS + 3
# the last task: set_runs_status instead of create_tasks
LAST_HOP_STATEMENTS = 5


@asynccontextmanager
async def logged_statements(replica: Replica) -> Any:
    """Every statement the replica's pool sends while the block runs (the pool of a
    ``pool_size=2`` replica is exactly the two connections held here)."""
    statements: list[str] = []

    def log(record: Any) -> None:
        statements.append(record.query)

    pool = replica.repo.pool
    async with pool.acquire() as first, pool.acquire() as second:
        for conn in (first, second):
            conn.add_query_logger(log)
    try:
        yield statements
    finally:
        async with pool.acquire() as first, pool.acquire() as second:
            for conn in (first, second):
                conn.remove_query_logger(log)


@contextmanager
def collected(replica: Replica, kind: str) -> Iterator[list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    replica.bus.subscribe(kind, messages.append)
    yield messages


async def complete(replica: Replica, tenant: str, task_id: str) -> None:
    await replica.lifecycle.completed(
        tenant_id=tenant, task_id=task_id, retry_count=0, output='{"ok": 1}'
    )


async def wait_for(condition: Any, *, within: float = 5.0) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def started_chain(replica: Replica) -> tuple[str, str, WorkerSession, ActionMessage]:
    """A tenant with CHAIN and a worker, a run of it, and its first task assigned by a round
    that drained the queue (it saw the trigger's wake-up first, as the scheduler loop does).
    Returns the tenant, the run, the worker and the first task's message."""
    tenant = await replica.repo.ensure_tenant("tenant-a")
    await replica.register(tenant, CHAIN)
    worker = await replica.connect_worker(tenant, ACTIONS)
    with collected(replica, "queue") as own_wakeups:
        run_id = await replica.trigger(tenant, "chain")
        await wait_for(lambda: bool(own_wakeups))
    assert await replica.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert replica.scheduler.drained(tenant)  # the round claimed less than it asked for
    return tenant, run_id, worker, message


async def test_a_hop_assigns_the_child_itself_and_tells_the_other_replica(dsn: str) -> None:
    writer, other = [await Replica.start(dsn, pool_size=2) for _ in range(2)]
    try:
        tenant, run_id, worker, message = await started_chain(writer)
        with collected(other, "queue") as wakeups, collected(other, "run") as finished:
            for child in "bc":
                before = len(wakeups)
                async with logged_statements(writer) as statements:
                    await complete(writer, tenant, message.task_id)
                assert len(statements) == ASSIGNING_HOP_STATEMENTS, statements
                assert "claim" in " ".join(statements) and "COMMIT" in statements[-1]
                # sent with the commit, no round in between
                (message,) = drain(worker)
                assert message.readable_id == child
                # the child's wake-up still reached the replica that did not write it
                await wait_for(lambda seen=before: len(wakeups) > seen)
                assert wakeups[-1] == {"t": "queue", "tenant": tenant, "delay": 0}
                assert writer.scheduler.drained(tenant)
            async with logged_statements(writer) as statements:
                await complete(writer, tenant, message.task_id)
            assert len(statements) == LAST_HOP_STATEMENTS, statements
            await wait_for(lambda: bool(finished))
        assert finished == [{"t": "run", "run": run_id, "status": "COMPLETED"}]

        tasks = await writer.tasks_by_name(run_id)
        assert {name: row["status"] for name, row in tasks.items()} == dict.fromkeys(
            "abc", "COMPLETED"
        )
        for name in "bc":  # created QUEUED once, assigned once, run once
            events = await writer.events(str(tasks[name]["id"]))
            assert events == [("QUEUED", 0), ("ASSIGNED", 0), ("COMPLETED", 0)]
        assert await writer.repo.pool.fetchval("SELECT count(*) FROM queue_items") == 0
    finally:
        for replica in (writer, other):
            await replica.close()


async def test_a_hop_leaves_the_child_to_the_round_when_older_work_waits(dsn: str) -> None:
    replica = await Replica.start(dsn, pool_size=2)
    try:
        tenant, first, worker, a = await started_chain(replica)
        # another run is queued after the round: the queue is not known to be drained
        second = await replica.trigger(tenant, "chain")
        await wait_for(lambda: not replica.scheduler.drained(tenant))
        async with logged_statements(replica) as statements:
            await complete(replica, tenant, a.task_id)
        assert len(statements) == HOP_STATEMENTS, statements
        assert drain(worker) == []
        # the round takes both, in queue order: the second run's first task, then the child
        assert await replica.scheduler.run_round(tenant)
        taken = [(m.workflow_run_id, m.readable_id) for m in drain(worker)]
        assert sorted(taken) == sorted([(first, "b"), (second, "a")])
    finally:
        await replica.close()


async def test_a_child_of_a_paused_workflow_is_set_aside(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, CHAIN)
    worker = await engine.connect_worker(tenant, ACTIONS)
    run_id = await engine.trigger(tenant, "chain")
    assert await engine.scheduler.run_round(tenant)
    (a,) = drain(worker)
    workflow_id = str(await pool.fetchval("SELECT id FROM workflows WHERE name = 'chain'"))
    assert await engine.repo.pause_workflow(
        tenant_id=tenant,
        workflow_id=workflow_id,
        queue_ttl_seconds=600,
        cron_behavior="QUEUE",
        scheduled_behavior="QUEUE",
    )
    await complete(engine, tenant, a.task_id)

    b = (await engine.tasks_by_name(run_id))["b"]
    item = await pool.fetchrow(
        "SELECT paused, pause_expires_at > now() AS expires_later, action_id, retry_count "
        "FROM queue_items WHERE task_id = $1",
        b["id"],
    )
    assert item is not None
    assert dict(item) == {
        "paused": True,
        "expires_later": True,
        "action_id": "chain:b",
        "retry_count": 0,
    }
    assert not await engine.scheduler.run_round(tenant)
    assert await engine.events(str(b["id"])) == [("QUEUED", 0)]


async def test_a_sibling_completion_waits_for_the_run_lock_then_creates_the_child_once(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, FAN_IN)
    worker = await engine.connect_worker(tenant, ["fan:left", "fan:right", "fan:join"])
    run_id = await engine.trigger(tenant, "fan-in")
    assert await engine.scheduler.run_round(tenant)
    parents = {m.readable_id: m.task_id for m in drain(worker)}
    repo = engine.repo
    async with repo.pool.acquire() as conn, conn.transaction():
        # left's completion as _write_completions writes it, its transaction still open
        await repo.complete_tasks(
            conn,
            task_ids=[parents["left"]],
            retry_counts=[0],
            outputs=["{}"],
            tenant_ids=[tenant],
            reporters=[None],
        )
        right = asyncio.create_task(complete(engine, tenant, parents["right"]))
        await asyncio.sleep(0.3)
        # complete_tasks locked the run: right's completion cannot read the run's tasks yet
        assert not right.done()
    await asyncio.wait_for(right, timeout=5)

    # right's progression saw left COMPLETED (read after the lock): the join, once
    join = (await engine.tasks_by_name(run_id))["join"]
    assert join["status"] == "QUEUED"
    assert await engine.events(str(join["id"])) == [("QUEUED", 0)]
    assert (
        await repo.pool.fetchval("SELECT count(*) FROM queue_items WHERE task_id = $1", join["id"])
        == 1
    )


async def test_a_single_task_completion_is_one_write_between_begin_and_commit(
    dsn: str,
) -> None:
    replica = await Replica.start(dsn, pool_size=2)
    try:
        tenant = await replica.repo.ensure_tenant("tenant-a")
        await replica.register(
            tenant, {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run"}]}
        )
        worker = await replica.connect_worker(tenant, ["solo:run"])
        await replica.trigger(tenant, "solo")
        assert await replica.scheduler.run_round(tenant)
        (message,) = drain(worker)
        async with logged_statements(replica) as statements:
            await complete(replica, tenant, message.task_id)
        # BEGIN, complete_tasks (which also finishes the run), COMMIT with the NOTIFY
        assert len(statements) == 3, statements
        assert "pg_notify" in statements[-1] and statements[-1].endswith("COMMIT")
    finally:
        await replica.close()


async def test_a_hop_claims_only_its_own_children(dsn: str) -> None:
    """The hop's claim holds its own runs locked: it must not take an item of another run
    (another replica's completion may hold that run and be claiming one of ours: a
    deadlock that PostgreSQL would break only after a second). An item whose wake-up this
    replica has not heard yet is left to the rounds."""
    writer, other = [await Replica.start(dsn, pool_size=2) for _ in range(2)]
    try:
        tenant, _, worker, a = await started_chain(writer)
        await writer.bus.close()  # the writer hears nothing more: still believes it drained
        second = await other.trigger(tenant, "chain")
        await complete(writer, tenant, a.task_id)
        (child,) = drain(worker)
        assert child.readable_id == "b"
        waiting = (await writer.tasks_by_name(second))["a"]
        assert waiting["status"] == "QUEUED"
    finally:
        for replica in (writer, other):
            await replica.close()
