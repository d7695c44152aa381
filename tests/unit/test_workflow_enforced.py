"""A Workflow resource says what the engine does not enforce: condition Enforced and a
Warning event, from the engine's declared-workflow answer (no I/O: the engine is a fake)."""

from __future__ import annotations

from typing import Any, cast

from hewer.operator.config import OperatorConfig
from hewer.operator.engine_client import EngineClient
from hewer.operator.handler_common import State
from hewer.operator.workflow_handlers import reconcile_workflow


class FakeEngine:
    def __init__(self, not_enforced: list[str]) -> None:
        self.not_enforced = not_enforced

    async def put_declared_workflow(self, name: str, **_: Any) -> dict[str, Any]:
        return {
            "workflowId": "w1",
            "versionId": "v1",
            "drift": None,
            "notEnforced": self.not_enforced,
        }


BODY = {"metadata": {"name": "flow", "namespace": "ns", "generation": 1}}
SPEC = {"tasks": [{"name": "a"}]}


def state(not_enforced: list[str]) -> State:
    config = OperatorConfig(
        engine_url="http://engine", token="t", tenant_id="x", grpc_address="g", public_url="p"
    )
    return State(config=config, engine=cast(EngineClient, FakeEngine(not_enforced)))


async def test_settings_not_enforced_make_the_condition_false_and_warn_once() -> None:
    # the engine enforces every setting today; the label stands for one accepted before it is
    listed = ["a setting accepted before it is enforced"]
    outcome = await reconcile_workflow(state(listed), BODY, SPEC, {})
    enforced = [c for c in outcome.conditions if c[0] == "Enforced"]
    assert enforced == [
        (
            "Enforced",
            False,
            "SettingsNotEnforced",
            "accepted but not enforced yet: a setting accepted before it is enforced",
        )
    ]
    assert outcome.status["notEnforced"] == listed
    assert [e[:2] for e in outcome.events if e[1] == "NotEnforced"] == [("Warning", "NotEnforced")]
    # the next pass with the same list does not warn again
    again = await reconcile_workflow(state(listed), BODY, SPEC, {**outcome.status})
    assert not [e for e in again.events if e[1] == "NotEnforced"]


async def test_everything_enforced_is_said_too() -> None:
    outcome = await reconcile_workflow(state([]), BODY, SPEC, {})
    assert ("Enforced", True, "AllEnforced", "every declared setting is enforced") in (
        outcome.conditions
    )
