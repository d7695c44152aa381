"""The CRDs, kustomize renders and examples (scripts/check_manifests.py), and bad input the
API server must reject at apply time through the CRDs' schemas and CEL rules."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cm = _load("check_manifests")
CRDS = cm.load_crds()
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

API = "hewer.dev/v1alpha1"


def example(kind: str) -> dict[str, Any]:
    for path in sorted((REPO / "manifests" / "examples").glob("*.yaml")):
        for doc in cm.load_yaml_documents(path.read_text()):
            if doc.get("kind") == kind:
                return doc
    raise AssertionError(f"no {kind} in manifests/examples")


def errors(obj: dict[str, Any]) -> list[str]:
    return cm.validate_custom_resource(CRDS, obj)


def workflow(tasks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Workflow",
        "metadata": {"name": "w"},
        "spec": {"tasks": tasks, **spec},
    }


# --- the CRDs themselves --------------------------------------------------------------------


def test_crd_files_are_generated() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_crds.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_crds_are_sound() -> None:
    assert {kind for _api, kind in CRDS} == {"Workflow", "CronTrigger", "RateLimit", "WorkerPool"}
    for path in sorted((REPO / "crds").glob("hewer.dev_*.yaml")):
        for doc in cm.load_yaml_documents(path.read_text()):
            assert cm.crd_problems(doc, path.name) == []
            assert cm.validate_builtin(doc) == []


def test_crd_contract() -> None:
    short = {k: s.crd["spec"]["names"]["shortNames"] for (_a, k), s in CRDS.items()}
    assert short == {
        "Workflow": ["hwf"],
        "CronTrigger": ["hcron"],
        "RateLimit": ["hrl"],
        "WorkerPool": ["hwp"],
    }
    pool = CRDS[(API, "WorkerPool")].version["subresources"]
    assert pool["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    # `kubectl get workerpools` shows desired and current replicas and the queue depth
    columns = {
        c["name"]: c["jsonPath"]
        for c in CRDS[(API, "WorkerPool")].version["additionalPrinterColumns"]
    }
    assert columns["Desired"] == ".status.desiredReplicas"
    assert columns["Current"] == ".status.replicas"
    assert columns["Queued"] == ".status.queued"
    for schema in CRDS.values():
        status = schema.schema["properties"]["status"]["properties"]
        assert {"observedGeneration", "conditions"} <= status.keys()


def test_schema_checker_finds_problems() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "n": {"type": "integer", "minimum": 1, "default": 0},
            "l": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"k": {"type": "string", "maxLength": 3}},
                },
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["k"],
            },
        },
        "x-kubernetes-validations": [{"rule": "self.l.all(x, x.k != '')"}],
    }
    found = "\n".join(cm.schema_problems(bad))
    assert ".a: no type" in found
    assert ".n: default 0" in found
    assert "list-map key 'k' must be required" in found
    assert ".l: array under a CEL rule needs maxItems" in found


# --- examples and defaults ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Workflow", "CronTrigger", "RateLimit", "WorkerPool"])
def test_examples_are_valid(kind: str) -> None:
    assert errors(example(kind)) == []


def test_defaults_are_applied() -> None:
    pool = CRDS[(API, "WorkerPool")].defaulted({"spec": {"template": {"image": "worker:1"}}})[
        "spec"
    ]
    assert (pool["slots"], pool["durableSlots"], pool["replicas"]) == (100, 1000, 1)
    cron = CRDS[(API, "CronTrigger")].defaulted(
        {"spec": {"workflowRef": {"name": "w"}, "schedule": "@daily"}}
    )["spec"]
    assert (cron["priority"], cron["suspend"]) == (1, False)
    limit = CRDS[(API, "RateLimit")].defaulted({"spec": {"key": "k", "limit": 1}})["spec"]
    assert limit["duration"] == "SECOND"
    wf = CRDS[(API, "Workflow")].defaulted(
        workflow(
            [
                {
                    "name": "a",
                    "rateLimits": [{"key": "k"}],
                    "concurrency": [{"expression": "input.x"}],
                }
            ]
        )
    )["spec"]
    assert wf["defaultPriority"] == 1
    assert wf["tasks"][0]["slots"] == 1
    assert wf["tasks"][0]["rateLimits"] == [{"key": "k", "units": 1}]
    assert wf["tasks"][0]["concurrency"] == [
        {"expression": "input.x", "maxRuns": 1, "limitStrategy": "GROUP_ROUND_ROBIN"}
    ]


# --- bad input is rejected at apply time ----------------------------------------------------


@pytest.mark.parametrize(
    "schedule", ["every day", "", "* * * *", "@sometimes", "* * * * * * *", "* * * * *; rm -rf /"]
)
def test_cron_trigger_with_invalid_schedule(schedule: str) -> None:
    bad = example("CronTrigger")
    bad["spec"]["schedule"] = schedule
    assert any("schedule" in e for e in errors(bad)), schedule


@pytest.mark.parametrize(
    "schedule",
    ["*/15 * * * *", "0 0 * * MON-FRI", "0 */5 * * * *", "@hourly", "@yearly", "0 12 1,15 * ?"],
)
def test_cron_trigger_with_valid_schedule(schedule: str) -> None:
    good = example("CronTrigger")
    good["spec"]["schedule"] = schedule
    assert errors(good) == []


def test_cron_trigger_priority_and_ref() -> None:
    bad = example("CronTrigger")
    bad["spec"]["priority"] = 4
    assert any("priority" in e for e in errors(bad))
    bad = example("CronTrigger")
    del bad["spec"]["workflowRef"]
    assert any("workflowRef" in e for e in errors(bad))


def test_worker_pool_without_image() -> None:
    bad = example("WorkerPool")
    del bad["spec"]["template"]["image"]
    assert any("'image' is a required property" in e for e in errors(bad))
    bad["spec"]["template"]["image"] = ""
    assert any(".spec.template.image" in e for e in errors(bad))
    del bad["spec"]["template"]
    assert any("'template' is a required property" in e for e in errors(bad))


def test_worker_pool_bounds_and_typos() -> None:
    for field, value in (("replicas", -1), ("slots", 0), ("durableSlots", -1)):
        bad = example("WorkerPool")
        bad["spec"][field] = value
        assert any(field in e for e in errors(bad)), field
    bad = example("WorkerPool")
    bad["spec"]["template"]["imagePullPolicy"] = "Sometimes"
    assert errors(bad)
    bad = example("WorkerPool")
    bad["spec"]["replica"] = 3  # a typo is an unknown field, rejected by strict validation
    assert any("'replica' was unexpected" in e for e in errors(bad))
    ok = example("WorkerPool")
    ok["spec"]["autoscaling"] = {"minReplicas": 0, "maxReplicas": 5, "targetPerReplica": 10}
    assert errors(ok) == []


@pytest.mark.parametrize(
    ("autoscaling", "words"),
    [
        ({"minReplicas": 6, "maxReplicas": 5}, "minReplicas must not exceed maxReplicas"),
        ({"targetPerReplica": 0}, "targetPerReplica"),
        ({"maxScaleUpStep": 0}, "maxScaleUpStep"),
        ({"maxScaleDownStep": 0}, "maxScaleDownStep"),
        ({"minReplicas": -1}, "minReplicas"),
        ({"maxReplicas": 5, "anything": 1}, "'anything' was unexpected"),
    ],
)
def test_worker_pool_autoscaling_refused(autoscaling: dict[str, Any], words: str) -> None:
    bad = example("WorkerPool")
    bad["spec"]["autoscaling"] = autoscaling
    assert any(words in e for e in errors(bad)), errors(bad)


def test_workflow_with_missing_parent() -> None:
    bad = workflow([{"name": "a"}, {"name": "b", "parents": ["a", "nope"]}])
    assert ".spec: every parent must name a task in spec.tasks" in errors(bad)
    bad = example("Workflow")
    bad["spec"]["tasks"][2]["parents"].append("missing")
    assert ".spec: every parent must name a task in spec.tasks" in errors(bad)


def test_workflow_self_parent_and_duplicates() -> None:
    assert ".spec.tasks[0]: a task cannot be its own parent" in errors(
        workflow([{"name": "a", "parents": ["a"]}])
    )
    assert any("duplicate entry" in e for e in errors(workflow([{"name": "a"}, {"name": "a"}])))
    assert any(
        "duplicate entries" in e
        for e in errors(workflow([{"name": "a"}, {"name": "b", "parents": ["a", "a"]}]))
    )


def test_workflow_two_task_cycle_passes_the_schema() -> None:
    # CEL cannot follow paths: longer cycles are the operator's (Ready=False, InvalidSpec).
    assert (
        errors(workflow([{"name": "a", "parents": ["b"]}, {"name": "b", "parents": ["a"]}])) == []
    )


def test_workflow_hooks_and_conditions() -> None:
    assert any(
        "onFailure.name" in e for e in errors(workflow([{"name": "a"}], onFailure={"name": "a"}))
    )
    assert any(
        "onFailure.parents" in e or "'parents' was unexpected" in e
        for e in errors(workflow([{"name": "a"}], onFailure={"name": "f", "parents": ["a"]}))
    )
    assert errors(workflow([{"name": "a"}], onFailure={"name": "f"}, onSuccess={"name": "s"})) == []
    for cond, ok in (
        ({"sleepFor": "10s"}, True),
        ({"eventKey": "k", "expression": "true"}, True),
        ({"parent": "a", "expression": "output.x > 1"}, True),
        ({}, False),
        ({"sleepFor": "1s", "eventKey": "k"}, False),
        ({"sleepFor": "soon"}, False),
    ):
        wf = workflow([{"name": "a"}, {"name": "b", "parents": ["a"], "waitFor": [cond]}])
        assert (errors(wf) == []) is ok, cond


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("defaultPriority", 0),
        ("defaultPriority", 4),
        ("sticky", "MAYBE"),
        ("name", "-bad"),
        ("tasks", []),
        ("concurrency", [{"maxRuns": 1}]),
        ("concurrency", [{"expression": "x", "limitStrategy": "DROP"}]),
        ("taskDefaults", {"timeout": "30 seconds"}),
    ],
)
def test_workflow_field_rules(field: str, value: Any) -> None:
    bad = example("Workflow")
    bad["spec"][field] = copy.deepcopy(value)
    assert errors(bad), (field, value)


def test_task_name_and_durations() -> None:
    assert errors(workflow([{"name": "has space"}]))
    assert errors(workflow([{"name": "a", "timeout": "5"}]))
    assert errors(workflow([{"name": "a", "retries": -1}]))
    assert (
        errors(
            workflow(
                [
                    {
                        "name": "Fetch_1",
                        "timeout": "1h30m",
                        "scheduleTimeout": "500ms",
                        "retries": 3,
                        "backoffFactor": 2.0,
                        "backoffMaxSeconds": 60,
                        "durable": True,
                        "slots": 2,
                    }
                ]
            )
        )
        == []
    )


def test_rate_limit_rules() -> None:
    assert errors(example("RateLimit")) == []
    for field, value in (("limit", 0), ("duration", "FORTNIGHT"), ("key", "")):
        bad = example("RateLimit")
        bad["spec"][field] = value
        assert errors(bad), field


# --- renders (need kubectl) -----------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("name", list(cm.RENDERS))
def test_render_is_valid(name: str) -> None:
    objs = cm.render(name)
    assert cm.check_render(name, objs, CRDS) == []


@needs_kubectl
def test_overlays() -> None:
    def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name), None)

    base = cm.render("manifests/base")
    dev = cm.render("manifests/overlays/dev")
    prod = cm.render("manifests/overlays/production")
    engine = find(base, "Deployment", "hewer-engine")
    operator = find(base, "Deployment", "hewer-operator")
    assert engine and operator
    assert engine["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve"]
    op = operator["spec"]["template"]["spec"]["containers"][0]
    assert op["args"] == ["operator", "--all-namespaces"]
    assert op["image"] == engine["spec"]["template"]["spec"]["containers"][0]["image"]
    assert find(dev, "StatefulSet", "hewer-postgres") and find(dev, "Secret", "hewer-database")
    assert find(prod, "Secret", "hewer-database") is None
    prod_engine = find(prod, "Deployment", "hewer-engine")
    assert prod_engine and prod_engine["spec"]["replicas"] == 2
    assert find(prod, "PodDisruptionBudget", "hewer-engine")
    service = find(base, "Service", "hewer-engine")
    assert service
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 7077, "http": 8080}


def test_reference_checker_finds_problems() -> None:
    objs = list(
        yaml.safe_load_all("""
kind: Deployment
apiVersion: apps/v1
metadata: {name: d, namespace: elsewhere}
spec:
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      serviceAccountName: ghost
      containers:
        - name: c
          image: img:latest
          env:
            - name: X
              valueFrom: {secretKeyRef: {name: missing, key: k}}
---
kind: Service
apiVersion: v1
metadata: {name: s, namespace: hewer-system}
spec:
  selector: {app: other}
  ports: [{port: 80, targetPort: http}]
""")
    )
    found = "\n".join(cm.reference_problems(objs, external_secrets=set(), namespace="hewer-system"))
    for text in (
        "not in namespace hewer-system",
        "ServiceAccount ghost",
        "runAsNonRoot is not set",
        "drop ALL",
        "no pinned tag",
        "Secret missing",
        "matches no pod template",
        "no resource requests",
    ):
        assert text in found, text
