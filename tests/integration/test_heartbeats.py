"""Batched heartbeats (services/heartbeats.py) and the dead-worker sweep next to them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from tests.integration.harness import Replica

from hewer.engine.services.heartbeats import HeartbeatBuffer
from hewer.engine.services.worker_registry import WorkerRegistry
from hewer.engine.services.workers import WorkerSession

HEARTBEAT_TIMEOUT = 5.0

pytestmark = pytest.mark.engine_options(heartbeat_timeout=HEARTBEAT_TIMEOUT)


async def age_workers(engine: Replica, workers: list[WorkerSession], seconds: float) -> None:
    await engine.repo.pool.execute(
        "UPDATE workers SET last_heartbeat_at = now() - make_interval(secs => $2)"
        " WHERE id = ANY($1::uuid[])",
        [w.worker_id for w in workers],
        seconds,
    )


async def beat_ages(engine: Replica, workers: list[WorkerSession]) -> list[float]:
    rows = await engine.repo.pool.fetch(
        "SELECT extract(epoch FROM now() - last_heartbeat_at)::float8 AS age FROM workers"
        " WHERE id = ANY($1::uuid[]) ORDER BY id",
        [w.worker_id for w in workers],
    )
    return [r["age"] for r in rows]


async def test_one_flush_writes_every_noted_beat_in_one_statement(
    engine: Replica, tenant: str
) -> None:
    workers = [await engine.connect_worker(tenant, ["a:b"], name=f"w{i}") for i in range(5)]
    await age_workers(engine, workers, 60)
    beats = HeartbeatBuffer(repo=engine.repo)
    registry = WorkerRegistry(engine.repo, beats=beats)
    for w in workers:
        beat = await registry.heartbeat(
            tenant_id=tenant, worker_id=w.worker_id, streaming_here=True
        )
        assert beat is not None and not beat.listener_lost and not beat.stored
    # noted, not written yet
    assert all(age > 50 for age in await beat_ages(engine, workers))

    assert await beats.flush() == 5
    assert beats.pending == 0
    assert all(age < 5 for age in await beat_ages(engine, workers))
    # one transaction wrote all five rows
    xmins = await engine.repo.pool.fetch(
        "SELECT DISTINCT xmin::text FROM workers WHERE id = ANY($1::uuid[])",
        [w.worker_id for w in workers],
    )
    assert len(xmins) == 1
    assert await beats.flush() == 0  # nothing noted since: no statement at all


async def test_the_stored_time_is_when_the_beat_arrived_not_when_it_was_flushed(
    engine: Replica, tenant: str
) -> None:
    worker = await engine.connect_worker(tenant, ["a:b"])
    await age_workers(engine, [worker], 60)
    beats = HeartbeatBuffer(repo=engine.repo)
    beats.note(tenant_id=tenant, worker_id=worker.worker_id)
    await asyncio.sleep(1.0)
    await beats.flush()
    (age,) = await beat_ages(engine, [worker])
    assert 0.9 < age < 3.0


async def test_the_next_beat_learns_what_the_flush_found(engine: Replica, tenant: str) -> None:
    lost = await engine.connect_worker(tenant, ["a:b"], name="lost")
    # timers declared it dead while its stream stayed open
    await engine.repo.pool.execute(
        "UPDATE workers SET is_active = false WHERE id = $1", lost.worker_id
    )
    unknown = str(uuid.uuid4())
    other_tenant = str(uuid.uuid4())
    beats = HeartbeatBuffer(repo=engine.repo)
    registry = WorkerRegistry(engine.repo, beats=beats)

    async def beat(worker_id: str, tenant_id: str = tenant) -> Any:
        return await registry.heartbeat(
            tenant_id=tenant_id, worker_id=worker_id, streaming_here=True
        )

    assert not (await beat(lost.worker_id)).listener_lost
    assert await beat(unknown) is not None
    assert await beat(lost.worker_id, other_tenant) is not None  # an id of another tenant
    await beats.flush()

    assert (await beat(lost.worker_id)).listener_lost
    assert await beat(unknown) is None
    # a beat told to reconnect is not noted; the worker's next beat is
    assert beats.pending == 0
    assert not (await beat(lost.worker_id)).listener_lost
    # a worker that re-opened its stream is not told to reconnect by an older flush
    await beats.flush()
    await registry.worker_listening(
        tenant_id=tenant, worker_id=lost.worker_id, engine_id=engine.engine_id
    )
    assert not (await beat(lost.worker_id)).listener_lost


class FlakyRepo:
    """The real repository, whose heartbeat writes fail while ``down`` (the database is gone)."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo
        self.down = False

    async def worker_heartbeats(self, **kwargs: Any) -> Any:
        if self.down:
            raise ConnectionRefusedError("database down")
        return await self._repo.worker_heartbeats(**kwargs)


async def test_beats_noted_during_an_outage_are_written_once_it_is_over(
    engine: Replica, tenant: str
) -> None:
    worker = await engine.connect_worker(tenant, ["a:b"])
    await age_workers(engine, [worker], 60)
    repo = FlakyRepo(engine.repo)
    beats = HeartbeatBuffer(repo=repo)  # type: ignore[arg-type]
    beats.note(tenant_id=tenant, worker_id=worker.worker_id)
    repo.down = True
    assert await beats.flush() == 0
    assert beats.pending == 1
    repo.down = False
    assert await beats.flush() == 1
    (age,) = await beat_ages(engine, [worker])
    assert age < 5


async def test_a_worker_that_stops_beating_is_found_dead_and_a_beating_one_is_not(
    engine: Replica, tenant: str
) -> None:
    silent = await engine.connect_worker(tenant, ["a:b"], name="silent")
    beating = await engine.connect_worker(tenant, ["a:b"], name="beating")
    await age_workers(engine, [silent, beating], HEARTBEAT_TIMEOUT * 3)
    beats = HeartbeatBuffer(repo=engine.repo)
    beats.note(tenant_id=tenant, worker_id=beating.worker_id)
    await beats.flush()

    await engine.timers.run_once()

    rows = {
        str(r["id"]): r["is_active"]
        for r in await engine.repo.pool.fetch(
            "SELECT id, is_active FROM workers WHERE tenant_id = $1", tenant
        )
    }
    assert rows == {silent.worker_id: False, beating.worker_id: True}


async def test_the_dead_worker_sweep_does_not_wait_for_a_row_being_written(
    engine: Replica, tenant: str
) -> None:
    stale = await engine.connect_worker(tenant, ["a:b"])
    await age_workers(engine, [stale], HEARTBEAT_TIMEOUT * 3)
    async with engine.repo.pool.acquire() as holder, holder.transaction():
        # a heartbeat flush (or a listener) holds the row
        await holder.execute(
            "SELECT 1 FROM workers WHERE id = $1 FOR NO KEY UPDATE", stale.worker_id
        )
        await asyncio.wait_for(
            engine.repo.deactivate_dead_workers(stale_after=HEARTBEAT_TIMEOUT), timeout=2.0
        )
        worker = await engine.repo.get_worker(tenant_id=tenant, worker_id=stale.worker_id)
        assert worker is not None and worker["is_active"]
    # released and still stale: the next sweep takes it
    await engine.repo.deactivate_dead_workers(stale_after=HEARTBEAT_TIMEOUT)
    worker = await engine.repo.get_worker(tenant_id=tenant, worker_id=stale.worker_id)
    assert worker is not None and not worker["is_active"]
