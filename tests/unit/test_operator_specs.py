"""The operator's pure translations: specs -> engine requests and manifests, conditions,
and the engine's drift diff."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict, ParseDict
from hatchet_sdk.contracts.v1.workflows_pb2 import CreateWorkflowVersionRequest

from hewer.engine.core.definition import parse_workflow
from hewer.engine.core.drift import definition_diff, summarize
from hewer.operator import cron_specs, pool_specs, spec_common, workflow_specs
from hewer.operator.config import ConfigError, OperatorConfig
from hewer.operator.spec_common import InvalidSpec

DEMO: dict[str, Any] = {
    "description": "demo",
    "onEvents": ["demo:run"],
    "taskDefaults": {"timeout": "30s", "retries": 1},
    "concurrency": [
        {"expression": "input.source", "maxRuns": 2, "limitStrategy": "GROUP_ROUND_ROBIN"}
    ],
    "tasks": [
        {"name": "fetch", "rateLimits": [{"key": "demo-fetch", "units": 1}]},
        {"name": "transform", "parents": ["fetch"], "retries": 3},
        {"name": "summarize", "parents": ["fetch", "transform"], "durable": True},
    ],
}


def _proto_round_trip(definition: dict[str, Any]) -> dict[str, Any]:
    message = ParseDict(definition, CreateWorkflowVersionRequest())
    return MessageToDict(message, preserving_proto_field_name=True)


def test_workflow_registration_matches_the_sdk_shape() -> None:
    reg = workflow_specs.workflow_registration("Hewer-Demo", DEMO)
    assert reg["name"] == "Hewer-Demo"
    assert reg["event_triggers"] == ["demo:run"]
    assert reg["concurrency_arr"] == [
        {"expression": "input.source", "max_runs": 2, "limit_strategy": "GROUP_ROUND_ROBIN"}
    ]
    fetch, transform, summarize_ = reg["tasks"]
    assert fetch["action"] == "hewer-demo:fetch"  # the SDK lowercases the service name
    assert fetch["timeout"] == "30s" and fetch["retries"] == 1
    assert fetch["schedule_timeout"] == "5m"
    assert fetch["slot_requests"] == {"default": 1}
    assert fetch["rate_limits"] == [{"key": "demo-fetch", "units": 1}]
    assert transform["retries"] == 3 and transform["parents"] == ["fetch"]
    assert summarize_["is_durable"] and summarize_["slot_requests"] == {"durable": 1}
    # valid for the proto and for the engine
    parse_workflow(_proto_round_trip(reg))


def test_registration_is_deterministic_with_conditions() -> None:
    spec = {
        "tasks": [
            {"name": "a"},
            {
                "name": "b",
                "parents": ["a"],
                "waitFor": [
                    {"sleepFor": "10s", "orGroup": "g"},
                    {"eventKey": "go", "orGroup": "g"},
                ],
                "skipIf": [{"parent": "a", "expression": "output.skip"}],
            },
        ]
    }
    first = workflow_specs.workflow_registration("w", spec)
    assert first == workflow_specs.workflow_registration("w", spec)
    conditions = first["tasks"][1]["conditions"]
    sleep = conditions["sleep_conditions"][0]
    event = conditions["user_event_conditions"][0]
    assert sleep["base"]["or_group_id"] == event["base"]["or_group_id"]  # same orGroup
    assert sleep["base"]["action"] == "QUEUE" and sleep["sleep_for"] == "10s"
    parent = conditions["parent_override_conditions"][0]
    assert parent["base"]["action"] == "SKIP"
    assert parent["base"]["readable_data_key"] == "a:output.skip"
    _proto_round_trip(first)


def test_on_success_and_on_failure() -> None:
    spec = {
        "tasks": [
            {"name": "a"},
            {"name": "b", "parents": ["a"]},
            {"name": "c"},
            {"name": "done"},
            {"name": "oops"},
        ],
        "onSuccess": {"task": "done"},
        "onFailure": {"task": "oops"},
    }
    reg = workflow_specs.workflow_registration("w", spec)
    by_name = {t["readable_id"]: t for t in reg["tasks"]}
    assert sorted(by_name["done"]["parents"]) == ["b", "c"]  # the leaves
    assert "oops" not in by_name and reg["on_failure_task"]["readable_id"] == "oops"
    parse_workflow(_proto_round_trip(reg))


@pytest.mark.parametrize(
    ("spec", "reason", "fragment"),
    [
        (
            {
                "tasks": [
                    {"name": "a", "parents": ["c"]},
                    {"name": "b", "parents": ["a"]},
                    {"name": "c", "parents": ["b"]},
                ]
            },
            "DependencyCycle",
            "a -> c -> b -> a",
        ),
        (
            {"tasks": [{"name": "a"}, {"name": "b", "parents": ["nope"]}]},
            "MissingParent",
            "task 'b' names parent 'nope'",
        ),
        ({"tasks": [{"name": "a"}, {"name": "a"}]}, "DuplicateTask", "duplicate task name 'a'"),
        ({"tasks": []}, "InvalidSpec", "at least one task"),
        ({"tasks": [{"name": "a", "timeout": "soon"}]}, "InvalidDuration", "tasks[0].timeout"),
        ({"tasks": [{"name": "a"}], "onFailure": {"task": "x"}}, "MissingTask", "'x'"),
        ({"tasks": [{"name": "a"}], "defaultPriority": 7}, "InvalidSpec", "<= 3"),
        ({"tasks": [{"name": "a"}], "onCrons": ["not a cron"]}, "InvalidSchedule", "onCrons[0]"),
        ({"tasks": [{"name": "a", "waitFor": [{"parent": "zz"}]}]}, "MissingTask", "'zz'"),
    ],
)
def test_invalid_workflows_are_refused_precisely(
    spec: dict[str, Any], reason: str, fragment: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        workflow_specs.workflow_registration("w", spec)
    assert info.value.reason == reason
    assert fragment in info.value.message


def test_engine_name_defaults_to_metadata_name() -> None:
    assert workflow_specs.workflow_engine_name({}, "from-meta") == "from-meta"
    assert workflow_specs.workflow_engine_name({"name": "explicit"}, "from-meta") == "explicit"


def test_cron_request_and_matching() -> None:
    spec = {
        "workflowRef": {"name": "wf"},
        "schedule": "*/5 * * * *",
        "input": {"a": 1},
        "additionalMetadata": {"team": "x"},
        "priority": 2,
    }
    body = cron_specs.cron_request(spec, namespace="ns", name="every5")
    assert body == {
        "cronName": "ns.every5",
        "cronExpression": "*/5 * * * *",
        "input": {"a": 1},
        "additionalMetadata": {"team": "x", cron_specs.CRON_METADATA_KEY: "ns.every5"},
        "priority": 2,
    }
    engine_row = {
        "name": "ns.every5",
        "cron": "*/5 * * * *",
        "input": {"a": 1},
        "additionalMetadata": body["additionalMetadata"],
        "priority": 2,
        "enabled": True,
    }
    assert cron_specs.cron_matches(engine_row, body)
    assert not cron_specs.cron_matches({**engine_row, "cron": "* * * * *"}, body)
    assert not cron_specs.cron_matches({**engine_row, "priority": 1}, body)
    assert not cron_specs.cron_matches({**engine_row, "enabled": False}, body)
    with pytest.raises(InvalidSpec, match=r"spec\.schedule"):
        cron_specs.cron_request({**spec, "schedule": "every day"}, namespace="ns", name="x")
    with pytest.raises(InvalidSpec, match="workflowRef"):
        cron_specs.cron_request({"schedule": "* * * * *"}, namespace="ns", name="x")
    nxt = cron_specs.next_schedule_time("0 * * * *", datetime(2025, 1, 1, 10, 30, tzinfo=UTC))
    assert nxt == "2025-01-01T11:00:00Z"


def test_rate_limit_request() -> None:
    assert cron_specs.rate_limit_request({"key": "k", "limit": 5, "duration": "HOUR"}) == (
        "k",
        5,
        "HOUR",
    )
    with pytest.raises(InvalidSpec, match="duration"):
        cron_specs.rate_limit_request({"key": "k", "limit": 5, "duration": "FORTNIGHT"})
    with pytest.raises(InvalidSpec, match=r"spec\.limit"):
        cron_specs.rate_limit_request({"key": "k", "limit": -1})


POOL_BODY: dict[str, Any] = {
    "apiVersion": "hewer.dev/v1alpha1",
    "kind": "WorkerPool",
    "metadata": {"name": "pool", "namespace": "ns", "uid": "u-1"},
    "spec": {
        "replicas": 2,
        "slots": 7,
        "workflows": ["a", "b"],
        "template": {
            "image": "img:1",
            "command": ["python", "-m", "w"],
            "env": [{"name": "X", "value": "1"}, {"name": "HATCHET_CLIENT_TOKEN", "value": "no"}],
            "resources": {"limits": {"memory": "1Gi"}},
            "nodeSelector": {"pool": "workers"},
        },
    },
}
ENGINE = pool_specs.EngineEndpoints(grpc_address="engine:7077", server_url="http://engine:8080")


def test_deployment_manifest() -> None:
    dep = pool_specs.deployment(POOL_BODY, engine=ENGINE, secret_name="pool-hewer-token")
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "hewer.dev/v1alpha1",
            "kind": "WorkerPool",
            "name": "pool",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {"matchLabels": {pool_specs.POOL_LABEL: "pool"}}
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "workers"}
    container = pod["containers"][0]
    assert container["image"] == "img:1" and container["command"] == ["python", "-m", "w"]
    env = {e["name"]: e for e in container["env"]}
    assert env["X"]["value"] == "1"
    assert env["HATCHET_CLIENT_TOKEN"] == {
        "name": "HATCHET_CLIENT_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "pool-hewer-token", "key": "token"}},
    }  # the user's value does not override the managed one
    assert env["HATCHET_CLIENT_HOST_PORT"]["value"] == "engine:7077"
    assert env["HATCHET_CLIENT_SERVER_URL"]["value"] == "http://engine:8080"
    assert env["HATCHET_CLIENT_TLS_STRATEGY"]["value"] == "none"
    assert env["HEWER_WORKER_SLOTS"]["value"] == "7"
    assert env["HEWER_WORKER_WORKFLOWS"]["value"] == "a,b"
    # stable hash; a spec change changes it
    again = pool_specs.deployment(POOL_BODY, engine=ENGINE, secret_name="pool-hewer-token")
    assert not pool_specs.deployment_needs_update(again, dep)
    scaled = {**POOL_BODY, "spec": {**POOL_BODY["spec"], "replicas": 3}}
    assert pool_specs.deployment_needs_update(
        dep, pool_specs.deployment(scaled, engine=ENGINE, secret_name="pool-hewer-token")
    )


def test_engine_ref_overrides_and_image_is_required() -> None:
    spec = {**POOL_BODY["spec"], "engineRef": {"grpcAddress": "other:1"}}
    assert pool_specs.endpoints(spec, ENGINE) == pool_specs.EngineEndpoints(
        "other:1", ENGINE.server_url
    )
    with pytest.raises(InvalidSpec, match=r"template\.image"):
        pool_specs.pool_spec({"template": {}})


def test_token_secret() -> None:
    secret = pool_specs.token_secret(POOL_BODY, token="ey.x.y", token_id="t-1")
    assert base64.b64decode(secret["data"]["token"]) == b"ey.x.y"
    assert secret["metadata"]["annotations"][pool_specs.TOKEN_ID_ANNOTATION] == "t-1"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_pool_readiness() -> None:
    assert pool_specs.pool_readiness({"readyReplicas": 2}, 2) == (
        True,
        "Available",
        "2/2 workers ready",
    )
    assert pool_specs.pool_readiness({"readyReplicas": 1}, 2)[:2] == (False, "Progressing")
    assert pool_specs.pool_readiness(None, 0)[0]


def test_conditions_keep_transition_time_while_status_holds() -> None:
    t1, t2 = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    first = spec_common.set_condition(
        None, type_="Ready", status=False, reason="A", message="a", generation=1, now=t1
    )
    second = spec_common.set_condition(
        first, type_="Ready", status=False, reason="B", message="b", generation=2, now=t2
    )
    assert second[0]["lastTransitionTime"] == "2025-01-01T00:00:00Z"
    assert second[0]["reason"] == "B" and second[0]["observedGeneration"] == 2
    third = spec_common.set_condition(
        second, type_="Ready", status=True, reason="C", message="c", generation=2, now=t2
    )
    assert third[0]["lastTransitionTime"] == "2025-01-02T00:00:00Z"
    both = spec_common.set_condition(
        third, type_="DefinitionDrift", status=None, reason="D", message="d", generation=2, now=t2
    )
    assert [c["type"] for c in both] == ["Ready", "DefinitionDrift"]
    assert both[1]["status"] == "Unknown"


def test_drift_diff_ignores_transport_details_and_defaults() -> None:
    declared = _proto_round_trip(workflow_specs.workflow_registration("wf", DEMO))
    worker = _proto_round_trip(workflow_specs.workflow_registration("wf", DEMO))
    # what an SDK adds or randomizes
    worker["input_json_schema"] = "e30="
    for task in worker["tasks"]:
        task["timeout"] = "30s"
    assert definition_diff(declared, worker) == []
    assert summarize([]) is None

    changed = _proto_round_trip(
        workflow_specs.workflow_registration(
            "wf",
            {
                **DEMO,
                "taskDefaults": {"timeout": "1m", "retries": 1},
                "tasks": [*DEMO["tasks"][:2], {"name": "extra", "parents": ["fetch"]}],
            },
        )
    )
    lines = definition_diff(declared, changed)
    assert 'task \'fetch\' timeout: "30s" -> "1m"' in lines
    assert "task 'summarize': missing in the worker's definition" in lines
    assert "task 'extra': not declared" in lines
    text = summarize([f"line {i}" for i in range(12)])
    assert text is not None and text.endswith("(+4 more)")


def test_operator_config_from_env(tmp_path: Any) -> None:
    claims = (
        base64.urlsafe_b64encode(
            b'{"sub":"tenant-1","grpc_broadcast_address":"e:7077","server_url":"http://e:8080"}'
        )
        .decode()
        .rstrip("=")
    )
    token = f"eyJhbGciOiJIUzI1NiJ9.{claims}.sig"
    path = tmp_path / "token"
    path.write_text(token + "\n")
    config = OperatorConfig.from_env(
        {
            "HEWER_ENGINE_URL": "http://engine:8080/",
            "HEWER_ENGINE_TOKEN_FILE": str(path),
            "HEWER_OPERATOR_RESYNC_SECONDS": "5",
        }
    )
    assert config.engine_url == "http://engine:8080"
    assert config.tenant_id == "tenant-1" and config.grpc_address == "e:7077"
    assert config.public_url == "http://e:8080" and config.resync_seconds == 5
    assert [config.backoff(i) for i in range(7)] == [2, 4, 8, 16, 32, 60, 60]
    with pytest.raises(ConfigError, match="HEWER_ENGINE_URL"):
        OperatorConfig.from_env({"HEWER_ENGINE_TOKEN": token})
    with pytest.raises(ConfigError, match="HEWER_ENGINE_TOKEN"):
        OperatorConfig.from_env({"HEWER_ENGINE_URL": "http://e"})


def test_a_deletion_does_not_wait_a_minute_for_a_running_resync_timer() -> None:
    import kopf

    from hewer.operator.registry import FINALIZER, configure_settings

    settings = kopf.OperatorSettings()
    configure_settings(settings)
    assert settings.persistence.finalizer == FINALIZER
    assert settings.background.cancellation_polling <= 1.0
    assert settings.background.instant_exit_timeout is not None
