"""DAG conditions against PostgreSQL: the match table and the three ways it is satisfied.

A task whose parents are done but whose sleep or user-event conditions are not is WAITING:
no queue item, no slot. The timer loop satisfies sleeps, event ingestion user events, and
the parents' completion decides parent-output conditions; the firing moves the task to
QUEUED (through the enqueue path), COMPLETED skipped, or CANCELLED (cascading).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from tests.integration.harness import Replica, drain

from hewer.engine.core.definition import InvalidDefinition
from hewer.engine.services.events import Events, NewEvent

_groups = itertools.count()


def base(action: str, expression: str = "") -> dict[str, Any]:
    return {
        "action": action,
        "or_group_id": f"g{next(_groups)}",
        "readable_data_key": "k",
        "expression": expression,
    }


def sleep(action: str, seconds: str) -> dict[str, Any]:
    return {"sleep_conditions": [{"base": base(action), "sleep_for": seconds}]}


def event(action: str, key: str, expression: str = "") -> list[dict[str, Any]]:
    return [{"base": base(action, expression), "user_event_key": key}]


def workflow(name: str, conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [
            {"readable_id": "a", "action": f"{name}:a"},
            {"readable_id": "b", "action": f"{name}:b", "parents": ["a"], "conditions": conditions},
            # a join: it runs after a skipped b (not every parent skipped), as Hatchet's does
            {"readable_id": "c", "action": f"{name}:c", "parents": ["a", "b"]},
        ],
    }


async def run_first_task(engine: Replica, tenant: str, name: str, output: str = "{}") -> str:
    worker = await engine.connect_worker(tenant, [f"{name}:a", f"{name}:b", f"{name}:c"])
    run_id = await engine.trigger(tenant, name)
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, output=output
    )
    return run_id


async def queue_items(engine: Replica, task_id: Any) -> int:
    count = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM queue_items WHERE task_id = $1", task_id
    )
    return int(count)


async def test_a_sleep_is_satisfied_by_the_timer_loop(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, workflow("napper", sleep("QUEUE", "1s")))
    run_id = await run_first_task(engine, tenant, "napper")
    b = (await engine.tasks_by_name(run_id))["b"]
    assert (b["status"], b["slot_held"]) == ("WAITING", False)
    assert await queue_items(engine, b["id"]) == 0
    await engine.timers.run_once()
    assert (await engine.task_row(b["id"]))["status"] == "WAITING"  # not due yet
    await asyncio.sleep(1.1)
    await engine.timers.run_once()
    assert (await engine.task_row(b["id"]))["status"] == "QUEUED"
    assert await queue_items(engine, b["id"]) == 1
    remaining = await engine.repo.pool.fetchval("SELECT count(*) FROM task_matches")
    assert remaining == 0


async def test_an_event_satisfies_a_waiting_task_only_when_its_expression_holds(
    engine: Replica, tenant: str
) -> None:
    conditions = {"user_event_conditions": event("QUEUE", "approve", "input.ok == true")}
    await engine.register(tenant, workflow("approval", conditions))
    run_id = await run_first_task(engine, tenant, "approval")
    b = (await engine.tasks_by_name(run_id))["b"]
    events = Events(repo=engine.repo, triggers=engine.triggers)
    events.matches = engine.matches
    await events.push(
        tenant_id=tenant,
        events=[NewEvent(key="approve", payload={"ok": False}, additional_metadata={})],
    )
    assert (await engine.task_row(b["id"]))["status"] == "WAITING"
    await events.push(
        tenant_id=tenant,
        events=[NewEvent(key="approve", payload={"ok": True}, additional_metadata={})],
    )
    assert (await engine.task_row(b["id"]))["status"] == "QUEUED"
    assert await queue_items(engine, b["id"]) == 1
    assert [e for e, _ in await engine.events(b["id"])] == ["CREATED", "QUEUED"]


async def test_a_parent_output_skip_lets_the_children_run(engine: Replica, tenant: str) -> None:
    conditions = {
        "parent_override_conditions": [
            {"base": base("SKIP", "output.n > 1"), "parent_readable_id": "a"}
        ]
    }
    await engine.register(tenant, workflow("skipper", conditions))
    run_id = await run_first_task(engine, tenant, "skipper", output='{"n": 2}')
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["b"]["status"], tasks["b"]["is_skipped"]) == ("COMPLETED", True)
    assert tasks["b"]["output"] == '{"skipped": true}'
    assert tasks["c"]["status"] == "QUEUED"


async def test_a_parent_output_cancel_cascades(engine: Replica, tenant: str) -> None:
    conditions = {
        "parent_override_conditions": [
            {"base": base("CANCEL", "output.n > 1"), "parent_readable_id": "a"}
        ]
    }
    await engine.register(tenant, workflow("canceller", conditions))
    run_id = await run_first_task(engine, tenant, "canceller", output='{"n": 2}')
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["b"]["status"], tasks["c"]["status"]) == ("CANCELLED", "CANCELLED")
    assert (await engine.run_row(run_id))["status"] == "CANCELLED"


async def test_an_event_cancel_of_a_waiting_task_cascades(engine: Replica, tenant: str) -> None:
    conditions = {**sleep("QUEUE", "30s"), "user_event_conditions": event("CANCEL", "abort")}
    await engine.register(tenant, workflow("abortable", conditions))
    run_id = await run_first_task(engine, tenant, "abortable")
    assert await engine.matches.on_event(tenant_id=tenant, key="abort", payload={}, scope=None) == 1
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["b"]["status"], tasks["c"]["status"]) == ("CANCELLED", "CANCELLED")
    assert (await engine.run_row(run_id))["status"] == "CANCELLED"


async def test_an_or_group_fires_on_any_member_and_skip_wins_the_race(
    engine: Replica, tenant: str
) -> None:
    group = "shared"
    conditions = {
        "sleep_conditions": [{"base": {**base("SKIP"), "or_group_id": group}, "sleep_for": "30s"}],
        "user_event_conditions": [
            {"base": {**base("SKIP"), "or_group_id": group}, "user_event_key": "skip-now"},
            *event("QUEUE", "go"),
        ],
    }
    await engine.register(tenant, workflow("racer", conditions))
    run_id = await run_first_task(engine, tenant, "racer")
    await engine.matches.on_event(tenant_id=tenant, key="skip-now", payload={}, scope=None)
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["b"]["status"], tasks["b"]["is_skipped"]) == ("COMPLETED", True)
    assert tasks["c"]["status"] == "QUEUED"


async def test_two_replicas_do_not_satisfy_one_match_twice(dsn: str) -> None:
    replicas = [await Replica.start(dsn, pool_size=4) for _ in range(2)]
    try:
        first = replicas[0]
        tenant = await first.repo.ensure_tenant("tenant-a")
        await first.register(
            tenant, workflow("contended", {"user_event_conditions": event("QUEUE", "go")})
        )
        run_id = await run_first_task(first, tenant, "contended")
        b = (await first.tasks_by_name(run_id))["b"]
        fired = await asyncio.gather(
            *(
                r.matches.on_event(tenant_id=tenant, key="go", payload={}, scope=None)
                for r in replicas
                for _ in range(3)
            )
        )
        assert sum(fired) == 1
        assert await queue_items(first, b["id"]) == 1
        assert [e for e, _ in await first.events(b["id"])] == ["CREATED", "QUEUED"]
    finally:
        for r in replicas:
            await r.close()


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (
            {
                "parent_override_conditions": [
                    {"base": base("SKIP", "output.(("), "parent_readable_id": "a"}
                ]
            },
            "invalid CEL",
        ),
        (sleep("QUEUE", "-5s"), "invalid duration"),
        (sleep("QUEUE", "soon"), "invalid duration"),
        (
            {
                "parent_override_conditions": [
                    {"base": base("SKIP", "true"), "parent_readable_id": "c"}
                ]
            },
            "not a parent",
        ),
    ],
)
async def test_a_bad_condition_is_refused_and_nothing_is_registered(
    engine: Replica, tenant: str, conditions: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidDefinition, match=message):
        await engine.register(tenant, workflow("refused", conditions))
    count = await engine.repo.pool.fetchval("SELECT count(*) FROM workflows WHERE name = 'refused'")
    assert count == 0


async def test_cancelling_the_run_cancels_a_waiting_task_and_drops_its_match(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, workflow("dropped", sleep("QUEUE", "30s")))
    run_id = await run_first_task(engine, tenant, "dropped")
    assert (await engine.tasks_by_name(run_id))["b"]["status"] == "WAITING"
    await engine.control.cancel(tenant_id=tenant, external_ids=[run_id])
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["b"]["status"], tasks["c"]["status"]) == ("CANCELLED", "CANCELLED")
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM task_matches") == 0
    assert (await engine.run_row(run_id))["status"] == "CANCELLED"
