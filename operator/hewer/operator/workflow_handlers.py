"""Workflow handlers: register the declared workflow in the engine, report drift and any
declared setting the engine accepts but does not enforce yet (condition ``Enforced``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hewer.operator.handler_common import Outcome, State, resource_of
from hewer.operator.spec_common import InvalidSpec
from hewer.operator.workflow_specs import workflow_engine_name, workflow_registration


async def reconcile_workflow(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Outcome:
    meta = body["metadata"]
    name = workflow_engine_name(spec, meta["name"])
    registration = workflow_registration(name, spec)
    resource = resource_of(body)
    events: list[tuple[str, str, str]] = []
    old_name = status.get("workflowName")
    if old_name and old_name != name:
        await state.engine.delete_declared_workflow(old_name, resource=resource)
        events.append(("Normal", "Renamed", f"removed workflow {old_name!r} from the engine"))
    result = await state.engine.put_declared_workflow(
        name, resource=resource, definition=registration
    )
    version_id = result.get("versionId")
    if version_id != status.get("versionId"):
        if status.get("versionId") is None:
            events.append(("Normal", "Registered", f"workflow {name!r} registered"))
        elif meta.get("generation") != status.get("observedGeneration"):
            events.append(("Normal", "Updated", f"workflow {name!r} updated"))
        else:
            events.append(
                ("Normal", "Repaired", f"workflow {name!r} was changed or missing in the engine")
            )
    drift = result.get("drift") or None
    if drift and drift != status.get("drift"):
        events.append(("Warning", "DefinitionDrift", f"a worker registered {name!r}: {drift}"))
    drift_condition: tuple[str, bool | None, str, str] = (
        ("DefinitionDrift", True, "WorkerDefinitionDiffers", drift)
        if drift
        else ("DefinitionDrift", False, "InSync", "no worker registered a different definition")
    )
    not_enforced = [str(s) for s in result.get("notEnforced") or []]
    if not_enforced and not_enforced != status.get("notEnforced"):
        events.append(
            (
                "Warning",
                "NotEnforced",
                f"workflow {name!r} declares settings the engine does not enforce yet: "
                + ", ".join(not_enforced),
            )
        )
    enforced_condition: tuple[str, bool | None, str, str] = (
        (
            "Enforced",
            False,
            "SettingsNotEnforced",
            "accepted but not enforced yet: " + ", ".join(not_enforced),
        )
        if not_enforced
        else ("Enforced", True, "AllEnforced", "every declared setting is enforced")
    )
    return Outcome(
        True,
        "Registered",
        f"workflow {name!r} is registered (version {version_id})",
        status={
            "workflowName": name,
            "workflowId": result.get("workflowId"),
            "versionId": version_id,
            "drift": drift,
            "notEnforced": not_enforced,
        },
        conditions=[drift_condition, enforced_condition],
        events=events,
    )


async def delete_workflow(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> str:
    try:
        name = status.get("workflowName") or workflow_engine_name(spec, body["metadata"]["name"])
    except InvalidSpec:
        return "nothing was registered"
    found = await state.engine.delete_declared_workflow(name, resource=resource_of(body))
    return f"workflow {name!r} removed from the engine" if found else "nothing was registered"
