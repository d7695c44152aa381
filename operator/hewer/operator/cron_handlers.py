"""CronTrigger handlers: keep exactly one matching cron in the engine and report its
last run."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hewer.operator.cron_specs import (
    CRON_METADATA_KEY,
    cron_matches,
    cron_request,
    cron_workflow_name,
    next_schedule_time,
)
from hewer.operator.engine_client import EngineRejected
from hewer.operator.handler_common import Outcome, State, resource_of


def _cron_id(row: Mapping[str, Any]) -> str:
    return str((row.get("metadata") or {}).get("id") or row.get("id") or "")


async def _drop_cron(state: State, cron_id: str) -> None:
    await state.engine.delete_cron(cron_id)
    await state.engine.forget_owned(kind="cron", object_id=cron_id)


async def reconcile_cron(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Outcome:
    meta = body["metadata"]
    desired = cron_request(spec, namespace=meta["namespace"], name=meta["name"])
    workflow_name = cron_workflow_name(spec)
    old_id = status.get("cronId")
    events: list[tuple[str, str, str]] = []
    if spec.get("suspend"):
        if old_id:
            await _drop_cron(state, old_id)
            events.append(("Normal", "Suspended", "the cron was removed from the engine"))
        return Outcome(
            True,
            "Suspended",
            "the trigger is suspended: no cron in the engine",
            status={"cronId": None, "nextScheduleTime": None},
            events=events,
        )
    workflow = await state.engine.find_workflow(workflow_name)
    if workflow is None:
        if old_id:
            await _drop_cron(state, old_id)
        return Outcome(
            False,
            "WorkflowNotFound",
            f"spec.workflowRef.name: workflow {workflow_name!r} is not registered in the engine",
            status={"cronId": None, "nextScheduleTime": None},
            retry=True,
        )
    workflow_id = str((workflow.get("metadata") or {}).get("id"))
    crons = await state.engine.list_crons(workflow_id=workflow_id, cron_name=desired["cronName"])
    mine = [c for c in crons if c.get("name") == desired["cronName"]]
    keep = next((c for c in mine if cron_matches(c, desired)), None)
    for cron in mine:
        if cron is not keep:
            await _drop_cron(state, _cron_id(cron))
    if old_id and old_id not in {_cron_id(c) for c in mine}:
        await _drop_cron(state, old_id)  # e.g. under the previously referenced workflow
    if keep is None:
        created = await state.engine.create_cron(workflow_name, desired)
        cron_id = _cron_id(created)
        await state.engine.record_owned(kind="cron", object_id=cron_id, resource=resource_of(body))
        if not old_id:
            events.append(("Normal", "Created", f"cron {desired['cronExpression']!r} created"))
        elif meta.get("generation") != status.get("observedGeneration"):
            events.append(("Normal", "Updated", f"cron {desired['cronExpression']!r} updated"))
        else:
            events.append(("Normal", "Repaired", "the cron was missing or changed in the engine"))
        created_at = (created.get("metadata") or {}).get("createdAt")
    else:
        cron_id = _cron_id(keep)
        created_at = (keep.get("metadata") or {}).get("createdAt")
    last_run_id, last_time = status.get("lastRunId"), status.get("lastScheduleTime")
    try:
        since = datetime.fromisoformat(str(created_at)) if created_at else None
    except ValueError:
        since = None
    try:
        run = await state.engine.latest_run(
            workflow_id=workflow_id,
            metadata=(CRON_METADATA_KEY, desired["cronName"]),
            since=since or datetime.now(UTC) - timedelta(days=7),
        )
    except EngineRejected:
        run = None
    if run is not None:
        last_run_id = (run.get("metadata") or {}).get("id") or run.get("workflowRunExternalId")
        last_time = run.get("createdAt") or (run.get("metadata") or {}).get("createdAt")
    return Outcome(
        True,
        "Scheduled",
        f"cron {desired['cronExpression']!r} of workflow {workflow_name!r} is registered",
        status={
            "cronId": cron_id,
            "workflowId": workflow_id,
            "nextScheduleTime": next_schedule_time(desired["cronExpression"]),
            "lastRunId": last_run_id,
            "lastScheduleTime": last_time,
        },
        events=events,
    )


async def delete_cron(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> str:
    cron_id = status.get("cronId")
    if cron_id:
        await _drop_cron(state, cron_id)
        return f"cron {cron_id} removed from the engine"
    return "no cron was registered"
