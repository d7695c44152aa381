"""A trigger names its workflow's latest version without looking it up each time: each
replica keeps the versions it triggered, and the one statement that creates the runs
refuses a version that is no longer the latest, or a deleted workflow (then the trigger
looks the version up and tries again). These tests run two replicas: the one that
triggers holds a version in its cache while the other replica changes the workflow. The
latest version is the column workflows.latest_version_id (migration 0020)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from tests.integration.harness import Replica

from hewer.engine.db.migrate import apply_migrations
from hewer.engine.services.tenant_objects import TenantObjects
from hewer.engine.services.triggers import VERSION_ATTEMPTS, TriggerError


def solo(timeout: str) -> dict[str, Any]:
    return {
        "name": "solo",
        "tasks": [{"readable_id": "run", "action": "solo:run", "timeout": timeout}],
    }


@pytest_asyncio.fixture
async def other(dsn: str) -> AsyncIterator[Replica]:
    replica = await Replica.start(dsn)
    try:
        yield replica
    finally:
        await replica.close()


def count_lookups(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    looked_up: list[str] = []
    lookup = replica.repo.latest_version_by_name

    async def counted(tenant_id: str, name: str) -> Any:
        looked_up.append(name)
        return await lookup(tenant_id, name)

    monkeypatch.setattr(replica.repo, "latest_version_by_name", counted)
    return looked_up


async def version_of(replica: Replica, run_id: str) -> str:
    return str((await replica.run_row(run_id))["workflow_version_id"])


async def test_a_repeated_trigger_does_not_look_the_version_up_again(
    engine: Replica, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = await engine.register(tenant, solo("60s"))
    looked_up = count_lookups(engine, monkeypatch)
    runs = [await engine.trigger(tenant, "solo", {"n": n}) for n in range(3)]
    assert looked_up == ["solo"]
    assert [await version_of(engine, r) for r in runs] == [v1, v1, v1]


async def test_a_version_registered_on_another_replica_is_the_one_that_runs(
    engine: Replica, other: Replica, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = await other.register(tenant, solo("60s"))
    first = await engine.trigger(tenant, "solo")
    v2 = await other.register(tenant, solo("90s"))
    assert v2 != v1
    looked_up = count_lookups(engine, monkeypatch)
    second = await engine.trigger(tenant, "solo")
    assert (await version_of(engine, first), await version_of(engine, second)) == (v1, v2)
    assert looked_up == ["solo"]  # the cached v1 was refused, then v2 looked up
    # the refused attempt wrote nothing: one run, one task, one queue item of v2
    async with engine.repo.pool.acquire() as conn:
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM workflow_runs WHERE tenant_id = $1) AS runs,
                      (SELECT count(*) FROM tasks WHERE tenant_id = $1) AS tasks,
                      (SELECT count(*) FROM queue_items WHERE tenant_id = $1) AS items""",
            tenant,
        )
    assert dict(counts) == {"runs": 2, "tasks": 2, "items": 2}
    third = await engine.trigger(tenant, "solo")
    assert await version_of(engine, third) == v2
    assert looked_up == ["solo"]  # v2 is the cached one now


async def test_a_workflow_deleted_on_another_replica_is_not_found(
    engine: Replica, other: Replica, tenant: str
) -> None:
    await other.register(tenant, solo("60s"))
    await engine.trigger(tenant, "solo")
    assert await TenantObjects(repo=other.repo).delete_workflow_by_name(tenant, "solo")
    with pytest.raises(TriggerError, match="workflow 'solo' not found"):
        await engine.trigger(tenant, "solo")
    # registered again under the same name: a new workflow, and runs go to it
    v3 = await other.register(tenant, solo("30s"))
    assert await version_of(engine, await engine.trigger(tenant, "solo")) == v3


async def test_a_workflow_changing_under_every_attempt_fails_clearly_and_writes_nothing(
    engine: Replica, other: Replica, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lookup is followed by a registration on the other replica before the runs are
    written, so every attempt names a version that is no longer the latest: after
    VERSION_ATTEMPTS the trigger gives up with a clear error, having created nothing."""
    await other.register(tenant, solo("10s"))
    lookup = engine.repo.latest_version_by_name
    registered: list[str] = []

    async def overtaken(tenant_id: str, name: str) -> Any:
        row = await lookup(tenant_id, name)
        registered.append(await other.register(tenant, solo(f"{11 + len(registered)}s")))
        return row

    monkeypatch.setattr(engine.repo, "latest_version_by_name", overtaken)
    with pytest.raises(TriggerError, match=f"changed {VERSION_ATTEMPTS} times.*nothing was"):
        await engine.trigger(tenant, "solo")
    assert len(registered) == VERSION_ATTEMPTS
    async with engine.repo.pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM workflow_runs WHERE tenant_id = $1", tenant)
            == 0
        )
        assert (
            await conn.fetchval("SELECT count(*) FROM queue_items WHERE tenant_id = $1", tenant)
            == 0
        )
    monkeypatch.setattr(engine.repo, "latest_version_by_name", lookup)
    assert await version_of(engine, await engine.trigger(tenant, "solo")) == registered[-1]


async def test_workflows_name_their_latest_version_from_the_migration_on(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    """Migration 0020 fills workflows.latest_version_id from the versions stored, and each
    version added later becomes the latest unless a higher ordinal is already there."""
    dsn = await empty_database()
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(dsn, before=20)
        tenant, workflow, bare = (str(uuid.uuid4()) for _ in range(3))
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'old')", tenant)
        await conn.execute(
            "INSERT INTO workflows (id, tenant_id, name) VALUES ($1, $2, 'wf'), ($3, $2, 'bare')",
            workflow,
            tenant,
            bare,
        )

        async def add_version(ordinal: int) -> str:
            return str(
                await conn.fetchval(
                    "INSERT INTO workflow_versions (tenant_id, workflow_id, ordinal, checksum,"
                    " definition) VALUES ($1, $2, $3, $4, '{}') RETURNING id",
                    tenant,
                    workflow,
                    ordinal,
                    f"c{ordinal}",
                )
            )

        first, second = await add_version(1), await add_version(2)
        assert (await apply_migrations(dsn))[0] == "0020_latest_version"

        async def latest(workflow_id: str) -> str | None:
            value = await conn.fetchval(
                "SELECT latest_version_id FROM workflows WHERE id = $1", workflow_id
            )
            return None if value is None else str(value)

        assert (await latest(workflow), await latest(bare)) == (second, None)
        assert first != second
        third = await add_version(3)
        assert await latest(workflow) == third
        await add_version(0)  # written late with a lower ordinal: not the latest
        assert await latest(workflow) == third
    finally:
        await conn.close()
