"""The REST tests' world: two tenants' rows inserted with plain SQL (no engine services),
the app on aiohttp's test server, and a recording fake of ``RunControl``.

``test_rest_api`` and ``test_rest_resources`` import the ``world`` fixture from here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hatchet_sdk.clients.rest.models.api_errors import APIErrors

from hewer.engine.api.rest.app import build_app
from hewer.engine.db.repository import Repository, create_pool
from hewer.engine.services.auth import Authenticator
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.reads import Reads
from hewer.engine.services.tenant_objects import TenantObjects

SINCE = "2000-01-01T00:00:00.000000+0000"  # what the Python client's %z produces


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class FakeControl:
    """Records every call; pause/resume writes the flag so the response can show it."""

    repo: Repository
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    trigger_result: str = ""

    async def cancel(self, *, tenant_id: str, external_ids: Sequence[str]) -> list[str]:
        self.calls.append(("cancel", {"tenant_id": tenant_id, "ids": list(external_ids)}))
        return list(external_ids)

    async def replay(self, *, tenant_id: str, external_ids: Sequence[str]) -> list[str]:
        self.calls.append(("replay", {"tenant_id": tenant_id, "ids": list(external_ids)}))
        return list(external_ids)

    async def trigger(
        self,
        *,
        tenant_id: str,
        workflow_name: str,
        input: dict[str, Any],
        additional_metadata: dict[str, Any],
        priority: int | None,
    ) -> str:
        self.calls.append(
            (
                "trigger",
                {
                    "tenant_id": tenant_id,
                    "name": workflow_name,
                    "input": input,
                    "metadata": additional_metadata,
                    "priority": priority,
                },
            )
        )
        if workflow_name == "nope":
            raise ValueError("workflow nope not found")
        return self.trigger_result

    async def set_worker_paused(self, *, tenant_id: str, worker_id: str, paused: bool) -> bool:
        self.calls.append(("pause", {"tenant_id": tenant_id, "worker": worker_id, "p": paused}))
        status = await self.repo.pool.execute(
            "UPDATE workers SET is_paused = $3 WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            worker_id,
            paused,
        )
        return bool(status.endswith(" 1"))


@dataclass
class World:
    client: TestClient[Any, Any]
    control: FakeControl
    token_a: str
    token_b: str
    tenant_a: str
    tenant_b: str
    ids: dict[str, str]

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token_a}"}

    async def get(
        self, path: str, *, token: str | None = None, status: int = 200, params: Any = None
    ) -> Any:
        resp = await self.client.get(path, headers=self.auth(token), params=params)
        body = await resp.json()
        assert resp.status == status, body
        if status >= 400:
            APIErrors.from_dict(body)
        return body

    async def send(
        self, method: str, path: str, body: Any, *, status: int = 200, raw: str | None = None
    ) -> Any:
        data = raw if raw is not None else json.dumps(body)
        resp = await self.client.request(
            method, path, headers={**self.auth(), "Content-Type": "application/json"}, data=data
        )
        out = await resp.json()
        assert resp.status == status, out
        if status >= 400:
            APIErrors.from_dict(out)
        return out


async def _workflow(
    repo: Repository,
    tenant: str,
    name: str,
    steps: list[tuple[str, list[str]]],
    ids: dict[str, str],
) -> tuple[str, str]:
    wf = str(
        await repo.pool.fetchval(
            "INSERT INTO workflows (tenant_id, name) VALUES ($1, $2) RETURNING id", tenant, name
        )
    )
    version = str(
        await repo.pool.fetchval(
            "INSERT INTO workflow_versions (tenant_id, workflow_id, ordinal, checksum, definition)"
            " VALUES ($1, $2, 1, 'x', '{}'::jsonb) RETURNING id",
            tenant,
            wf,
        )
    )
    for position, (step, parents) in enumerate(steps):
        ids[f"{name}/{step}"] = str(
            await repo.pool.fetchval(
                "INSERT INTO steps (tenant_id, workflow_version_id, readable_id, action_id,"
                " position, timeout_seconds, schedule_timeout_seconds, parents)"
                " VALUES ($1, $2, $3, $4, $5, 60, 300, $6) RETURNING id",
                tenant,
                version,
                step,
                f"{name}:{step}",
                position,
                parents,
            )
        )
    return wf, version


async def _run(
    repo: Repository,
    *,
    tenant: str,
    run_id: str,
    wf: str,
    version: str,
    status: str,
    created: datetime,
    metadata: dict[str, Any] | None = None,
    parent_task: str | None = None,
    event: str | None = None,
) -> None:
    await repo.pool.execute(
        "INSERT INTO workflow_runs (id, tenant_id, workflow_id, workflow_version_id, status,"
        " input, additional_metadata, parent_task_id, triggering_event_id, created_at,"
        " started_at, finished_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10,"
        " CASE WHEN $5::text IN ('COMPLETED','FAILED','CANCELLED')"
        " THEN $10::timestamptz + interval '2 s' END)",
        run_id,
        tenant,
        wf,
        version,
        status,
        {"n": 1},
        metadata or {},
        parent_task,
        event,
        created,
    )


async def _task(
    repo: Repository,
    *,
    tenant: str,
    task_id: str,
    run_id: str,
    step: str,
    name: str,
    status: str,
    created: datetime,
    output: str | None = None,
    error: str | None = None,
    worker: str | None = None,
    retry: int = 0,
) -> None:
    await repo.pool.execute(
        "INSERT INTO tasks (id, tenant_id, workflow_run_id, step_id, readable_id, action_id,"
        " status, output, error, worker_id, retry_count, created_at, started_at, finished_at)"
        " VALUES ($1,$2,$3,$4,$5,$5,$6,$7,$8,$9,$10,$11,$11,"
        " CASE WHEN $6::text IN ('COMPLETED','FAILED','CANCELLED')"
        " THEN $11::timestamptz + interval '1 s' END)",
        task_id,
        tenant,
        run_id,
        step,
        name,
        status,
        output,
        error,
        worker,
        retry,
        created,
    )


async def _populate(repo: Repository, tenant_a: str, tenant_b: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    now = datetime.now(UTC)
    dag_wf, dag_v = await _workflow(
        repo,
        tenant_a,
        "dag-wf",
        [
            ("step1", []),
            ("step2", ["step1"]),
            ("step3", ["step1"]),
            ("step4", ["step2", "step3"]),
        ],
        ids,
    )
    one_wf, one_v = await _workflow(repo, tenant_a, "single", [("single", [])], ids)
    b_wf, b_v = await _workflow(repo, tenant_b, "b-wf", [("only", [])], ids)
    ids |= {"dag_wf": dag_wf, "one_wf": one_wf, "b_wf": b_wf, "dag_v": dag_v}

    worker = ids["worker"] = new_id()
    await repo.pool.execute(
        "INSERT INTO workers (id, tenant_id, name, actions, labels, runtime_info,"
        " last_heartbeat_at, slot_config) VALUES ($1, $2, 'e2e-test-worker', $3, $4, $5, now(),"
        " '{\"default\": 10}')",
        worker,
        tenant_a,
        ["dag-wf:step1"],
        {"region": "eu", "n": {"intValue": 3}},
        {"sdkVersion": "1.37.5", "language": "PYTHON", "os": "linux"},
    )
    stale = ids["stale_worker"] = new_id()
    await repo.pool.execute(
        "INSERT INTO workers (id, tenant_id, name, last_heartbeat_at)"
        " VALUES ($1, $2, 'old', now() - interval '1 minute')",
        stale,
        tenant_a,
    )
    b_worker = ids["b_worker"] = new_id()
    await repo.pool.execute(
        "INSERT INTO workers (id, tenant_id, name, last_heartbeat_at) VALUES ($1, $2, 'b', now())",
        b_worker,
        tenant_b,
    )

    event = ids["event"] = new_id()
    await repo.pool.execute(
        "INSERT INTO events (id, tenant_id, key, payload, additional_metadata, scope)"
        " VALUES ($1, $2, 'user:create', $3, $4, 'scope-1')",
        event,
        tenant_a,
        {"x": 1},
        {"source": "test"},
    )
    b_event = ids["b_event"] = new_id()
    await repo.pool.execute(
        "INSERT INTO events (id, tenant_id, key) VALUES ($1, $2, 'user:create')", b_event, tenant_b
    )

    # A DAG run: step1 and step2 completed, step3 failed, step4 not created.
    dag = ids["dag_run"] = new_id()
    await _run(
        repo,
        tenant=tenant_a,
        run_id=dag,
        wf=dag_wf,
        version=dag_v,
        status="FAILED",
        created=now - timedelta(minutes=5),
        metadata={"test_run_id": "abc", "n": 7},
    )
    for i, (step, status, output, error) in enumerate(
        [
            ("step1", "COMPLETED", '{"random_number": 4}', None),
            ("step2", "COMPLETED", "", None),
            ("step3", "FAILED", None, "ValueError: step3 failed\ntraceback"),
        ]
    ):
        tid = ids[step] = new_id()
        await _task(
            repo,
            tenant=tenant_a,
            task_id=tid,
            run_id=dag,
            step=ids[f"dag-wf/{step}"],
            name=step,
            status=status,
            created=now - timedelta(minutes=5, seconds=-i),
            output=output,
            error=error,
            worker=worker,
            retry=1 if step == "step3" else 0,
        )
    for kind, task, message in [
        ("QUEUED", "step1", ""),
        ("ASSIGNED", "step1", ""),
        ("STARTED", "step1", ""),
        ("COMPLETED", "step1", ""),
        ("FAILED", "step3", "ValueError: step3 failed"),
        ("RETRYING", "step3", "ValueError: step3 failed"),
        ("SOMETHING_ELSE", "step3", ""),
    ]:
        await repo.pool.execute(
            "INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count,"
            " event_type, message, worker_id) VALUES ($1, $2, $3, 0, $4, $5, $6)",
            tenant_a,
            ids[task],
            dag,
            kind,
            message,
            worker,
        )
    for level, message in [("INFO", "hello"), ("WARNING", "careful"), ("ERROR", "boom")]:
        await repo.pool.execute(
            "INSERT INTO log_lines (tenant_id, task_id, level, message) VALUES ($1, $2, $3, $4)",
            tenant_a,
            ids["step1"],
            level,
            message,
        )

    # A single-task child run of step1, triggered by the event; its task id is its run id.
    single = ids["single_run"] = new_id()
    await _run(
        repo,
        tenant=tenant_a,
        run_id=single,
        wf=one_wf,
        version=one_v,
        status="QUEUED",
        created=now - timedelta(minutes=1),
        parent_task=ids["step1"],
        event=event,
        metadata={"test_run_id": "xyz"},
    )
    await _task(
        repo,
        tenant=tenant_a,
        task_id=single,
        run_id=single,
        step=ids["single/single"],
        name="single",
        status="QUEUED",
        created=now - timedelta(minutes=1),
    )

    b_run = ids["b_run"] = new_id()
    await _run(
        repo,
        tenant=tenant_b,
        run_id=b_run,
        wf=b_wf,
        version=b_v,
        status="COMPLETED",
        created=now,
        event=b_event,
    )
    await _task(
        repo,
        tenant=tenant_b,
        task_id=b_run,
        run_id=b_run,
        step=ids["b-wf/only"],
        name="only",
        status="COMPLETED",
        created=now,
        output='{"b": true}',
    )
    return ids


@pytest_asyncio.fixture
async def world(dsn: str) -> AsyncIterator[World]:
    repo = Repository(await create_pool(dsn, size=4), observer=METRICS)
    tenant_a = await repo.ensure_tenant("tenant-a")
    tenant_b = await repo.ensure_tenant("tenant-b")
    auth = Authenticator(
        repo=repo,
        secret=b"k" * 32,
        server_url="http://localhost:8080",
        grpc_address="localhost:7077",
    )
    control = FakeControl(repo=repo)
    ids = await _populate(repo, tenant_a, tenant_b)
    client = TestClient(
        TestServer(
            build_app(
                reads=Reads(repo),
                objects=TenantObjects(repo),
                definitions=Definitions(repo),
                control=control,
                auth=auth,
            )
        )
    )
    await client.start_server()
    try:
        yield World(
            client=client,
            control=control,
            token_a=await auth.issue(tenant_id=tenant_a),
            token_b=await auth.issue(tenant_id=tenant_b),
            tenant_a=tenant_a,
            tenant_b=tenant_b,
            ids=ids,
        )
    finally:
        await client.close()
        await repo.close()


def runs_path(w: World, tenant: str | None = None) -> str:
    return f"/api/v1/stable/tenants/{tenant or w.tenant_a}/workflow-runs"
