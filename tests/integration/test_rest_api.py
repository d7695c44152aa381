"""The REST API against PostgreSQL, every body checked with the SDK's own pydantic models.

Rows are inserted with plain SQL (no engine services), the app runs on aiohttp's test
server, and state changes go to a recording fake of ``RunControl``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hatchet_sdk.clients.rest.models.api_errors import APIErrors
from hatchet_sdk.clients.rest.models.tenant import Tenant
from hatchet_sdk.clients.rest.models.v1_cancelled_tasks import V1CancelledTasks
from hatchet_sdk.clients.rest.models.v1_event import V1Event
from hatchet_sdk.clients.rest.models.v1_event_list import V1EventList
from hatchet_sdk.clients.rest.models.v1_log_line_list import V1LogLineList
from hatchet_sdk.clients.rest.models.v1_replayed_tasks import V1ReplayedTasks
from hatchet_sdk.clients.rest.models.v1_task_event_type import V1TaskEventType
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.clients.rest.models.v1_task_summary import V1TaskSummary
from hatchet_sdk.clients.rest.models.v1_task_summary_list import V1TaskSummaryList
from hatchet_sdk.clients.rest.models.v1_workflow_run_details import V1WorkflowRunDetails
from hatchet_sdk.clients.rest.models.v1_workflow_type import V1WorkflowType
from hatchet_sdk.clients.rest.models.worker import Worker
from hatchet_sdk.clients.rest.models.worker_list import WorkerList
from hatchet_sdk.clients.rest.models.worker_status import WorkerStatus
from hatchet_sdk.clients.rest.models.workflow import Workflow
from hatchet_sdk.clients.rest.models.workflow_list import WorkflowList
from hatchet_sdk.clients.rest.models.workflow_version import WorkflowVersion

from hewer.engine.api.rest.app import build_app
from hewer.engine.db.repository import Repository, create_pool
from hewer.engine.services.auth import Authenticator

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
    repo = Repository(await create_pool(dsn, size=4))
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
    client = TestClient(TestServer(build_app(repo=repo, control=control, auth=auth)))
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


# -- auth and errors ------------------------------------------------------------------------


async def test_probes_need_no_token(world: World) -> None:
    for path in ("/api/ready", "/api/live"):
        resp = await world.client.get(path)
        assert resp.status == 200


async def test_missing_or_bad_token_is_401(world: World) -> None:
    path = runs_path(world)
    resp = await world.client.get(path, params={"since": SINCE})
    assert resp.status == 401
    errors = APIErrors.from_dict(await resp.json())
    assert errors is not None and errors.errors[0].description == "missing authorization token"
    resp = await world.client.get(
        path, params={"since": SINCE}, headers={"Authorization": "Bearer nonsense"}
    )
    assert resp.status == 401
    resp = await world.client.get(f"/api/v1/workers/{world.ids['worker']}")
    assert resp.status == 401


async def test_other_tenant_path_is_403(world: World) -> None:
    await world.get(runs_path(world, world.tenant_b), params={"since": SINCE}, status=403)
    await world.get(f"/api/v1/tenants/{world.tenant_b}/worker", status=403)
    await world.get(f"/api/v1/stable/tenants/{world.tenant_b}/events", status=403)
    await world.get(f"/api/v1/tenants/{world.tenant_b}", status=403)
    await world.send(
        "POST",
        f"/api/v1/stable/tenants/{world.tenant_b}/tasks/cancel",
        {"externalIds": [world.ids["b_run"]]},
        status=403,
    )
    assert world.control.calls == []


async def test_other_tenant_ids_are_404(world: World) -> None:
    ids = world.ids
    await world.get(f"/api/v1/stable/workflow-runs/{ids['b_run']}", status=404)
    await world.get(f"/api/v1/stable/workflow-runs/{ids['b_run']}/status", status=404)
    await world.get(f"/api/v1/stable/tasks/{ids['b_run']}", status=404)
    await world.get(f"/api/v1/stable/tasks/{ids['b_run']}/logs", status=404)
    await world.get(f"/api/v1/workers/{ids['b_worker']}", status=404)
    await world.send("PATCH", f"/api/v1/workers/{ids['b_worker']}", {"isPaused": True}, status=404)
    await world.get(f"/api/v1/workflows/{ids['b_wf']}", status=404)
    await world.get(f"/api/v1/stable/tenants/{world.tenant_a}/events/{ids['b_event']}", status=404)
    assert world.control.calls == []
    # and tenant B sees its own, not A's
    body = await world.get(
        runs_path(world, world.tenant_b), token=world.token_b, params={"since": SINCE}
    )
    assert [r["metadata"]["id"] for r in body["rows"]] == [ids["b_run"]]
    body = await world.get(f"/api/v1/tenants/{world.tenant_b}/worker", token=world.token_b)
    assert [w["name"] for w in body["rows"]] == ["b"]


async def test_bad_input_is_400(world: World) -> None:
    path = runs_path(world)
    await world.get(path, status=400)  # since is required
    await world.get(path, params={"since": "yesterday"}, status=400)
    await world.get(path, params={"since": SINCE, "statuses": "DONE"}, status=400)
    await world.get(path, params={"since": SINCE, "workflow_ids": "x"}, status=400)
    await world.get(path, params={"since": SINCE, "only_tasks": "maybe"}, status=400)
    await world.get(path, params={"since": SINCE, "limit": "-1"}, status=400)
    await world.get(path, params={"since": SINCE, "additional_metadata": "novalue"}, status=400)
    await world.get("/api/v1/stable/workflow-runs/not-a-uuid", status=400)
    await world.get(
        f"/api/v1/tenants/{world.tenant_a}/worker", params={"statuses": "SLEEPING"}, status=400
    )
    cancel = f"/api/v1/stable/tenants/{world.tenant_a}/tasks/cancel"
    await world.send("POST", cancel, None, raw="{not json", status=400)
    await world.send("POST", cancel, None, raw="", status=400)
    await world.send("POST", cancel, {}, status=400)
    await world.send("POST", cancel, [1, 2], status=400)
    await world.send("POST", cancel, {"externalIds": ["short"]}, status=400)
    await world.send("POST", cancel, {"filter": {"statuses": ["FAILED"]}}, status=400)
    await world.send(
        "PATCH", f"/api/v1/workers/{world.ids['worker']}", {"isPaused": "yes"}, status=400
    )
    assert world.control.calls == []


async def test_unknown_route_and_method_are_json(world: World) -> None:
    resp = await world.client.get("/api/v1/nothing-here", headers=world.auth())
    assert resp.status == 404
    APIErrors.from_dict(await resp.json())
    resp = await world.client.delete(f"/api/v1/tenants/{world.tenant_a}", headers=world.auth())
    assert resp.status == 405
    APIErrors.from_dict(await resp.json())


# -- runs -----------------------------------------------------------------------------------


async def test_list_runs_one_row_per_run(world: World) -> None:
    ids = world.ids
    body = await world.get(runs_path(world), params={"since": SINCE})
    parsed = V1TaskSummaryList.from_dict(body)
    assert parsed is not None
    assert [r.metadata.id for r in parsed.rows] == [ids["single_run"], ids["dag_run"]]
    single, dag = parsed.rows
    assert single.type == V1WorkflowType.TASK
    assert single.task_external_id == ids["single_run"]
    assert single.status == V1TaskStatus.QUEUED
    assert single.parent_task_external_id == ids["step1"]
    assert single.display_name.startswith("single-")
    assert dag.type == V1WorkflowType.DAG
    assert dag.status == V1TaskStatus.FAILED
    assert dag.display_name.startswith("dag-wf-")
    assert dag.children is not None
    assert [c.display_name.split("-")[0] for c in dag.children] == ["step1", "step2", "step3"]
    assert dag.children[0].output == {"random_number": 4}
    assert dag.children[0].num_spawned_children == 1
    assert dag.children[1].output == {}  # '' is empty output
    assert dag.children[2].error_message == "ValueError: step3 failed\ntraceback"
    assert dag.children[2].attempt == 2 and dag.children[2].retry_count == 1
    assert dag.additional_metadata == {"test_run_id": "abc", "n": 7}
    assert dag.output == {"step1": {"random_number": 4}, "step2": {}}
    assert body["pagination"] == {"current_page": 1, "num_pages": 1, "next_page": 1}


async def test_list_runs_filters(world: World) -> None:
    ids = world.ids

    async def run_ids(**params: Any) -> list[str]:
        query = [
            ("since", SINCE),
            *[(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])],
        ]
        body = await world.get(runs_path(world), params=query)
        V1TaskSummaryList.from_dict(body)
        return [r["metadata"]["id"] for r in body["rows"]]

    dag, single = ids["dag_run"], ids["single_run"]
    assert await run_ids(statuses=["FAILED", "COMPLETED"]) == [dag]
    assert await run_ids(workflow_ids=ids["one_wf"]) == [single]
    assert await run_ids(additional_metadata="test_run_id:abc") == [dag]
    assert await run_ids(additional_metadata="n:7") == [dag]  # a number matches as text
    assert await run_ids(additional_metadata=["test_run_id:abc", "test_run_id:xyz"]) == [
        single,
        dag,
    ]  # several pairs: OR by default
    assert (
        await run_ids(
            additional_metadata=["test_run_id:abc", "test_run_id:xyz"],
            additional_metadata_operator="AND",
        )
        == []
    )
    assert await run_ids(parent_task_external_id=ids["step1"]) == [single]
    assert await run_ids(triggering_event_external_id=ids["event"]) == [single]
    assert await run_ids(worker_id=ids["worker"]) == [dag]
    assert await run_ids(until="2001-01-01T00:00:00Z") == []
    assert await run_ids(limit="1") == [single]
    assert await run_ids(limit="1", offset="1") == [dag]
    body = await world.get(runs_path(world), params={"since": SINCE, "limit": "1"})
    assert body["pagination"] == {"current_page": 1, "num_pages": 2, "next_page": 2}


async def test_list_runs_only_tasks(world: World) -> None:
    ids = world.ids
    body = await world.get(runs_path(world), params={"since": SINCE, "only_tasks": "true"})
    parsed = V1TaskSummaryList.from_dict(body)
    assert parsed is not None
    assert [r.task_external_id for r in parsed.rows] == [
        ids["single_run"],
        ids["step3"],
        ids["step2"],
        ids["step1"],
    ]
    assert {"random_number": 4} in [r.output for r in parsed.rows]
    assert all(r.children is None for r in parsed.rows)
    body = await world.get(
        runs_path(world), params={"since": SINCE, "only_tasks": "true", "include_payloads": "false"}
    )
    parsed = V1TaskSummaryList.from_dict(body)
    assert parsed is not None
    assert all(r.output == {} and r.input == {} for r in parsed.rows)
    body = await world.get(
        runs_path(world), params={"since": SINCE, "only_tasks": "true", "statuses": "COMPLETED"}
    )
    assert len(body["rows"]) == 2


async def test_get_run_details(world: World) -> None:
    ids = world.ids
    body = await world.get(f"/api/v1/stable/workflow-runs/{ids['dag_run']}")
    details = V1WorkflowRunDetails.from_dict(body)
    assert details is not None
    assert "dag-wf" in details.run.display_name
    assert details.run.status == V1TaskStatus.FAILED
    assert details.run.error_message == "ValueError: step3 failed\ntraceback"
    assert details.run.input == {"n": 1}
    assert len(details.shape) == 4
    assert {s.task_name for s in details.shape} == {"step1", "step2", "step3", "step4"}
    by_name = {s.task_name: s for s in details.shape}
    assert by_name["step1"].task_external_id == ids["step1"]
    assert set(by_name["step1"].children_step_ids) == {ids["dag-wf/step2"], ids["dag-wf/step3"]}
    assert by_name["step4"].children_step_ids == []
    assert len(details.tasks) == 3
    kinds = [e.event_type for e in details.task_events]
    assert kinds == [
        V1TaskEventType.QUEUED,
        V1TaskEventType.ASSIGNED,
        V1TaskEventType.STARTED,
        V1TaskEventType.FINISHED,
        V1TaskEventType.FAILED,
        V1TaskEventType.RETRYING,
    ]  # the unknown event type is left out rather than failing the SDK's validation
    failed = details.task_events[4]
    assert failed.task_id == ids["step3"]
    assert failed.error_message == "ValueError: step3 failed"
    assert failed.worker_id == ids["worker"]
    # the same run, asked for by one of its task ids; the shape is stable across calls
    again = await world.get(f"/api/v1/stable/workflow-runs/{ids['step2']}")
    assert again["run"]["metadata"]["id"] == ids["dag_run"]
    assert again["shape"] == body["shape"]
    status = await world.get(f"/api/v1/stable/workflow-runs/{ids['dag_run']}/status")
    assert V1TaskStatus(status) == V1TaskStatus.FAILED
    await world.get(f"/api/v1/stable/workflow-runs/{new_id()}", status=404)


async def test_single_task_run_details(world: World) -> None:
    ids = world.ids
    body = await world.get(f"/api/v1/stable/workflow-runs/{ids['single_run']}")
    details = V1WorkflowRunDetails.from_dict(body)
    assert details is not None
    assert [t.task_external_id for t in details.tasks] == [ids["single_run"]]
    assert details.tasks[0].type == V1WorkflowType.TASK
    assert details.run.parent_task_external_id == ids["step1"]
    assert details.task_events == []


async def test_get_task_and_logs(world: World) -> None:
    ids = world.ids
    body = await world.get(f"/api/v1/stable/tasks/{ids['step1']}")
    task = V1TaskSummary.from_dict(body)
    assert task is not None
    assert task.output == {"random_number": 4}
    assert task.workflow_run_external_id == ids["dag_run"]
    assert task.step_id == ids["dag-wf/step1"]
    await world.get(f"/api/v1/stable/tasks/{new_id()}", status=404)

    logs_path = f"/api/v1/stable/tasks/{ids['step1']}/logs"
    logs = V1LogLineList.from_dict(await world.get(logs_path))
    assert logs is not None and logs.rows is not None
    assert [r.message for r in logs.rows] == ["boom", "careful", "hello"]  # newest first
    assert [r.level.value if r.level else None for r in logs.rows] == ["ERROR", "WARN", "INFO"]
    logs = V1LogLineList.from_dict(
        await world.get(
            logs_path, params={"order_by_direction": "ASC", "levels": "WARN", "limit": "5"}
        )
    )
    assert logs is not None and logs.rows is not None
    assert [r.message for r in logs.rows] == ["careful"]
    logs = V1LogLineList.from_dict(await world.get(logs_path, params={"search": "HEL"}))
    assert logs is not None and [r.message for r in logs.rows or ()] == ["hello"]
    await world.get(logs_path, params={"levels": "LOUD"}, status=400)


async def test_external_ids(world: World) -> None:
    path = f"{runs_path(world)}/external-ids"
    body = await world.get(path, params={"since": SINCE})
    assert body == [world.ids["single_run"], world.ids["dag_run"]]
    body = await world.get(path, params={"since": SINCE, "statuses": ["QUEUED", "RUNNING"]})
    assert body == [world.ids["single_run"]]


async def test_cancel_and_replay(world: World) -> None:
    ids = world.ids
    cancel = f"/api/v1/stable/tenants/{world.tenant_a}/tasks/cancel"
    replay = f"/api/v1/stable/tenants/{world.tenant_a}/tasks/replay"
    body = await world.send("POST", cancel, {"externalIds": [ids["step3"], ids["dag_run"]]})
    assert V1CancelledTasks.from_dict(body) is not None
    assert body == {"ids": [ids["step3"], ids["dag_run"]]}
    assert world.control.calls[-1] == (
        "cancel",
        {"tenant_id": world.tenant_a, "ids": [ids["step3"], ids["dag_run"]]},
    )

    body = await world.send(
        "POST",
        replay,
        {
            "filter": {
                "since": "2000-01-01T00:00:00Z",
                "statuses": ["FAILED", "CANCELLED"],
                "additionalMetadata": ["test_run_id:abc"],
            }
        },
    )
    assert V1ReplayedTasks.from_dict(body) is not None
    assert body == {"ids": [ids["dag_run"]]}
    assert world.control.calls[-1] == (
        "replay",
        {"tenant_id": world.tenant_a, "ids": [ids["dag_run"]]},
    )

    calls = len(world.control.calls)
    body = await world.send(
        "POST", replay, {"filter": {"since": "2000-01-01T00:00:00Z", "workflowIds": [ids["b_wf"]]}}
    )
    assert body == {"ids": []}
    assert len(world.control.calls) == calls  # nothing matched: the engine is not called


async def test_trigger(world: World) -> None:
    world.control.trigger_result = world.ids["single_run"]
    path = f"{runs_path(world)}/trigger"
    body = await world.send(
        "POST",
        path,
        {
            "workflowName": "single",
            "input": {"a": 1},
            "additionalMetadata": {"k": "v"},
            "priority": 2,
        },
    )
    details = V1WorkflowRunDetails.from_dict(body)
    assert details is not None and details.run.metadata.id == world.ids["single_run"]
    assert world.control.calls[-1] == (
        "trigger",
        {
            "tenant_id": world.tenant_a,
            "name": "single",
            "input": {"a": 1},
            "metadata": {"k": "v"},
            "priority": 2,
        },
    )
    body = await world.send("POST", path, {"workflowName": "nope", "input": {}}, status=400)
    assert body["errors"][0]["description"] == "workflow nope not found"
    await world.send("POST", path, {"input": {}}, status=400)


# -- workflows, workers, events, tenant -----------------------------------------------------


async def test_workflows(world: World) -> None:
    path = f"/api/v1/tenants/{world.tenant_a}/workflows"
    listing = WorkflowList.from_dict(await world.get(path))
    assert listing is not None
    assert sorted(w.name for w in listing.rows or ()) == ["dag-wf", "single"]
    body = await world.get(path, params={"name": "single", "limit": "1", "offset": "0"})
    listing = WorkflowList.from_dict(body)
    assert listing is not None and [w.name for w in listing.rows or ()] == ["single"]
    workflow_id = body["rows"][0]["metadata"]["id"]
    assert workflow_id == world.ids["one_wf"]
    got = Workflow.from_dict(await world.get(f"/api/v1/workflows/{workflow_id}"))
    assert got is not None and got.name == "single" and got.versions
    version = WorkflowVersion.from_dict(
        await world.get(f"/api/v1/workflows/{world.ids['dag_wf']}/versions")
    )
    assert version is not None and version.jobs
    steps = {s.readable_id: s for s in version.jobs[0].steps}
    assert set(steps) == {"step1", "step2", "step3", "step4"}
    assert set(steps["step4"].parents or ()) == {
        steps["step2"].metadata.id,
        steps["step3"].metadata.id,
    }
    await world.get(
        f"/api/v1/workflows/{world.ids['dag_wf']}/versions",
        params={"version": new_id()},
        status=404,
    )


async def test_workers(world: World) -> None:
    ids = world.ids
    path = f"/api/v1/tenants/{world.tenant_a}/worker"
    listing = WorkerList.from_dict(await world.get(path))
    assert listing is not None and listing.rows is not None
    by_name = {w.name: w for w in listing.rows}
    assert set(by_name) == {"e2e-test-worker", "old"}
    active = by_name["e2e-test-worker"]
    assert active.status == WorkerStatus.ACTIVE
    assert by_name["old"].status == WorkerStatus.INACTIVE
    assert {(lb.key, lb.value) for lb in active.labels or ()} == {("region", "eu"), ("n", "3")}
    assert active.slot_config is not None and active.slot_config["default"].limit == 10
    assert active.runtime_info is not None and active.runtime_info.sdk_version == "1.37.5"
    body = await world.get(path, params={"statuses": "INACTIVE"})
    assert [w["name"] for w in body["rows"]] == ["old"]
    body = await world.get(path, params={"labels": "region:eu"})
    assert [w["name"] for w in body["rows"]] == ["e2e-test-worker"]

    body = await world.send("PATCH", f"/api/v1/workers/{ids['worker']}", {"isPaused": True})
    worker = Worker.from_dict(body)
    assert worker is not None and worker.status == WorkerStatus.PAUSED
    assert world.control.calls[-1] == (
        "pause",
        {"tenant_id": world.tenant_a, "worker": ids["worker"], "p": True},
    )
    got = Worker.from_dict(await world.get(f"/api/v1/workers/{ids['worker']}"))
    assert got is not None and got.status == WorkerStatus.PAUSED
    await world.get(f"/api/v1/workers/{new_id()}", status=404)


async def test_events(world: World) -> None:
    ids = world.ids
    path = f"/api/v1/stable/tenants/{world.tenant_a}/events"
    listing = V1EventList.from_dict(await world.get(path, params={"since": SINCE}))
    assert listing is not None and listing.rows is not None
    [event] = listing.rows
    assert event.metadata.id == ids["event"]
    assert event.key == "user:create" and event.scope == "scope-1"
    assert event.payload == {"x": 1}
    assert event.workflow_run_summary.queued == 1
    assert [r.workflow_run_id for r in event.triggered_runs or ()] == [ids["single_run"]]
    for params in (
        {"eventIds": ids["event"]},
        {"keys": "user:create"},
        {"scopes": "scope-1"},
        {"additionalMetadata": "source:test"},
        {"workflowIds": ids["one_wf"]},
        {"workflowRunStatuses": "QUEUED"},
    ):
        body = await world.get(path, params=params)
        assert [e["metadata"]["id"] for e in body["rows"]] == [ids["event"]], params
    for params in (
        {"keys": "other"},
        {"workflowRunStatuses": "FAILED"},
        {"eventIds": ids["b_event"]},
    ):
        body = await world.get(path, params=params)
        assert body["rows"] == [], params
    got = V1Event.from_dict(await world.get(f"{path}/{ids['event']}"))
    assert got is not None and got.metadata.id == ids["event"]


async def test_tenant(world: World) -> None:
    tenant = Tenant.from_dict(await world.get(f"/api/v1/tenants/{world.tenant_a}"))
    assert tenant is not None and tenant.name == "tenant-a"


@pytest.mark.parametrize(
    "since", ["2000-01-01T00:00:00Z", "2000-01-01T00:00:00", "2000-01-01T00:00:00.123+00:00"]
)
async def test_since_formats(world: World, since: str) -> None:
    body = await world.get(runs_path(world), params={"since": since})
    assert len(body["rows"]) == 2


async def test_the_sdk_rest_client_accepts_every_response(world: World) -> None:
    """The generated client itself (query encoding, datetime format, deserialization)."""
    from hatchet_sdk.clients.rest.api.event_api import EventApi
    from hatchet_sdk.clients.rest.api.log_api import LogApi
    from hatchet_sdk.clients.rest.api.task_api import TaskApi
    from hatchet_sdk.clients.rest.api.tenant_api import TenantApi
    from hatchet_sdk.clients.rest.api.worker_api import WorkerApi
    from hatchet_sdk.clients.rest.api.workflow_api import WorkflowApi
    from hatchet_sdk.clients.rest.api.workflow_runs_api import WorkflowRunsApi
    from hatchet_sdk.clients.rest.api_client import ApiClient
    from hatchet_sdk.clients.rest.configuration import Configuration
    from hatchet_sdk.clients.rest.models.update_worker_request import UpdateWorkerRequest
    from hatchet_sdk.clients.rest.models.v1_cancel_task_request import V1CancelTaskRequest
    from hatchet_sdk.clients.rest.models.v1_replay_task_request import V1ReplayTaskRequest
    from hatchet_sdk.clients.rest.models.v1_task_filter import V1TaskFilter

    config = Configuration(
        host=str(world.client.make_url("")).rstrip("/"), access_token=world.token_a
    )
    config.datetime_format = "%Y-%m-%dT%H:%M:%S.%fZ"  # as BaseRestClient sets it
    tenant, ids = world.tenant_a, world.ids
    since = datetime.now(UTC) - timedelta(days=1)

    def calls() -> None:
        with ApiClient(config) as client:
            runs = WorkflowRunsApi(client)
            listing = runs.v1_workflow_run_list(
                tenant=tenant,
                since=since,
                only_tasks=False,
                statuses=[V1TaskStatus.FAILED],
                additional_metadata=["test_run_id:abc"],
                workflow_ids=[ids["dag_wf"]],
                include_payloads=True,
            )
            assert [r.metadata.id for r in listing.rows] == [ids["dag_run"]]
            details = runs.v1_workflow_run_get(ids["dag_run"])
            assert len(details.shape) == 4
            assert runs.v1_workflow_run_get_status(ids["dag_run"]) == V1TaskStatus.FAILED
            assert runs.v1_workflow_run_external_ids_list(tenant=tenant, since=since) == [
                ids["single_run"],
                ids["dag_run"],
            ]
            tasks = TaskApi(client)
            assert tasks.v1_task_get(ids["step1"]).task_external_id == ids["step1"]
            cancelled = tasks.v1_task_cancel(
                tenant, V1CancelTaskRequest(externalIds=[ids["single_run"]])
            )
            assert cancelled.ids == [ids["single_run"]]
            replayed = tasks.v1_task_replay(
                tenant,
                V1ReplayTaskRequest(
                    filter=V1TaskFilter(since=since, statuses=[V1TaskStatus.FAILED])
                ),
            )
            assert replayed.ids == [ids["dag_run"]]
            logs = LogApi(client).v1_log_line_list(ids["step1"])
            assert len(logs.rows or ()) == 3
            workflows = WorkflowApi(client)
            found = workflows.workflow_list(tenant=tenant, name="dag-wf", limit=1)
            assert [w.name for w in found.rows or ()] == ["dag-wf"]
            assert workflows.workflow_get(ids["dag_wf"]).name == "dag-wf"
            assert workflows.workflow_version_get(ids["dag_wf"]).jobs
            workers = WorkerApi(client)
            names = {w.name for w in workers.worker_list(tenant=tenant).rows or ()}
            assert names == {"e2e-test-worker", "old"}
            paused = workers.worker_update(ids["worker"], UpdateWorkerRequest(isPaused=True))
            assert paused.status == WorkerStatus.PAUSED
            assert workers.worker_get(ids["worker"]).status == WorkerStatus.PAUSED
            events = EventApi(client)
            listed = events.v1_event_list(tenant=tenant, since=since, event_ids=[ids["event"]])
            assert [e.metadata.id for e in listed.rows or ()] == [ids["event"]]
            assert events.v1_event_get(tenant, ids["event"]).key == "user:create"
            assert TenantApi(client).tenant_get(tenant).name == "tenant-a"

    # the generated client is synchronous: keep it off the loop that serves the app
    await asyncio.to_thread(calls)
