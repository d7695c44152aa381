"""Concurrency admission against PostgreSQL: fairness, cancellation, DAG-level slots, and
the max_runs guarantee with two replicas admitting at once."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import pytest
from tests.integration.harness import Replica, drain

from hewer.engine.services.triggers import TriggerError, TriggerRequest
from hewer.engine.services.workers import ActionKind, WorkerSession


def keyed(strategy: str, *, max_runs: int = 1, name: str = "keyed") -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [
            {
                "readable_id": "work",
                "action": f"{name}:work",
                "concurrency": [
                    {"expression": "input.k", "max_runs": max_runs, "limit_strategy": strategy}
                ],
            }
        ],
    }


async def trigger_keys(engine: Replica, tenant: str, workflow: str, keys: list[str]) -> list[str]:
    return await engine.triggers.trigger(
        tenant_id=tenant,
        requests=[TriggerRequest(workflow_name=workflow, input={"k": k}) for k in keys],
    )


async def queued_tasks(engine: Replica) -> list[str]:
    rows = await engine.repo.pool.fetch(
        "SELECT task_id FROM queue_items ORDER BY priority DESC, id"
    )
    return [str(r["task_id"]) for r in rows]


async def settle(engine: Replica, tenant: str) -> None:
    await engine.admission.run_pass(tenant)


async def test_round_robin_lets_a_small_key_run_second_not_last(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("GROUP_ROUND_ROBIN"))
    a_runs = await trigger_keys(engine, tenant, "keyed", ["A"] * 10)
    (b_run,) = await trigger_keys(engine, tenant, "keyed", ["B"])
    await settle(engine, tenant)
    # only the head of each key is queued; the other nine A's wait in front of the queue
    assert await queued_tasks(engine) == [a_runs[0], b_run]

    worker = await engine.connect_worker(tenant, ["keyed:work"], slots={"default": 1})
    order: list[str] = []
    for _ in range(11):
        deadline = time.monotonic() + 10
        while not await engine.scheduler.run_round(tenant):
            assert time.monotonic() < deadline, "nothing became runnable"
            await settle(engine, tenant)
        (message,) = drain(worker)
        order.append(message.task_id)
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
        )
        await settle(engine, tenant)
    assert order[:2] == [a_runs[0], b_run]
    assert order[2:] == a_runs[1:]
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM concurrency_slots") == 0


async def test_cancel_in_progress_keeps_only_the_newest(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, keyed("CANCEL_IN_PROGRESS"))
    worker = await engine.connect_worker(tenant, ["keyed:work"], slots={"default": 5})
    (first,) = await trigger_keys(engine, tenant, "keyed", ["A"])
    await settle(engine, tenant)
    assert await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(worker)] == [first]

    second, third = await trigger_keys(engine, tenant, "keyed", ["A", "A"])
    await settle(engine, tenant)
    statuses = {
        str(r["id"]): r["status"]
        for r in await engine.repo.pool.fetch("SELECT id, status FROM tasks")
    }
    assert statuses == {first: "CANCELLED", second: "CANCELLED", third: "QUEUED"}
    assert await queued_tasks(engine) == [third]
    # the running one's worker is told to stop
    await asyncio.sleep(0.2)
    cancels = [m for m in drain(worker) if m.kind is ActionKind.CANCEL]
    assert [m.task_id for m in cancels] == [first]
    events = await engine.events(first)
    assert events[-1][0] == "CANCELLED"


async def test_cancel_newest_cancels_what_arrives_while_the_key_is_full(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("CANCEL_NEWEST", max_runs=2))
    runs = await trigger_keys(engine, tenant, "keyed", ["A", "A", "A", "B"])
    await settle(engine, tenant)
    statuses = [(await engine.task_row(r))["status"] for r in runs]
    assert statuses == ["QUEUED", "QUEUED", "CANCELLED", "QUEUED"]
    assert sorted(await queued_tasks(engine)) == sorted([runs[0], runs[1], runs[3]])


async def test_workflow_level_slot_holds_a_dag_until_the_run_finishes(
    engine: Replica, tenant: str
) -> None:
    await engine.register(
        tenant,
        {
            "name": "dag",
            "concurrency": {"expression": "input.k", "max_runs": 1, "limit_strategy": 3},
            "tasks": [
                {"readable_id": "first", "action": "dag:first"},
                {"readable_id": "second", "action": "dag:second", "parents": ["first"]},
            ],
        },
    )
    worker = await engine.connect_worker(tenant, ["dag:first", "dag:second"])
    one, two = await engine.triggers.trigger(
        tenant_id=tenant,
        requests=[TriggerRequest(workflow_name="dag", input={"k": "x"}) for _ in range(2)],
    )
    await settle(engine, tenant)
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert message.workflow_run_id == one
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
    )
    await settle(engine, tenant)
    # the first run's second task is queued (or assigned already, by the completion's own
    # hop when the last round drained the queue); the second run still waits for the run slot
    await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert (message.workflow_run_id, message.readable_id) == (one, "second")
    assert (await engine.run_row(two))["status"] == "QUEUED"
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
    )
    await settle(engine, tenant)
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert (message.workflow_run_id, message.readable_id) == (two, "first")


async def test_a_key_that_is_not_a_string_refuses_the_trigger(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, keyed("GROUP_ROUND_ROBIN"))
    with pytest.raises(TriggerError, match="did not evaluate to a string"):
        await engine.triggers.trigger(
            tenant_id=tenant, requests=[TriggerRequest(workflow_name="keyed", input={"k": 7})]
        )
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM workflow_runs") == 0


async def test_a_retry_queues_again_ahead_of_newer_runs_of_its_key(
    engine: Replica, tenant: str
) -> None:
    definition = keyed("GROUP_ROUND_ROBIN")
    definition["tasks"][0]["retries"] = 1
    await engine.register(tenant, definition)
    worker = await engine.connect_worker(tenant, ["keyed:work"], slots={"default": 1})
    first, second = await trigger_keys(engine, tenant, "keyed", ["A", "A"])
    await settle(engine, tenant)
    assert await engine.scheduler.run_round(tenant)
    drain(worker)
    await engine.lifecycle.failed(tenant_id=tenant, task_id=first, retry_count=0, error="boom")
    await settle(engine, tenant)
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert (message.task_id, message.retry_count) == (first, 1)
    assert (await engine.task_row(second))["status"] == "QUEUED"


@pytest.mark.slow
async def test_two_replicas_never_run_more_than_max_runs_per_key(dsn: str) -> None:
    replicas = [await Replica.start(dsn), await Replica.start(dsn)]
    try:
        tenant = await replicas[0].repo.ensure_tenant("tenant-c")
        await replicas[0].register(tenant, keyed("GROUP_ROUND_ROBIN", max_runs=1))
        sessions: list[tuple[Replica, WorkerSession]] = []
        for replica in replicas:
            for _ in range(2):
                session = await replica.connect_worker(tenant, ["keyed:work"], slots={"default": 4})
                sessions.append((replica, session))
        keys = [f"k{i % 12}" for i in range(120)]
        random.Random(7).shuffle(keys)
        key_of: dict[str, str] = {}
        for chunk in (keys[:60], keys[60:]):
            for replica in replicas:
                half = (
                    chunk[: len(chunk) // 2] if replica is replicas[0] else chunk[len(chunk) // 2 :]
                )
                ids = await trigger_keys(replica, tenant, "keyed", half)
                key_of.update(zip(ids, half, strict=True))
        running: Counter[str] = Counter()
        peak: Counter[str] = Counter()
        done: set[str] = set()
        rng = random.Random(3)

        async def work(replica: Replica, session: WorkerSession) -> None:
            while len(done) < len(key_of):
                try:
                    message = await asyncio.wait_for(session.outbox.get(), timeout=0.2)
                except TimeoutError:
                    continue
                key = key_of[message.task_id]
                running[key] += 1
                peak[key] = max(peak[key], running[key])
                await asyncio.sleep(rng.uniform(0.001, 0.02))
                running[key] -= 1
                await rng.choice(replicas).lifecycle.completed(
                    tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
                )
                done.add(message.task_id)

        async def schedule(replica: Replica) -> None:
            while len(done) < len(key_of):
                replica.scheduler.wake()
                await asyncio.sleep(0.01)

        for replica in replicas:
            replica.scheduler.start()
        await asyncio.wait_for(
            asyncio.gather(*(work(r, s) for r, s in sessions), *(schedule(r) for r in replicas)),
            timeout=90,
        )
        assert len(done) == len(key_of)
        assert max(peak.values()) == 1
    finally:
        for replica in replicas:
            await replica.close()
