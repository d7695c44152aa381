"""The REST API against PostgreSQL: auth, errors, runs and tasks, every body checked with the
SDK's own pydantic models (the world they run in: ``rest_world``).
"""

from __future__ import annotations

from typing import Any

from hatchet_sdk.clients.rest.models.api_errors import APIErrors
from hatchet_sdk.clients.rest.models.v1_cancelled_tasks import V1CancelledTasks
from hatchet_sdk.clients.rest.models.v1_log_line_list import V1LogLineList
from hatchet_sdk.clients.rest.models.v1_replayed_tasks import V1ReplayedTasks
from hatchet_sdk.clients.rest.models.v1_task_event_type import V1TaskEventType
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.clients.rest.models.v1_task_summary import V1TaskSummary
from hatchet_sdk.clients.rest.models.v1_task_summary_list import V1TaskSummaryList
from hatchet_sdk.clients.rest.models.v1_workflow_run_details import V1WorkflowRunDetails
from hatchet_sdk.clients.rest.models.v1_workflow_type import V1WorkflowType
from tests.integration.rest_world import (
    SINCE,
    World,
    new_id,
    runs_path,
)

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
