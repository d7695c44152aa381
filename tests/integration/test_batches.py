"""Batch assignment against PostgreSQL: START_BATCH per batch, one slot, reports per item.

Replicas are assembled in-process (``harness.Replica``) with a :class:`BatchFlusher` each,
wired as ``server.run_engine`` wires it. Simulated workers read START_BATCH messages from
their outboxes and report through :class:`BatchReports`, as SendBatchActionEvent does.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from tests.integration.harness import Replica, drain, eventually

from hewer.engine.db.repository import Record, Repository
from hewer.engine.services.batch_reports import BatchEventKind, BatchItemReport, BatchReports
from hewer.engine.services.batches import BatchFlusher
from hewer.engine.services.triggers import TriggerRequest
from hewer.engine.services.workers import ActionKind, ActionMessage, WorkerSession


def batch_workflow(name: str, **batch: object) -> dict[str, object]:
    return {
        "name": name,
        "tasks": [{"readable_id": "b", "action": f"{name}:b", "retries": 1, "batch": batch}],
    }


@dataclass
class Node:
    replica: Replica
    flusher: BatchFlusher
    reports: BatchReports


@pytest_asyncio.fixture
async def nodes(dsn: str) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    for _ in range(2):
        replica = await Replica.start(dsn, pool_size=8)
        flusher = BatchFlusher(
            repo=replica.repo,
            hub=replica.hub,
            lifecycle=replica.lifecycle,
            engine_id=replica.engine_id,
            assign_lock=replica.scheduler.assign_lock,
        )
        for kind in ("queue", "slots", "resync"):
            replica.bus.subscribe(kind, flusher.on_bus)
        started.append(
            Node(replica, flusher, BatchReports(repo=replica.repo, lifecycle=replica.lifecycle))
        )
    try:
        yield started
    finally:
        for node in started:
            await node.flusher.stop()
            await node.replica.close()


async def connect(node: Node, tenant: str, action: str, *, slots: int) -> WorkerSession:
    session = await node.replica.connect_worker(tenant, [action], slots={"default": slots})
    configs = await node.replica.repo.batch_configs_of_actions(
        tenant_id=tenant, action_ids=[action]
    )
    session.batch_actions = frozenset(configs)
    return session


async def held_units(repo: Repository, tenant: str, worker: WorkerSession) -> list[Record]:
    """What the flusher reads of a worker before it sends a batch of its (only) action."""
    return await repo.worker_capacity(
        tenant_id=tenant,
        worker_ids=[worker.worker_id],
        action_ids=sorted(worker.actions),
        ready_only=False,
        heartbeat_window=60,
    )


def members(message: ActionMessage) -> dict[str, dict[str, object]]:
    assert message.kind is ActionKind.START_BATCH and message.batch is not None
    decoded = json.loads(message.payload)
    assert list(decoded) == [task_id for task_id, _ in message.batch.members]
    return {task_id: entry["payload"]["input"] for task_id, entry in decoded.items()}


async def report(
    node: Node, tenant: str, message: ActionMessage, kind: str, payload: str = "{}"
) -> int:
    assert message.batch is not None
    return await node.reports.report(
        tenant_id=tenant,
        reporter=None,
        batch_id=message.batch.batch_id,
        kind=kind,
        items=[BatchItemReport(task_id=t, payload=payload) for t, _ in message.batch.members],
    )


@dataclass
class Books:
    """What simulated batch workers saw: members per batch, running batches per key/worker."""

    received: Counter[str] = field(default_factory=Counter)
    running_per_key: Counter[str] = field(default_factory=Counter)
    peak_per_key: Counter[str] = field(default_factory=Counter)
    running_per_worker: Counter[str] = field(default_factory=Counter)
    peak_per_worker: Counter[str] = field(default_factory=Counter)
    sizes: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


async def work(
    nodes: list[Node], tenant: str, session: WorkerSession, books: Books, seed: int
) -> None:
    rng = random.Random(seed)
    pending: set[asyncio.Task[None]] = set()

    async def run(message: ActionMessage) -> None:
        assert message.batch is not None
        key, worker = message.batch.batch_key, session.worker_id
        try:
            await asyncio.sleep(rng.uniform(0.01, 0.05))
            # books first: the engine may start the next batch as soon as this one reports
            books.running_per_key[key] -= 1
            books.running_per_worker[worker] -= 1
            node = rng.choice(nodes)  # results arrive through any replica
            await report(node, tenant, message, BatchEventKind.STARTED)
            await report(node, tenant, message, BatchEventKind.COMPLETED)
        except BaseException as exc:
            books.errors.append(exc)

    while True:
        message = await session.outbox.get()
        for task_id in members(message):
            books.received[task_id] += 1
        assert message.batch is not None
        books.sizes.append(len(message.batch.members))
        key, worker = message.batch.batch_key, session.worker_id
        books.running_per_key[key] += 1
        books.peak_per_key[key] = max(books.peak_per_key[key], books.running_per_key[key])
        books.running_per_worker[worker] += 1
        books.peak_per_worker[worker] = max(
            books.peak_per_worker[worker], books.running_per_worker[worker]
        )
        task = asyncio.create_task(run(message))
        pending.add(task)
        task.add_done_callback(pending.discard)


async def run_world(
    nodes: list[Node], tenant: str, action: str, requests: list[TriggerRequest], *, slots: int
) -> tuple[list[str], Books]:
    sessions = [
        await connect(node, tenant, action, slots=slots) for node in nodes for _ in range(2)
    ]
    books = Books()
    workers = [
        asyncio.create_task(work(nodes, tenant, s, books, seed=i)) for i, s in enumerate(sessions)
    ]
    for node in nodes:
        node.flusher.start()
    try:
        half = len(requests) // 2
        run_ids = [
            *await nodes[0].replica.triggers.trigger(tenant_id=tenant, requests=requests[:half]),
            *await nodes[1].replica.triggers.trigger(tenant_id=tenant, requests=requests[half:]),
        ]
        pool = nodes[0].replica.repo.pool

        async def all_done() -> bool:
            left = await pool.fetchval(
                "SELECT count(*) FROM workflow_runs WHERE status <> 'COMPLETED'"
            )
            return bool(left == 0)

        await eventually(all_done, within=60)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    assert books.errors == []
    return run_ids, books


@pytest.mark.slow
async def test_two_replicas_assign_every_item_once_in_batches_within_slots(
    nodes: list[Node],
) -> None:
    tenant = await nodes[0].replica.repo.ensure_tenant("tenant-a")
    await nodes[0].replica.register(
        tenant, batch_workflow("bulk", batch_max_size=5, batch_max_interval_ms=50)
    )
    requests = [TriggerRequest(workflow_name="bulk", input={"i": i}) for i in range(300)]
    run_ids, books = await run_world(nodes, tenant, "bulk:b", requests, slots=2)

    assert set(books.received) == set(run_ids)  # single-task runs share their task's id
    assert set(books.received.values()) == {1}  # never twice, never to two workers
    assert max(books.sizes) == 5 and sum(books.sizes) == 300
    assert max(books.peak_per_worker.values()) <= 2  # a batch holds one slot
    assert len(books.peak_per_worker) == 4  # both replicas flushed, to every worker
    pool = nodes[0].replica.repo.pool
    assigned = await pool.fetch(
        "SELECT task_id, count(*) AS n FROM task_events WHERE event_type = 'ASSIGNED' GROUP BY 1"
    )
    assert len(assigned) == 300 and {r["n"] for r in assigned} == {1}
    per_batch = await pool.fetch(
        "SELECT batch_id, count(*) AS n, count(DISTINCT worker_id) AS workers FROM tasks "
        "GROUP BY batch_id"
    )
    assert all(r["n"] <= 5 and r["workers"] == 1 for r in per_batch)
    assert await pool.fetchval("SELECT count(*) FROM queue_items") == 0


@pytest.mark.slow
async def test_group_max_runs_holds_across_replicas(nodes: list[Node]) -> None:
    tenant = await nodes[0].replica.repo.ensure_tenant("tenant-a")
    await nodes[0].replica.register(
        tenant,
        batch_workflow(
            "keyed",
            batch_max_size=2,
            batch_max_interval_ms=20,
            batch_group_key="input.k",
            batch_group_max_runs=1,
        ),
    )
    requests = [
        TriggerRequest(workflow_name="keyed", input={"k": key, "i": i})
        for i in range(30)
        for key in ("a", "b", "c")
    ]
    _, books = await run_world(nodes, tenant, "keyed:b", requests, slots=3)
    assert sum(books.received.values()) == 90
    assert dict(books.peak_per_key) == {"a": 1, "b": 1, "c": 1}
    # the groups did run side by side: the limit is per key, not overall
    assert max(books.peak_per_worker.values()) >= 2


async def test_a_batch_holds_one_slot_and_items_report_one_by_one(nodes: list[Node]) -> None:
    node = nodes[0]
    repo = node.replica.repo
    tenant = await repo.ensure_tenant("tenant-a")
    await node.replica.register(tenant, batch_workflow("one", batch_max_size=3))
    worker = await connect(node, tenant, "one:b", slots=1)
    request = TriggerRequest(workflow_name="one", input={})
    run_ids = await node.replica.triggers.trigger(tenant_id=tenant, requests=[request] * 5)
    # the scheduler leaves batch actions alone
    assert not await node.replica.scheduler.run_round(tenant)
    assert await node.flusher.flush_tenant(tenant, [worker])
    first = next_message_now(worker)
    first_ids = set(members(first))
    assert len(first_ids) == 3 and first_ids < set(run_ids)
    assert first.batch is not None and first.batch.reason == "batch_size_reached"
    (state,) = await held_units(repo, tenant, worker)
    assert dict(state["used"]) == {"default": 1}
    # full: the second batch waits for the slot
    assert not await node.flusher.flush_tenant(tenant, [worker])
    # a late report for one item, a failure for another (retried), success for the third
    ids = [t for t, _ in first.batch.members]
    assert await report(node, tenant, first, BatchEventKind.STARTED) == 3
    await node.reports.report(
        tenant_id=tenant,
        reporter=worker.worker_id,
        batch_id=first.batch.batch_id,
        kind=BatchEventKind.COMPLETED,
        items=[BatchItemReport(task_id=ids[0], payload='{"ok": 1}')],
    )
    await node.reports.report(
        tenant_id=tenant,
        reporter=worker.worker_id,
        batch_id=first.batch.batch_id,
        kind=BatchEventKind.FAILED,
        items=[BatchItemReport(task_id=ids[1], payload="boom")],
    )
    (state,) = await held_units(repo, tenant, worker)
    assert dict(state["used"]) == {"default": 1}  # the third member still runs
    await node.reports.report(
        tenant_id=tenant,
        reporter=worker.worker_id,
        batch_id=first.batch.batch_id,
        kind=BatchEventKind.CANCELLED,
        items=[BatchItemReport(task_id=ids[2])],
    )
    statuses = {t: (await node.replica.task_row(t))["status"] for t in ids}
    assert statuses == {ids[0]: "COMPLETED", ids[1]: "QUEUED", ids[2]: "CANCELLED"}
    assert (await node.replica.task_row(ids[0]))["output"] == '{"ok": 1}'
    # the slot is free: the next batch holds the two left over and the retry
    assert await node.flusher.flush_tenant(tenant, [worker])
    second = next_message_now(worker)
    assert set(members(second)) == (set(run_ids) - first_ids) | {ids[1]}
    # a report for the first batch about the retried item changes nothing now
    assert second.batch is not None
    assert (
        await node.reports.report(
            tenant_id=tenant,
            reporter=None,
            batch_id=first.batch.batch_id,
            kind=BatchEventKind.COMPLETED,
            items=[BatchItemReport(task_id=ids[1], payload="{}")],
        )
        == 0
    )
    assert (await node.replica.task_row(ids[1]))["status"] == "RUNNING"


def next_message_now(session: WorkerSession) -> ActionMessage:
    """The one START_BATCH waiting (cancels of batch members may be there too)."""
    (message,) = [m for m in drain(session) if m.kind is ActionKind.START_BATCH]
    return message


async def test_a_group_key_that_is_not_a_string_fails_only_that_task(nodes: list[Node]) -> None:
    node = nodes[0]
    tenant = await node.replica.repo.ensure_tenant("tenant-a")
    await node.replica.register(
        tenant,
        batch_workflow("k", batch_max_size=2, batch_max_interval_ms=0, batch_group_key="input.g"),
    )
    worker = await connect(node, tenant, "k:b", slots=5)
    good, bad = await node.replica.triggers.trigger(
        tenant_id=tenant,
        requests=[
            TriggerRequest(workflow_name="k", input={"g": "x"}),
            TriggerRequest(workflow_name="k", input={"g": 123}),
        ],
    )
    assert await node.flusher.flush_tenant(tenant, [worker])
    message = next_message_now(worker)
    assert set(members(message)) == {good}
    assert message.batch is not None and message.batch.batch_key == "x"
    row = await node.replica.task_row(bad)
    assert row["status"] == "FAILED"
    assert row["error"].startswith("failed to parse batch group key expression 'input.g'")
    assert (await node.replica.run_row(bad))["status"] == "FAILED"


async def test_undelivered_batch_goes_back_to_the_queue(nodes: list[Node]) -> None:
    node = nodes[0]
    tenant = await node.replica.repo.ensure_tenant("tenant-a")
    await node.replica.register(tenant, batch_workflow("u", batch_max_size=2))
    worker = await connect(node, tenant, "u:b", slots=5)
    requeued: list[ActionMessage] = []

    async def requeue(messages: list[ActionMessage]) -> None:
        requeued.extend(messages)
        for m in messages:
            for task_id, retry in m.attempts():
                await node.replica.lifecycle.requeue_lost(
                    tenant_id=tenant, task_id=task_id, retry_count=retry, reason="lost"
                )

    node.flusher.on_undeliverable = requeue
    run_ids = await node.replica.triggers.trigger(
        tenant_id=tenant, requests=[TriggerRequest(workflow_name="u", input={})] * 2
    )
    node.replica.hub.detach(worker)
    assert await node.flusher.flush_tenant(tenant, [worker])
    assert len(requeued) == 1
    rows = [await node.replica.task_row(r) for r in run_ids]
    assert [(r["status"], r["retry_count"]) for r in rows] == [("QUEUED", 1), ("QUEUED", 1)]


async def test_registration_refuses_bad_batch_configs_and_stores_nothing(
    nodes: list[Node],
) -> None:
    from hewer.engine.core.definition import InvalidDefinition

    node = nodes[0]
    tenant = await node.replica.repo.ensure_tenant("tenant-a")
    for bad in (
        {"batch_max_size": 0},
        {"batch_max_size": 2, "batch_group_key": "input.("},
        {"batch_max_size": 2, "batch_max_interval_ms": -5},
    ):
        with pytest.raises(InvalidDefinition):
            await node.replica.register(tenant, batch_workflow("bad", **bad))
    assert await node.replica.repo.pool.fetchval("SELECT count(*) FROM workflows") == 0
    version = await node.replica.register(tenant, batch_workflow("ok", batch_max_size=2))
    loaded = await node.replica.definitions.version(version)
    assert loaded.steps[0].batch is not None and loaded.steps[0].batch.max_size == 2


async def test_the_latest_version_decides_which_actions_are_batch_actions(
    nodes: list[Node],
) -> None:
    node = nodes[0]
    repo = node.replica.repo
    tenant = await repo.ensure_tenant("tenant-a")
    await node.replica.register(tenant, batch_workflow("v", batch_max_size=2))
    configs = await repo.batch_configs_of_actions(tenant_id=tenant, action_ids=["v:b", "x:y"])
    assert list(configs) == ["v:b"] and configs["v:b"].max_size == 2
    # a newer version without a batch config makes it a plain action again
    await node.replica.register(
        tenant, {"name": "v", "tasks": [{"readable_id": "b", "action": "v:b"}]}
    )
    assert await repo.batch_configs_of_actions(tenant_id=tenant, action_ids=["v:b"]) == {}
    # a worker that still listens as a batch worker: the scheduler takes the item over
    worker = await node.replica.connect_worker(tenant, ["v:b"])
    worker.batch_actions = frozenset({"v:b"})
    (run_id,) = await node.replica.triggers.trigger(
        tenant_id=tenant, requests=[TriggerRequest(workflow_name="v", input={})]
    )
    assert not await node.replica.scheduler.run_round(tenant)
    assert not await node.flusher.flush_tenant(tenant, [worker])
    assert worker.batch_actions == frozenset()
    assert await node.replica.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert (message.kind, message.task_id) == (ActionKind.START, run_id)


async def test_a_second_replica_waits_for_the_first_before_counting_running_batches(
    nodes: list[Node],
) -> None:
    """batch_group_max_runs cannot race: the count and the assignment share one lock."""
    first, second = nodes
    tenant = await first.replica.repo.ensure_tenant("tenant-a")
    await first.replica.register(
        tenant,
        batch_workflow(
            "race",
            batch_max_size=1,
            batch_group_key="input.k",
            batch_group_max_runs=1,
        ),
    )
    w1 = await connect(first, tenant, "race:b", slots=5)
    w2 = await connect(second, tenant, "race:b", slots=5)
    request = TriggerRequest(workflow_name="race", input={"k": "a"})
    await first.replica.triggers.trigger(tenant_id=tenant, requests=[request])

    counted, release = asyncio.Event(), asyncio.Event()
    count = first.replica.repo.running_batches_per_key

    async def count_then_wait(*args: object, **kwargs: object) -> dict[str, int]:
        running = await count(*args, **kwargs)  # type: ignore[arg-type]
        counted.set()
        await release.wait()
        return running

    first.replica.repo.running_batches_per_key = count_then_wait  # type: ignore[method-assign]
    one = asyncio.create_task(first.flusher.flush_tenant(tenant, [w1]))
    await asyncio.wait_for(counted.wait(), timeout=5)
    # a second item of the same key arrives while the first replica is deciding
    await second.replica.triggers.trigger(tenant_id=tenant, requests=[request])
    two = asyncio.create_task(second.flusher.flush_tenant(tenant, [w2]))
    try:
        await asyncio.sleep(0.3)
        assert not two.done()  # it waits for the first replica's transaction
    finally:
        release.set()
    assert await one
    assert not await two  # key "a" has its one running batch
    assert len(drain(w1)) == 1 and drain(w2) == []


async def test_rate_limits_apply_to_each_member_of_a_batch(nodes: list[Node]) -> None:
    node = nodes[0]
    repo = node.replica.repo
    tenant = await repo.ensure_tenant("tenant-a")
    await repo.upsert_rate_limit(tenant_id=tenant, key="api", limit=3, duration="MINUTE")
    workflow = batch_workflow("rl", batch_max_size=10, batch_max_interval_ms=0)
    workflow["tasks"][0]["rate_limits"] = [  # type: ignore[index]
        {"key": "api", "units": 1, "limit_values_expr": "-1"}
    ]
    await node.replica.register(tenant, workflow)
    worker = await connect(node, tenant, "rl:b", slots=5)
    run_ids = await node.replica.triggers.trigger(
        tenant_id=tenant, requests=[TriggerRequest(workflow_name="rl", input={})] * 5
    )
    assert await node.flusher.flush_tenant(tenant, [worker])
    first = next_message_now(worker)
    assert len(members(first)) == 3  # the bucket pays for three members
    assert await repo.pool.fetchval("SELECT value FROM rate_limits WHERE key = 'api'") == 3
    # the other two wait for the refill and say why; nothing more is sent meanwhile
    assert not await node.flusher.flush_tenant(tenant, [worker])
    waiting = [r for r in run_ids if r not in members(first)]
    for run_id in waiting:
        assert (await node.replica.task_row(run_id))["status"] == "QUEUED"
        events = [e for e, _ in await node.replica.events(run_id)]
        assert events.count("REQUEUED_RATE_LIMIT") == 1


async def test_a_batch_is_placed_by_the_labels_of_its_task(nodes: list[Node]) -> None:
    node = nodes[0]
    repo = node.replica.repo
    tenant = await repo.ensure_tenant("tenant-a")
    workflow = batch_workflow("gpu", batch_max_size=2)
    workflow["tasks"][0]["worker_labels"] = {  # type: ignore[index]
        "gpu": {"str_value": "yes", "required": True}
    }
    await node.replica.register(tenant, workflow)
    plain = await connect(node, tenant, "gpu:b", slots=5)
    gpu = await connect(node, tenant, "gpu:b", slots=5)
    labelled = await repo.merge_worker_labels(
        tenant_id=tenant, worker_id=gpu.worker_id, labels={"gpu": "yes"}
    )
    assert labelled
    await node.replica.triggers.trigger(
        tenant_id=tenant, requests=[TriggerRequest(workflow_name="gpu", input={})] * 4
    )
    assert await node.flusher.flush_tenant(tenant, [plain, gpu])
    assert drain(plain) == []
    assert [len(members(m)) for m in drain(gpu)] == [2, 2]
