"""The REST API against PostgreSQL: workflows, workers, events, the tenant, and the SDK's
REST client reading every response (the world they run in: ``rest_world``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hatchet_sdk.clients.rest.models.tenant import Tenant
from hatchet_sdk.clients.rest.models.v1_event import V1Event
from hatchet_sdk.clients.rest.models.v1_event_list import V1EventList
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.clients.rest.models.worker import Worker
from hatchet_sdk.clients.rest.models.worker_list import WorkerList
from hatchet_sdk.clients.rest.models.worker_status import WorkerStatus
from hatchet_sdk.clients.rest.models.workflow import Workflow
from hatchet_sdk.clients.rest.models.workflow_list import WorkflowList
from hatchet_sdk.clients.rest.models.workflow_version import WorkflowVersion
from tests.integration.rest_world import (
    SINCE,
    World,
    new_id,
    runs_path,
)

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
