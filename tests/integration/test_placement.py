"""Placement and priority against PostgreSQL: labels, sticky, paused workers, released slots,
and priority order with two replicas claiming from one queue."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.harness import Replica, drain

from hewer.engine.core.definition import InvalidDefinition
from hewer.engine.core.placement import Comparator, DesiredLabel
from hewer.engine.services.workers import WorkerSession


def single(name: str, **task: Any) -> dict[str, Any]:
    return {"name": name, "tasks": [{"readable_id": "run", "action": f"{name}:run", **task}]}


async def labelled(
    engine: Replica, tenant: str, actions: list[str], name: str, slots: int = 10, **labels: Any
) -> WorkerSession:
    worker = await engine.connect_worker(tenant, actions, slots={"default": slots}, name=name)
    assert await engine.repo.merge_worker_labels(
        tenant_id=tenant, worker_id=worker.worker_id, labels=labels
    )
    return worker


async def test_step_labels_send_work_to_the_heaviest_match(engine: Replica, tenant: str) -> None:
    labels = {
        "model": {"str_value": "fancy", "weight": 10},
        "memory": {"int_value": 256, "comparator": "GREATER_THAN"},
    }
    await engine.register(tenant, single("aff", worker_labels=labels))
    light = await labelled(engine, tenant, ["aff:run"], "light", model="fancy")
    heavy = await labelled(engine, tenant, ["aff:run"], "heavy", memory=512)
    for _ in range(3):
        await engine.trigger(tenant, "aff")
    assert await engine.scheduler.run_round(tenant)
    assert len(drain(heavy)) == 3
    assert drain(light) == []


async def test_trigger_labels_replace_the_steps_and_required_excludes(
    engine: Replica, tenant: str
) -> None:
    await engine.register(
        tenant, single("req", worker_labels={"zone": {"str_value": "a", "required": True}})
    )
    a = await labelled(engine, tenant, ["req:run"], "a", zone="a")
    b = await labelled(engine, tenant, ["req:run"], "b", zone="b")
    await engine.trigger(tenant, "req")
    override = (DesiredLabel(key="zone", value="b", required=True),)
    run_id = await engine.trigger(tenant, "req", desired_worker_labels=override)
    stored = (await engine.run_row(run_id))["desired_worker_labels"]
    assert stored == {
        "zone": {"value": "b", "comparator": "EQUAL", "weight": 100, "required": True}
    }
    await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(b)] == [run_id]
    assert len(drain(a)) == 1

    # nobody meets the requirement: the run stays queued, other work still flows past it
    nowhere = (DesiredLabel(key="zone", value="c", required=True),)
    stuck = await engine.trigger(tenant, "req", desired_worker_labels=nowhere)
    later = await engine.trigger(tenant, "req")
    await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(a)] == [later]
    assert (await engine.task_row(stuck))["status"] == "QUEUED"


async def test_items_held_back_by_placement_do_not_hide_the_queue_behind_them(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, single("hol"))
    busy = await labelled(engine, tenant, ["hol:run"], "busy", slots=1, zone="a")
    free = await labelled(engine, tenant, ["hol:run"], "free", slots=1, zone="b")
    await engine.trigger(tenant, "hol")
    await engine.scheduler.run_round(tenant)  # fills one of the two workers
    got_busy, got_free = drain(busy), drain(free)
    assert len(got_busy) + len(got_free) == 1
    holder, other = (busy, free) if got_busy else (free, busy)
    zone = "a" if holder is busy else "b"
    pinned = (DesiredLabel(key="zone", value=zone, required=True),)
    # a head of items only the full worker may take, then one anyone may take
    for _ in range(5):
        await engine.trigger(tenant, "hol", desired_worker_labels=pinned)
    last = await engine.trigger(tenant, "hol")
    assert await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(other)] == [last]


async def test_comparator_on_the_wrong_type_registers_nothing(engine: Replica, tenant: str) -> None:
    bad = {"memory": {"str_value": "lots", "comparator": "GREATER_THAN_OR_EQUAL"}}
    with pytest.raises(InvalidDefinition, match=r"'memory'.*compares integers"):
        await engine.register(tenant, single("bad", worker_labels=bad))
    assert await engine.repo.latest_version_by_name(tenant, "bad") is None


STICKY_DAG = {
    "name": "sticky",
    "sticky": "HARD",
    "tasks": [
        {"readable_id": "a", "action": "sticky:a"},
        {"readable_id": "b", "action": "sticky:b", "parents": ["a"]},
    ],
}


@pytest.mark.parametrize("sticky", ["HARD", "SOFT"])
async def test_sticky_child_waits_for_or_prefers_its_parents_worker(dsn: str, sticky: str) -> None:
    """Two replicas, one worker each: the child of a task run on replica A's worker is never
    taken by replica B when HARD; with SOFT it is left to A for a grace period."""
    first, second = await Replica.start(dsn), await Replica.start(dsn)
    try:
        tenant = await first.repo.ensure_tenant("t")
        await first.register(tenant, {**STICKY_DAG, "sticky": sticky})
        wa = await first.connect_worker(tenant, ["sticky:a", "sticky:b"], name="wa")
        wb = await second.connect_worker(tenant, ["sticky:a", "sticky:b"], name="wb")
        run_id = await first.trigger(tenant, "sticky")
        assert await first.scheduler.run_round(tenant)
        (a,) = drain(wa)
        await first.lifecycle.completed(
            tenant_id=tenant, task_id=a.task_id, retry_count=0, output="{}"
        )
        b_task = (await first.tasks_by_name(run_id))["b"]
        item = await first.repo.pool.fetchrow(
            "SELECT desired_worker_id FROM queue_items WHERE task_id = $1", b_task["id"]
        )
        assert str(item["desired_worker_id"]) == wa.worker_id
        assert not await second.scheduler.run_round(tenant)
        assert drain(wb) == []
        if sticky == "SOFT":
            # after the grace period replica B may take it
            await first.repo.pool.execute(
                "UPDATE queue_items SET available_at = now() - interval '1 minute'"
                " WHERE task_id = $1",
                b_task["id"],
            )
            assert await second.scheduler.run_round(tenant)
            assert [m.readable_id for m in drain(wb)] == ["b"]
        else:
            assert await first.scheduler.run_round(tenant)
            assert [m.readable_id for m in drain(wa)] == ["b"]
    finally:
        await first.close()
        await second.close()


async def test_a_sticky_tasks_retry_and_replay_keep_the_inherited_worker(
    engine: Replica, tenant: str
) -> None:
    definition = {
        "name": "sticky",
        "sticky": "HARD",
        "tasks": [
            {"readable_id": "a", "action": "sticky:a"},
            {"readable_id": "s", "action": "sticky:s", "parents": ["a"], "retries": 1},
        ],
    }
    await engine.register(tenant, definition)
    wa = await engine.connect_worker(tenant, ["sticky:a", "sticky:s"], name="wa")
    run_id = await engine.trigger(tenant, "sticky")
    await engine.scheduler.run_round(tenant)
    (a,) = drain(wa)
    wb = await engine.connect_worker(tenant, ["sticky:a", "sticky:s"], name="wb")
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=a.task_id, retry_count=0, output="{}"
    )

    async def pinned_to() -> str:
        task_id = (await engine.tasks_by_name(run_id))["s"]["id"]
        value = await engine.repo.pool.fetchval(
            "SELECT desired_worker_id FROM queue_items WHERE task_id = $1", task_id
        )
        return str(value)

    assert await pinned_to() == wa.worker_id
    await engine.scheduler.run_round(tenant)
    (s,) = drain(wa)
    await engine.lifecycle.failed(tenant_id=tenant, task_id=s.task_id, retry_count=0, error="x")
    assert await pinned_to() == wa.worker_id  # the retry
    await engine.scheduler.run_round(tenant)
    (s,) = drain(wa)
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=s.task_id, retry_count=1, output="{}"
    )
    assert await engine.control.replay(tenant_id=tenant, external_ids=[s.task_id])
    assert await pinned_to() == wa.worker_id  # the replay
    assert drain(wb) == []


async def test_hard_sticky_spawned_child_runs_only_on_the_desired_worker(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, {**single("kid"), "sticky": "HARD"})
    full = await engine.connect_worker(tenant, ["kid:run"], slots={"default": 1}, name="full")
    idle = await engine.connect_worker(tenant, ["kid:run"], name="idle")
    blocker = await engine.trigger(tenant, "kid", desired_worker_id=full.worker_id)
    pinned = await engine.trigger(tenant, "kid", desired_worker_id=full.worker_id)
    await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(full)] == [blocker]
    assert drain(idle) == []  # full has no room, and idle may not take it
    await engine.lifecycle.completed(tenant_id=tenant, task_id=blocker, retry_count=0, output="{}")
    await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(full)] == [pinned]


async def test_paused_worker_gets_nothing_and_its_work_stays_queued(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, single("pz"))
    worker = await engine.connect_worker(tenant, ["pz:run"])
    await engine.repo.pool.execute(
        "UPDATE workers SET is_paused = true WHERE id = $1", worker.worker_id
    )
    run_id = await engine.trigger(tenant, "pz")
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    assert (await engine.task_row(run_id))["status"] == "QUEUED"
    await engine.repo.pool.execute(
        "UPDATE workers SET is_paused = false WHERE id = $1", worker.worker_id
    )
    assert await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(worker)] == [run_id]


async def test_a_released_slot_is_reused_and_slot_costs_count(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single("costly", slot_requests={"default": 2}))
    worker = await engine.connect_worker(tenant, ["costly:run"], slots={"default": 3})
    first = await engine.trigger(tenant, "costly")
    second = await engine.trigger(tenant, "costly")
    await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(worker)] == [first]  # 2 of 3 units used: no room for 2
    assert await engine.repo.release_slot(tenant_id=tenant, task_id=first) == worker.worker_id
    assert await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(worker)] == [second]
    assert (await engine.task_row(first))["status"] == "RUNNING"  # released, still running


async def held(
    engine: Replica,
    tenant: str,
    workers: list[str],
    actions: list[str],
    *,
    ready_only: bool = False,
) -> dict[str, dict[str, int]]:
    """The slot units each worker read holds (the scheduler's capacity read)."""
    rows = await engine.repo.worker_capacity(
        tenant_id=tenant,
        worker_ids=workers,
        action_ids=actions,
        ready_only=ready_only,
        heartbeat_window=60,
    )
    return {str(r["id"]): dict(r["used"]) for r in rows}


async def test_held_slots_add_up_per_kind_over_every_held_task(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, single("mixed", slot_requests={"default": 2, "gpu": 1}))
    await engine.register(tenant, single("plain"))
    worker = await engine.connect_worker(
        tenant, ["mixed:run", "plain:run"], slots={"default": 20, "gpu": 5}
    )
    mixed = [await engine.trigger(tenant, "mixed") for _ in range(3)]
    plain = [await engine.trigger(tenant, "plain") for _ in range(4)]
    await engine.scheduler.run_round(tenant)
    assert len(drain(worker)) == 7
    assert await held(engine, tenant, [worker.worker_id], ["mixed:run"]) == {
        worker.worker_id: {"default": 3 * 2 + 4, "gpu": 3}
    }
    await engine.repo.release_slot(tenant_id=tenant, task_id=mixed[0])
    await engine.repo.release_slot(tenant_id=tenant, task_id=plain[0])
    assert await held(engine, tenant, [worker.worker_id], ["mixed:run"]) == {
        worker.worker_id: {"default": 2 * 2 + 3, "gpu": 2}
    }


async def test_held_slots_are_read_per_worker_for_many_workers_at_once(
    engine: Replica, tenant: str
) -> None:
    """One read for several workers (the scheduler's round) keeps each worker's units apart,
    and a worker holding nothing reads as empty; with ``ready_only`` it reads only the
    workers that serve an action with a ready item."""
    await engine.register(tenant, single("mixed", slot_requests={"default": 2, "gpu": 1}))
    await engine.register(tenant, single("plain"))
    await engine.register(tenant, single("idle"))
    gpu = await engine.connect_worker(tenant, ["mixed:run"], slots={"default": 20, "gpu": 5})
    cpu = await engine.connect_worker(tenant, ["plain:run"], slots={"default": 20})
    idle = await engine.connect_worker(tenant, ["idle:run"], slots={"default": 20})
    for _ in range(2):
        await engine.trigger(tenant, "mixed")
    for _ in range(3):
        await engine.trigger(tenant, "plain")
    await engine.scheduler.run_round(tenant)
    assert (len(drain(gpu)), len(drain(cpu)), len(drain(idle))) == (2, 3, 0)
    every = [gpu.worker_id, cpu.worker_id, idle.worker_id]
    actions = ["mixed:run", "plain:run", "idle:run"]
    units = {
        gpu.worker_id: {"default": 4, "gpu": 2},
        cpu.worker_id: {"default": 3},
        idle.worker_id: {},
    }
    assert await held(engine, tenant, every, actions) == units
    # the function the previous release calls, during a rolling upgrade: the same reading
    rows = await engine.repo.pool.fetch(
        "SELECT id, used FROM hewer_local_worker_capacity($1::uuid[], 60)", every
    )
    assert {str(r["id"]): dict(r["used"]) for r in rows} == units

    # nothing is queued now; then one plain run is
    assert await held(engine, tenant, every, actions, ready_only=True) == {}
    await engine.trigger(tenant, "plain")
    assert await held(engine, tenant, every, actions, ready_only=True) == {
        cpu.worker_id: {"default": 3}
    }
    # of the workers serving a ready action, only those the caller named
    assert await held(engine, tenant, [gpu.worker_id], actions, ready_only=True) == {}


async def test_priority_order_holds_with_two_replicas(dsn: str) -> None:
    first, second = await Replica.start(dsn), await Replica.start(dsn)
    try:
        tenant = await first.repo.ensure_tenant("t")
        await first.register(tenant, {**single("prio"), "default_priority": 2})
        runs: dict[str, int] = {}
        for i in range(12):
            priority = [1, 3, None, 2][i % 4]
            run_id = await (first if i % 2 else second).trigger(tenant, "prio", priority=priority)
            runs[run_id] = priority or 2
        workers = [
            await first.connect_worker(tenant, ["prio:run"], slots={"default": 1}, name="w1"),
            await second.connect_worker(tenant, ["prio:run"], slots={"default": 1}, name="w2"),
        ]
        started: list[str] = []
        for _ in range(12):
            for replica, worker in zip((first, second), workers, strict=True):
                await replica.scheduler.run_round(tenant)
                for message in drain(worker):
                    started.append(message.task_id)
                    await replica.lifecycle.completed(
                        tenant_id=tenant, task_id=message.task_id, retry_count=0, output="{}"
                    )
        assert sorted(started) == sorted(runs)
        order = [runs[r] for r in started]
        assert order == sorted(order, reverse=True), order
        assert {
            int(r["priority"])
            for r in await first.repo.pool.fetch("SELECT priority FROM workflow_runs")
        } == {1, 2, 3}
    finally:
        await first.close()
        await second.close()


def test_comparator_names_match_the_proto() -> None:
    from hatchet_sdk.contracts.v1.shared import trigger_pb2

    assert [c.value for c in Comparator] == list(trigger_pb2.WorkerLabelComparator.keys())
