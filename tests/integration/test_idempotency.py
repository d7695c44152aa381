"""Idempotency keys against PostgreSQL: the claim, duplicates, STATUS release, TTL expiry.

A duplicate is a trigger whose key (CEL over input and metadata) is held by another run of
the tenant; it creates nothing and names the holder (``IdempotencyCollision``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.integration.harness import Replica, drain

from hewer.engine.core.definition import InvalidDefinition
from hewer.engine.services.events import Events, NewEvent
from hewer.engine.services.retention import Retention
from hewer.engine.services.triggers import IdempotencyCollision, TriggerError, TriggerRequest


def keyed(name: str, *, method: str = "TTL", ttl_ms: int = 60_000, **task: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [{"readable_id": "run", "action": f"{name}:run", "timeout": "60s", **task}],
        "idempotency": {"expression": "input.id", "ttl_ms": str(ttl_ms), "method": method},
        "event_triggers": [f"{name}:go"],
    }


async def run_count(engine: Replica, tenant: str) -> int:
    return int(
        await engine.repo.pool.fetchval(
            "SELECT count(*) FROM workflow_runs WHERE tenant_id = $1", tenant
        )
    )


async def holder(engine: Replica, tenant: str, key: str) -> str | None:
    value = await engine.repo.pool.fetchval(
        "SELECT run_id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2", tenant, key
    )
    return None if value is None else str(value)


async def duplicate_of(engine: Replica, tenant: str, workflow: str, key: str) -> str:
    """Trigger ``key`` again, which must collide; returns the run named as the holder."""
    with pytest.raises(IdempotencyCollision) as caught:
        await engine.trigger(tenant, workflow, {"id": key})
    assert caught.value.created == []
    (collision,) = caught.value.collisions
    assert collision.key == key
    return collision.existing_run_id


async def test_a_duplicate_creates_nothing_and_names_the_holder(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("once"))
    first = await engine.trigger(tenant, "once", {"id": "k1"})
    assert await duplicate_of(engine, tenant, "once", "k1") == first
    assert await run_count(engine, tenant) == 1
    assert (await engine.run_row(first))["idempotency_key"] == "k1"
    assert await holder(engine, tenant, "k1") == first
    # another key is another run
    await engine.trigger(tenant, "once", {"id": "k2"})
    assert await run_count(engine, tenant) == 2


async def test_keys_are_per_tenant_and_shared_across_workflows(
    engine: Replica, tenant: str
) -> None:
    other = await engine.repo.ensure_tenant("tenant-b")
    for t in (tenant, other):
        await engine.register(t, keyed("left"))
        await engine.register(t, keyed("right"))
    first = await engine.trigger(tenant, "left", {"id": "same"})
    # Hatchet's keys are per tenant: another workflow with the same key collides
    assert await duplicate_of(engine, tenant, "right", "same") == first
    # another tenant is unaffected
    await engine.trigger(other, "left", {"id": "same"})


async def test_bulk_creates_the_others_and_reports_the_duplicates(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("bulk"))
    held = await engine.trigger(tenant, "bulk", {"id": "held"})
    requests = [
        TriggerRequest(workflow_name="bulk", input={"id": key}) for key in ("a", "held", "a", "b")
    ]
    with pytest.raises(IdempotencyCollision) as caught:
        await engine.triggers.trigger(tenant_id=tenant, requests=requests)
    created = caught.value.created
    assert len(created) == 2  # "a" (its first request) and "b"
    holders = [(c.key, c.existing_run_id) for c in caught.value.collisions]
    assert holders == [("held", held), ("a", created[0])]
    assert await run_count(engine, tenant) == 3
    assert await holder(engine, tenant, "a") == created[0]
    assert await holder(engine, tenant, "b") == created[1]


async def test_concurrent_claims_of_one_key_across_replicas_have_one_winner(
    engine: Replica, tenant: str, dsn: str
) -> None:
    await engine.register(tenant, keyed("race"))
    second = await Replica.start(dsn)
    try:
        await second.register(tenant, keyed("race"))
        outcomes = await asyncio.gather(
            *[
                (engine if i % 2 else second).trigger(tenant, "race", {"id": "contended"})
                for i in range(12)
            ],
            return_exceptions=True,
        )
    finally:
        await second.close()
    winners = [o for o in outcomes if isinstance(o, str)]
    losers = [o for o in outcomes if isinstance(o, IdempotencyCollision)]
    assert len(winners) == 1 and len(losers) == 11, outcomes
    assert {c.existing_run_id for e in losers for c in e.collisions} == set(winners)
    assert await run_count(engine, tenant) == 1


async def test_status_key_is_held_through_retries_and_released_when_the_run_fails(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("flaky", method="STATUS", retries=1))
    worker = await engine.connect_worker(tenant, ["flaky:run"])
    run_id = await engine.trigger(tenant, "flaky", {"id": "s1"})
    await engine.scheduler.run_round(tenant)
    drain(worker)
    await engine.lifecycle.failed(tenant_id=tenant, task_id=run_id, retry_count=0, error="boom")
    # retried, not finished: still held
    assert (await engine.run_row(run_id))["status"] != "FAILED"
    assert await duplicate_of(engine, tenant, "flaky", "s1") == run_id
    await engine.scheduler.run_round(tenant)
    drain(worker)
    await engine.lifecycle.failed(tenant_id=tenant, task_id=run_id, retry_count=1, error="boom")
    assert (await engine.run_row(run_id))["status"] == "FAILED"
    assert await holder(engine, tenant, "s1") is None
    again = await engine.trigger(tenant, "flaky", {"id": "s1"})
    assert again != run_id and await holder(engine, tenant, "s1") == again


async def test_status_key_is_released_on_completion_and_on_cancellation(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("job", method="STATUS"))
    worker = await engine.connect_worker(tenant, ["job:run"])
    done = await engine.trigger(tenant, "job", {"id": "c1"})
    await engine.scheduler.run_round(tenant)
    drain(worker)
    await engine.lifecycle.completed(tenant_id=tenant, task_id=done, retry_count=0, output="{}")
    assert (await engine.run_row(done))["status"] == "COMPLETED"
    assert await holder(engine, tenant, "c1") is None

    queued = await engine.trigger(tenant, "job", {"id": "c2"})
    assert await engine.control.cancel(tenant_id=tenant, external_ids=[queued]) == [queued]
    assert (await engine.run_row(queued))["status"] == "CANCELLED"
    assert await holder(engine, tenant, "c2") is None
    await engine.trigger(tenant, "job", {"id": "c2"})


async def test_ttl_key_outlives_its_run_until_it_expires_then_is_taken_over(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("ttl", method="TTL"))
    worker = await engine.connect_worker(tenant, ["ttl:run"])
    first = await engine.trigger(tenant, "ttl", {"id": "t1"})
    await engine.scheduler.run_round(tenant)
    drain(worker)
    await engine.lifecycle.completed(tenant_id=tenant, task_id=first, retry_count=0, output="{}")
    assert await duplicate_of(engine, tenant, "ttl", "t1") == first  # finished, still held

    await engine.repo.pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 't1'"
    )
    second = await engine.trigger(tenant, "ttl", {"id": "t1"})
    assert await holder(engine, tenant, "t1") == second
    assert await duplicate_of(engine, tenant, "ttl", "t1") == second


async def test_a_trigger_that_rolls_back_releases_its_claim(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, keyed("undo"))

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon):
        async with engine.repo.transaction() as conn:
            await engine.triggers.trigger(
                tenant_id=tenant,
                requests=[TriggerRequest(workflow_name="undo", input={"id": "r1"})],
                conn=conn,
            )
            assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 1
            raise Abandon
    assert await holder(engine, tenant, "r1") is None
    assert await run_count(engine, tenant) == 0
    await engine.trigger(tenant, "undo", {"id": "r1"})


async def test_a_key_that_cannot_be_derived_refuses_the_trigger(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("strict"))
    with pytest.raises(TriggerError, match=r"could not be evaluated.*'id'"):
        await engine.trigger(tenant, "strict", {"other": 1})
    with pytest.raises(TriggerError, match="must evaluate to a string, got int 7"):
        await engine.trigger(tenant, "strict", {"id": 7})
    with pytest.raises(TriggerError, match="could not be evaluated"):
        # one bad request refuses the whole bulk call: nothing is created
        await engine.triggers.trigger(
            tenant_id=tenant,
            requests=[
                TriggerRequest(workflow_name="strict", input={"id": "fine"}),
                TriggerRequest(workflow_name="strict", input={}),
            ],
        )
    assert await run_count(engine, tenant) == 0
    assert await holder(engine, tenant, "fine") is None


async def test_an_invalid_expression_is_refused_at_registration(
    engine: Replica, tenant: str
) -> None:
    bad = keyed("broken")
    bad["idempotency"]["expression"] = "input.id +"
    with pytest.raises(InvalidDefinition, match=r"key expression 'input\.id \+'.*invalid CEL"):
        await engine.register(tenant, bad)
    assert await engine.repo.latest_version_by_name(tenant, "broken") is None
    for field, value, message in (
        ("ttl_ms", "0", "ttl_ms must be positive"),
        ("method", "SOMETIMES", "unknown method 'SOMETIMES'"),
        ("expression", "", "key expression is required"),
    ):
        bad = keyed("broken")
        bad["idempotency"][field] = value
        with pytest.raises(InvalidDefinition, match=message):
            await engine.register(tenant, bad)


async def test_an_event_skips_duplicates_and_still_succeeds(engine: Replica, tenant: str) -> None:
    # two workflows on one event key, both keyed by input.id: one run per key in all
    for name in ("ev-a", "ev-b"):
        definition = keyed(name)
        definition["event_triggers"] = ["shared:go"]
        await engine.register(tenant, definition)
    events = Events(repo=engine.repo, triggers=engine.triggers)
    event = NewEvent(key="shared:go", payload={"id": "e1"}, additional_metadata={})
    (first,) = await events.push(tenant_id=tenant, events=[event])
    (second,) = await events.push(tenant_id=tenant, events=[event])
    assert len(first.run_ids) == 1 and second.run_ids == ()
    assert await run_count(engine, tenant) == 1
    assert await holder(engine, tenant, "e1") == first.run_ids[0]


async def test_a_repeated_child_spawn_returns_its_first_run(engine: Replica, tenant: str) -> None:
    await engine.register(
        tenant,
        {"name": "parent", "tasks": [{"readable_id": "p", "action": "parent:p"}]},
    )
    await engine.register(tenant, keyed("kid"))
    worker = await engine.connect_worker(tenant, ["parent:p"])
    parent = await engine.trigger(tenant, "parent")
    await engine.scheduler.run_round(tenant)
    drain(worker)
    spawn = TriggerRequest(
        workflow_name="kid", input={"id": "child"}, parent_task_id=parent, child_index=0
    )
    (child,) = await engine.triggers.trigger(tenant_id=tenant, requests=[spawn])
    (again,) = await engine.triggers.trigger(tenant_id=tenant, requests=[spawn])
    assert again == child and await holder(engine, tenant, "child") == child
    # a different child with the same key is a duplicate
    other = TriggerRequest(
        workflow_name="kid", input={"id": "child"}, parent_task_id=parent, child_index=1
    )
    with pytest.raises(IdempotencyCollision):
        await engine.triggers.trigger(tenant_id=tenant, requests=[other])


async def test_retention_deletes_expired_keys_and_a_deleted_run_takes_its_key(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("old"))
    expired = await engine.trigger(tenant, "old", {"id": "x1"})
    live = await engine.trigger(tenant, "old", {"id": "x2"})
    await engine.repo.pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'x1'"
    )
    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()
    assert deleted["idempotency_keys"] == 1
    assert await holder(engine, tenant, "x1") is None
    assert await holder(engine, tenant, "x2") == live
    assert (await engine.run_row(expired))["idempotency_key"] == "x1"  # the run keeps its record
    await engine.repo.pool.execute("DELETE FROM workflow_runs WHERE id = $1", live)
    assert await holder(engine, tenant, "x2") is None


async def test_an_event_whose_key_cannot_be_derived_is_refused(
    engine: Replica, tenant: str
) -> None:
    definition = keyed("ev-strict")
    definition["event_triggers"] = ["strict:go"]
    await engine.register(tenant, definition)
    events = Events(repo=engine.repo, triggers=engine.triggers)
    event = NewEvent(key="strict:go", payload={"no_id": True}, additional_metadata={})
    with pytest.raises(TriggerError, match="could not be evaluated"):
        await events.push(tenant_id=tenant, events=[event])
    assert await run_count(engine, tenant) == 0


async def test_concurrent_bulk_claims_in_opposite_orders_do_not_deadlock(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, keyed("crossed"))
    keys = [f"k{i}" for i in range(20)]

    async def bulk(order: list[str]) -> list[str]:
        requests = [TriggerRequest(workflow_name="crossed", input={"id": k}) for k in order]
        try:
            return await engine.triggers.trigger(tenant_id=tenant, requests=requests)
        except IdempotencyCollision as exc:
            return exc.created

    outcomes = await asyncio.gather(
        *[bulk(keys if i % 2 else keys[::-1]) for i in range(6)], return_exceptions=True
    )
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    created = [run for o in outcomes if isinstance(o, list) for run in o]
    assert len(created) == len(keys) == await run_count(engine, tenant)
