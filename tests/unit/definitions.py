"""Builders of workflow versions and condition dicts shared by the unit tests of DAG
progression and conditions (test_dag, test_conditions, test_root_conditions)."""

from __future__ import annotations

from typing import Any

from hewer.engine.core.conditions import parse_conditions
from hewer.engine.core.model import StepDef, StepKind, WorkflowVersionDef


def base(action: str, group: str, expression: str = "") -> dict[str, Any]:
    """The ``base`` of a registration's condition (proto field names); the group names its
    data too."""
    return {
        "action": action,
        "or_group_id": group,
        "readable_data_key": group,
        "expression": expression,
    }


def step(
    name: str,
    *parents: str,
    kind: StepKind = StepKind.TASK,
    position: int = 0,
    conditions: Any = None,
) -> StepDef:
    """Step ``name`` of workflow ``wf`` (action ``wf:<name>``); ``conditions`` as registered."""
    return StepDef(
        id=f"step-{name}",
        readable_id=name,
        action_id=f"wf:{name}",
        kind=kind,
        position=position,
        parents=parents,
        timeout_seconds=60,
        schedule_timeout_seconds=300,
        retries=0,
        backoff_factor=None,
        backoff_max_seconds=None,
        is_durable=False,
        conditions=parse_conditions(conditions, parents=parents, where=name),
    )


def workflow(*steps: StepDef) -> WorkflowVersionDef:
    return WorkflowVersionDef(
        id="v1", workflow_id="w1", workflow_name="wf", default_priority=1, sticky=None, steps=steps
    )
