"""Conditions on a root task, and the look-back of user-event conditions, against PostgreSQL.

A root with conditions starts WAITING with its match written by the trigger (no queue item,
no slot); the timer loop and event ingestion fire it exactly as they fire a child's. An
event stored before a match existed but after its condition's ``consider_events_since``
counts when the match is created: at the trigger for a root, when the parents are done for
a child.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.harness import Replica, drain

from hewer.engine.services.events import Events, NewEvent

_groups = itertools.count()


def base(action: str, expression: str = "") -> dict[str, Any]:
    group = f"g{next(_groups)}"
    return {
        "action": action,
        "or_group_id": group,
        "readable_data_key": group,
        "expression": expression,
    }


def sleep(action: str, duration: str) -> dict[str, Any]:
    return {"base": base(action), "sleep_for": duration}


def user_event(action: str, key: str, expression: str = "", **fields: Any) -> dict[str, Any]:
    return {"base": base(action, expression), "user_event_key": key, **fields}


def conditions(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "sleep_conditions": [i for i in items if "sleep_for" in i],
        "user_event_conditions": [i for i in items if "user_event_key" in i],
    }


def since(delta: timedelta) -> str:
    """A ``consider_events_since`` as the SDK sends it (RFC 3339, UTC)."""
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def dag(name: str, root_conditions: dict[str, Any]) -> dict[str, Any]:
    """``a`` (conditioned root) -> ``b``; ``d`` (plain root); ``c`` joins ``a`` and ``d``."""
    return {
        "name": name,
        "tasks": [
            {"readable_id": "a", "action": f"{name}:a", "conditions": root_conditions},
            {"readable_id": "b", "action": f"{name}:b", "parents": ["a"]},
            {"readable_id": "d", "action": f"{name}:d"},
            {"readable_id": "c", "action": f"{name}:c", "parents": ["a", "d"]},
        ],
    }


def single(name: str, task_conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [{"readable_id": "only", "action": f"{name}:only", "conditions": task_conditions}],
    }


def events_of(engine: Replica) -> Events:
    events = Events(repo=engine.repo, triggers=engine.triggers)
    events.matches = engine.matches
    return events


async def push(
    engine: Replica, tenant: str, key: str, payload: dict[str, Any], scope: str | None = None
) -> None:
    await events_of(engine).push(
        tenant_id=tenant,
        events=[NewEvent(key=key, payload=payload, additional_metadata={}, scope=scope)],
    )


async def queue_items(engine: Replica, task_id: Any) -> int:
    count = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM queue_items WHERE task_id = $1", task_id
    )
    return int(count)


async def matches_left(engine: Replica) -> int:
    return int(await engine.repo.pool.fetchval("SELECT count(*) FROM task_matches"))


async def test_a_root_waits_for_its_sleep_from_the_trigger_without_a_slot(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, single("napper", conditions(sleep("QUEUE", "1s"))))
    run_id = await engine.trigger(tenant, "napper")
    task = await engine.task_row(run_id)  # a single-task run shares its id with its task
    assert (task["status"], task["slot_held"]) == ("WAITING", False)
    assert await queue_items(engine, run_id) == 0
    assert (await engine.run_row(run_id))["status"] == "QUEUED"
    # the sleep is measured from the trigger (the task's creation)
    sleep_until = await engine.repo.pool.fetchval(
        "SELECT sleep_until FROM task_match_conditions WHERE kind = 'SLEEP'"
    )
    assert abs((sleep_until - task["created_at"]).total_seconds() - 1.0) < 0.2
    await engine.timers.run_once()
    assert (await engine.task_row(run_id))["status"] == "WAITING"  # not due yet
    await asyncio.sleep(1.1)
    await engine.timers.run_once()
    assert (await engine.task_row(run_id))["status"] == "QUEUED"
    assert await queue_items(engine, run_id) == 1
    assert [e for e, _ in await engine.events(run_id)] == ["CREATED", "QUEUED"]
    assert await matches_left(engine) == 0


async def test_a_root_waits_for_an_event_that_meets_its_expression(
    engine: Replica, tenant: str
) -> None:
    wait = conditions(user_event("QUEUE", "approve", "input.ok == true"))
    await engine.register(tenant, dag("approval", wait))
    worker = await engine.connect_worker(tenant, [f"approval:{t}" for t in "abcd"])
    run_id = await engine.trigger(tenant, "approval")
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["a"]["status"], tasks["d"]["status"]) == ("WAITING", "QUEUED")
    assert await engine.scheduler.run_round(tenant)
    assert [m.action_id for m in drain(worker)] == ["approval:d"]  # a holds no slot, no item
    await push(engine, tenant, "approve", {"ok": False})
    assert (await engine.task_row(tasks["a"]["id"]))["status"] == "WAITING"
    await push(engine, tenant, "approve", {"ok": True})
    assert (await engine.task_row(tasks["a"]["id"]))["status"] == "QUEUED"
    assert await engine.scheduler.run_round(tenant)
    assert [m.action_id for m in drain(worker)] == ["approval:a"]


async def test_skip_if_on_a_root_skips_it_and_its_join_still_runs(
    engine: Replica, tenant: str
) -> None:
    root = conditions(sleep("QUEUE", "30s"), user_event("SKIP", "skip-a"))
    await engine.register(tenant, dag("skippy", root))
    worker = await engine.connect_worker(tenant, [f"skippy:{t}" for t in "abcd"])
    run_id = await engine.trigger(tenant, "skippy")
    await push(engine, tenant, "skip-a", {})
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["a"]["status"], tasks["a"]["is_skipped"]) == ("COMPLETED", True)
    assert tasks["a"]["output"] == '{"skipped": true}'
    # b's only parent was skipped: skipped too (Hatchet's cascade); c also has d
    assert (tasks["b"]["status"], tasks["b"]["is_skipped"]) == ("COMPLETED", True)
    assert "c" not in tasks
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
    )
    # queued, or assigned by the hop itself when the last round drained the queue
    assert (await engine.tasks_by_name(run_id))["c"]["status"] in ("QUEUED", "RUNNING")
    assert await matches_left(engine) == 0


async def test_skip_if_on_a_single_task_finishes_the_run(engine: Replica, tenant: str) -> None:
    await engine.register(
        tenant, single("lone", conditions(sleep("QUEUE", "30s"), user_event("SKIP", "never")))
    )
    run_id = await engine.trigger(tenant, "lone")
    await push(engine, tenant, "never", {})
    task = await engine.task_row(run_id)
    assert (task["status"], task["output"]) == ("COMPLETED", '{"skipped": true}')
    assert (await engine.run_row(run_id))["status"] == "COMPLETED"


async def test_cancel_if_on_a_root_cancels_it_and_cascades(engine: Replica, tenant: str) -> None:
    root = conditions(sleep("QUEUE", "30s"), user_event("CANCEL", "abort"))
    await engine.register(tenant, dag("abortive", root))
    run_id = await engine.trigger(tenant, "abortive")
    await push(engine, tenant, "abort", {})
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["a"]["status"], tasks["b"]["status"]) == ("CANCELLED", "CANCELLED")
    assert tasks["d"]["status"] == "QUEUED"  # its own branch goes on
    await engine.control.cancel(tenant_id=tenant, external_ids=[run_id])
    assert (await engine.run_row(run_id))["status"] == "CANCELLED"
    assert await matches_left(engine) == 0


async def test_a_look_back_sees_an_event_pushed_before_the_trigger(
    engine: Replica, tenant: str
) -> None:
    await push(engine, tenant, "ready", {"n": 1}, scope="s1")
    recent = user_event(
        "QUEUE", "ready", "input.n == 1", consider_events_since=since(-timedelta(minutes=1))
    )
    await engine.register(tenant, single("recent", conditions(recent)))
    run_id = await engine.trigger(tenant, "recent")
    assert (await engine.task_row(run_id))["status"] == "QUEUED"
    assert await queue_items(engine, run_id) == 1
    assert [e for e, _ in await engine.events(run_id)] == ["CREATED", "QUEUED"]
    # the same event is outside a look-back that starts later, or in another scope
    later = user_event("QUEUE", "ready", consider_events_since=since(timedelta(minutes=1)))
    scoped = user_event(
        "QUEUE", "ready", event_scope="s2", consider_events_since=since(-timedelta(minutes=1))
    )
    for name, condition in (("later", later), ("scoped", scoped)):
        await engine.register(tenant, single(name, conditions(condition)))
        other = await engine.trigger(tenant, name)
        assert (await engine.task_row(other))["status"] == "WAITING", name


async def test_a_look_back_skip_at_the_trigger_advances_the_run(
    engine: Replica, tenant: str
) -> None:
    await push(engine, tenant, "skip-all", {})
    skip = user_event("SKIP", "skip-all", consider_events_since=since(-timedelta(minutes=1)))
    await engine.register(tenant, dag("preskipped", conditions(sleep("QUEUE", "30s"), skip)))
    run_id = await engine.trigger(tenant, "preskipped")
    tasks = await engine.tasks_by_name(run_id)
    assert (tasks["a"]["status"], tasks["a"]["is_skipped"]) == ("COMPLETED", True)
    assert (tasks["b"]["status"], tasks["d"]["status"]) == ("COMPLETED", "QUEUED")
    assert await matches_left(engine) == 0


async def test_a_look_back_skip_of_the_last_child_finishes_the_run(
    engine: Replica, tenant: str
) -> None:
    """A child's look-back fires once its run has advanced: the run ends COMPLETED, not
    left RUNNING by the advance that created the child."""
    await push(engine, tenant, "done-already", {})
    skip = user_event("SKIP", "done-already", consider_events_since=since(-timedelta(minutes=1)))
    name = "tail"
    await engine.register(
        tenant,
        {
            "name": name,
            "tasks": [
                {"readable_id": "a", "action": f"{name}:a"},
                {
                    "readable_id": "b",
                    "action": f"{name}:b",
                    "parents": ["a"],
                    "conditions": conditions(sleep("QUEUE", "30s"), skip),
                },
            ],
        },
    )
    worker = await engine.connect_worker(tenant, [f"{name}:a", f"{name}:b"])
    run_id = await engine.trigger(tenant, name)
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
    )
    b = (await engine.tasks_by_name(run_id))["b"]
    assert (b["status"], b["is_skipped"]) == ("COMPLETED", True)
    run = await engine.run_row(run_id)
    assert (run["status"], run["finished_at"] is not None) == ("COMPLETED", True)
    assert await matches_left(engine) == 0
