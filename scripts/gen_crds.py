#!/usr/bin/env python3
"""Write the CustomResourceDefinitions in ``crds/`` from the schemas below.

    python scripts/gen_crds.py          # (re)write crds/hewer.dev_<plural>.yaml
    python scripts/gen_crds.py --check  # exit 1 if a file differs from what would be written

The YAML files are the artifact (kubectl applies them, the operator reads the same field
names); this script only keeps the repeated parts of the schemas (task bodies, conditions,
durations) identical. Edit here, run it, commit both. ``tests/unit/test_manifests.py`` runs
``--check``.

Limits (``maxItems``, ``maxLength``) are there for the API server's CEL cost estimate as much
as for sanity: a rule that walks an unbounded list is rejected when the CRD is created.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

GROUP = "hewer.dev"
VERSION = "v1alpha1"
CATEGORY = "hewer"
REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "crds"

Schema = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# building blocks

TASK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
WORKFLOW_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
# Five or six whitespace-separated fields of cron characters, or a predefined schedule. The
# operator parses it for real (croniter) and reports Ready=False/InvalidSchedule if it must.
CRON_FIELD = r"[0-9A-Za-z*?,/#-]+"
CRON_PATTERN = (
    rf"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|({CRON_FIELD}\s+){{4,5}}"
    rf"{CRON_FIELD})$"
)


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def boolean(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def obj(description: str, properties: Schema, **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def array(description: str, items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "description": description, "items": items, **extra}


def duration(description: str) -> Schema:
    return string(
        f"{description} A duration such as 30s, 5m, 1h30m or 500ms.",
        pattern=DURATION_PATTERN,
        maxLength=32,
    )


def preserved(description: str, kind: str = "object") -> Schema:
    return {"type": kind, "description": description, "x-kubernetes-preserve-unknown-fields": True}


def task_name(description: str) -> Schema:
    return string(description, pattern=TASK_NAME_PATTERN, minLength=1, maxLength=63)


def condition_list() -> Schema:
    """``status.conditions``: the metav1.Condition shape, a map keyed by ``type``."""
    return array(
        "Observations of the resource's state. Ready is True when the engine matches the spec.",
        obj(
            "One condition.",
            {
                "type": string("Condition type, e.g. Ready.", minLength=1, maxLength=316),
                "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
                "reason": string("One CamelCase word saying why.", maxLength=1024),
                "message": string("Human-readable details.", maxLength=32768),
                "lastTransitionTime": string(
                    "When status last changed (RFC 3339).", format="date-time"
                ),
                "observedGeneration": integer(
                    "metadata.generation this condition was computed from.",
                    format="int64",
                    minimum=0,
                ),
            },
            required=["type", "status"],
        ),
        maxItems=16,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def status_schema(description: str, properties: Schema) -> Schema:
    # Unknown fields are kept: kopf records its own progress (status.kopf) and handler
    # results beside the fields below; pruning them would make it re-run handlers.
    return {
        "type": "object",
        "description": description
        + " Written by the operator; fields not listed here are kept for its bookkeeping.",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": integer(
                "The metadata.generation the operator last acted on.", format="int64", minimum=0
            ),
            "conditions": condition_list(),
            **properties,
        },
    }


def concurrency_list(scope: str) -> Schema:
    return array(
        f"Concurrency limits of the {scope}, each keyed by a CEL expression over the input.",
        obj(
            "One concurrency limit.",
            {
                "expression": string(
                    "CEL expression giving the group key, e.g. input.user_id.",
                    minLength=1,
                    maxLength=1024,
                ),
                "maxRuns": integer(
                    "Runs allowed at once per group key.", minimum=1, default=1, format="int32"
                ),
                "limitStrategy": string(
                    "What happens to a run over the limit.",
                    enum=["GROUP_ROUND_ROBIN", "CANCEL_IN_PROGRESS", "CANCEL_NEWEST"],
                    default="GROUP_ROUND_ROBIN",
                ),
            },
            required=["expression"],
        ),
        maxItems=16,
    )


def retry_fields(what: str) -> Schema:
    return {
        "timeout": duration(f"Execution timeout of {what}."),
        "scheduleTimeout": duration(f"How long {what} may wait for a worker."),
        "retries": integer(f"Retries of {what} after a failure.", minimum=0, maximum=1000),
        "backoffFactor": {
            "type": "number",
            "description": f"Exponential backoff factor between retries of {what}.",
            "minimum": 1,
            "maximum": 1000,
        },
        "backoffMaxSeconds": integer(
            f"Upper bound of the backoff between retries of {what}, in seconds.",
            minimum=1,
            format="int32",
        ),
    }


EXACTLY_ONE_CONDITION = (
    "(has(self.sleepFor) ? 1 : 0) + (has(self.eventKey) ? 1 : 0) + (has(self.parent) ? 1 : 0) == 1"
)


def condition_items(verb: str) -> Schema:
    return array(
        f"Conditions that {verb}. Conditions with the same orGroup are OR-ed, groups are AND-ed.",
        obj(
            "One condition: exactly one of sleepFor, eventKey or parent.",
            {
                "sleepFor": duration("Satisfied once this much time has passed."),
                "eventKey": string(
                    "Satisfied by an event with this key (and, if set, matching expression).",
                    minLength=1,
                    maxLength=256,
                ),
                "parent": task_name(
                    "Satisfied by the output of this parent task matching expression."
                ),
                "expression": string(
                    "CEL expression over the event payload or the parent's output.",
                    maxLength=1024,
                ),
                "orGroup": string("Conditions sharing an orGroup are OR-ed.", maxLength=64),
            },
            **{
                "x-kubernetes-validations": [
                    {
                        "rule": EXACTLY_ONE_CONDITION,
                        "message": "set exactly one of sleepFor, eventKey or parent",
                    }
                ]
            },
        ),
        maxItems=16,
    )


def task_properties(*, with_parents: bool) -> Schema:
    props: Schema = {
        "name": task_name("Task name, unique in the workflow."),
    }
    if with_parents:
        props["parents"] = array(
            "Names of tasks that must complete first (the DAG's edges).",
            task_name("A task in spec.tasks."),
            maxItems=32,
            **{"x-kubernetes-list-type": "set"},
        )
    props.update(retry_fields("this task"))
    props.update(
        {
            "durable": boolean("A durable task: its progress survives worker restarts."),
            "slots": integer(
                "Worker slots the task occupies.", minimum=1, default=1, format="int32"
            ),
            "rateLimits": array(
                "Rate limits the task consumes (see the RateLimit resource).",
                obj(
                    "One rate limit.",
                    {
                        "key": string("Rate limit key.", minLength=1, maxLength=256),
                        "units": integer(
                            "Units consumed per run.", minimum=1, default=1, format="int32"
                        ),
                    },
                    required=["key"],
                ),
                maxItems=16,
            ),
            "desiredWorkerLabels": {
                "type": "object",
                "description": "Worker labels the task wants, by label key.",
                "maxProperties": 32,
                "additionalProperties": obj(
                    "How a worker's label is matched.",
                    {
                        "value": string("Label value to compare with.", maxLength=256),
                        "required": boolean("Only workers that match may run the task."),
                        "comparator": string(
                            "How the worker's value compares to value.",
                            enum=[
                                "EQUAL",
                                "NOT_EQUAL",
                                "GREATER_THAN",
                                "GREATER_THAN_OR_EQUAL",
                                "LESS_THAN",
                                "LESS_THAN_OR_EQUAL",
                            ],
                        ),
                        "weight": integer("Preference weight when not required.", format="int32"),
                    },
                    required=["value"],
                ),
            },
            "waitFor": condition_items("must hold before the task starts"),
            "skipIf": condition_items("skip the task when they hold"),
            "cancelIf": condition_items("cancel the task when they hold"),
            "concurrency": concurrency_list("task"),
        }
    )
    return props


# ---------------------------------------------------------------------------------------------
# the four kinds

NOT_OWN_PARENT = "!has(self.parents) || !(self.name in self.parents)"
PARENTS_EXIST = (
    "self.tasks.all(t, !has(t.parents) || t.parents.all(p, self.tasks.exists(u, u.name == p)))"
)


def workflow_spec() -> Schema:
    task = obj(
        "One task of the DAG.",
        task_properties(with_parents=True),
        required=["name"],
        **{
            "x-kubernetes-validations": [
                {"rule": NOT_OWN_PARENT, "message": "a task cannot be its own parent"}
            ]
        },
    )
    hook = obj(
        "A hook task: it has no parents.",
        task_properties(with_parents=False),
        required=["name"],
    )
    on_failure = copy.deepcopy(hook)
    on_failure["description"] = "On-failure task: runs once when any task of the run fails."
    on_success = copy.deepcopy(hook)
    on_success["description"] = "On-success task: runs once after every task succeeded."
    return obj(
        "The workflow definition the operator registers with the engine.",
        {
            "name": string(
                "Engine workflow name; defaults to metadata.name.",
                pattern=WORKFLOW_NAME_PATTERN,
                maxLength=128,
            ),
            "description": string("What the workflow does.", maxLength=4096),
            "version": string("Free-form version label.", maxLength=64),
            "onEvents": array(
                "Event keys that trigger a run.",
                string("An event key.", minLength=1, maxLength=256),
                maxItems=32,
                **{"x-kubernetes-list-type": "set"},
            ),
            "onCrons": array(
                "Cron schedules that trigger a run (see also the CronTrigger resource).",
                string("A cron expression.", pattern=CRON_PATTERN, maxLength=128),
                maxItems=32,
                **{"x-kubernetes-list-type": "set"},
            ),
            "defaultPriority": integer(
                "Priority of runs that do not set one (1 lowest, 3 highest).",
                minimum=1,
                maximum=3,
                default=1,
                format="int32",
            ),
            "sticky": string("Keep a run's tasks on one worker.", enum=["SOFT", "HARD"]),
            "concurrency": concurrency_list("workflow"),
            "taskDefaults": obj(
                "Defaults for every task that does not set the field itself.",
                retry_fields("a task"),
            ),
            "tasks": array(
                "The tasks; parents make a DAG.",
                task,
                minItems=1,
                maxItems=100,
                **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            ),
            "onFailure": on_failure,
            "onSuccess": on_success,
        },
        required=["tasks"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": PARENTS_EXIST,
                    "message": "every parent must name a task in spec.tasks",
                },
                {
                    "rule": "!has(self.onFailure) || "
                    "!self.tasks.exists(t, t.name == self.onFailure.name)",
                    "message": "spec.onFailure.name must differ from every task name",
                },
                {
                    "rule": "!has(self.onSuccess) || "
                    "!self.tasks.exists(t, t.name == self.onSuccess.name)",
                    "message": "spec.onSuccess.name must differ from every task name",
                },
                {
                    "rule": "!has(self.onFailure) || !has(self.onSuccess) || "
                    "self.onFailure.name != self.onSuccess.name",
                    "message": "spec.onFailure and spec.onSuccess need different names",
                },
            ]
        },
    )


def workflow_status() -> Schema:
    return status_schema(
        "What the operator registered.",
        {
            "workflowName": string("Engine workflow name the resource registered."),
            "workflowId": string("Engine workflow id."),
            "versionId": string("Engine workflow version id last registered."),
            "drift": string(
                "Short diff between the spec and the definition the engine runs (e.g. one a "
                "worker registered), set while the DefinitionDrift condition is True.",
                maxLength=4096,
            ),
            "notEnforced": array(
                "Declared settings the engine accepts but does not enforce yet (the Enforced "
                "condition is False while this is not empty).",
                string("A setting, e.g. 'task conditions'.", maxLength=256),
                maxItems=64,
            ),
        },
    )


def crontrigger_spec() -> Schema:
    return obj(
        "A cron schedule that triggers a workflow.",
        {
            "workflowRef": obj(
                "The workflow to run.",
                {
                    "name": string(
                        "A Workflow resource in this namespace, or an engine workflow name.",
                        minLength=1,
                        maxLength=253,
                    )
                },
                required=["name"],
            ),
            "schedule": string(
                "Cron expression (5 or 6 fields, UTC) or @yearly, @annually, @monthly, "
                "@weekly, @daily, @midnight, @hourly.",
                pattern=CRON_PATTERN,
                maxLength=128,
            ),
            "input": preserved("Input of each run (any JSON object)."),
            "additionalMetadata": preserved("Metadata attached to each run."),
            "priority": integer(
                "Run priority (1 lowest, 3 highest).",
                minimum=1,
                maximum=3,
                default=1,
                format="int32",
            ),
            "suspend": boolean(
                "Stop scheduling new runs (the engine's cron is removed).", default=False
            ),
        },
        required=["workflowRef", "schedule"],
    )


def crontrigger_status() -> Schema:
    return status_schema(
        "The engine cron behind this trigger.",
        {
            "lastScheduleTime": string("When a run was last started.", format="date-time"),
            "nextScheduleTime": string("When the next run is due.", format="date-time"),
            "lastRunId": string("Id of the last run started."),
            "cronId": string("Engine cron id."),
            "workflowId": string("Engine id of the workflow the cron triggers."),
        },
    )


def ratelimit_spec() -> Schema:
    return obj(
        "A rate limit that tasks consume with rateLimits[].key.",
        {
            "key": string("Rate limit key.", minLength=1, maxLength=256),
            "limit": integer("Units allowed per duration.", minimum=1, format="int32"),
            "duration": string(
                "The window the limit applies to.",
                enum=["SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"],
                default="SECOND",
            ),
        },
        required=["key", "limit"],
    )


def ratelimit_status() -> Schema:
    return status_schema(
        "The limit as registered with the engine.",
        {
            "key": string("Key registered with the engine (to clean up after a key change)."),
            "registeredLimit": integer("Limit the engine has.", format="int32"),
            "registeredDuration": string("Duration the engine has."),
        },
    )


def workerpool_spec() -> Schema:
    env_var = obj(
        "An environment variable (the Kubernetes EnvVar shape).",
        {
            "name": string("Variable name.", minLength=1, maxLength=256),
            "value": string("Literal value."),
            "valueFrom": preserved("A Kubernetes EnvVarSource (secretKeyRef, ...)."),
        },
        required=["name"],
    )
    template = obj(
        "The worker container. The operator adds the HATCHET_CLIENT_* variables.",
        {
            "image": string("Worker container image.", minLength=1, maxLength=1024),
            "imagePullPolicy": string(
                "Kubernetes image pull policy.", enum=["Always", "IfNotPresent", "Never"]
            ),
            "command": array("Entrypoint override.", string("An argument."), maxItems=64),
            "args": array("Arguments.", string("An argument."), maxItems=256),
            "env": array(
                "Extra environment variables.",
                env_var,
                maxItems=256,
                **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            ),
            "resources": preserved("Kubernetes ResourceRequirements (requests, limits)."),
            "serviceAccountName": string(
                "Service account the worker pods run as.",
                maxLength=253,
                pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            ),
            "nodeSelector": {
                "type": "object",
                "description": "Kubernetes node selector.",
                "additionalProperties": {"type": "string"},
            },
            "tolerations": array(
                "Kubernetes tolerations.",
                preserved("A toleration."),
                maxItems=64,
            ),
        },
        required=["image"],
    )
    return obj(
        "A Deployment of workers connected to the engine.",
        {
            "template": template,
            "workflows": array(
                "Workflow resources or engine workflow names the workers serve.",
                string("A workflow name.", minLength=1, maxLength=253),
                maxItems=256,
                **{"x-kubernetes-list-type": "set"},
            ),
            "slots": integer(
                "Concurrent task slots per worker.", minimum=1, default=100, format="int32"
            ),
            "durableSlots": integer(
                "Concurrent durable-task slots per worker.",
                minimum=0,
                default=1000,
                format="int32",
            ),
            "replicas": integer("Number of worker pods.", minimum=0, default=1, format="int32"),
            "engineRef": obj(
                "Where the workers reach the engine; defaults from the operator's settings.",
                {
                    "grpcAddress": string(
                        "Engine gRPC host:port.", pattern=r"^\S+:[0-9]{1,5}$", maxLength=512
                    ),
                    "serverUrl": string(
                        "Engine REST base URL.", pattern=r"^https?://\S+$", maxLength=2048
                    ),
                },
            ),
            "autoscaling": autoscaling_spec(),
        },
        required=["template"],
    )


def autoscaling_spec() -> Schema:
    def count(description: str, **extra: Any) -> Schema:
        return integer(description, format="int32", **extra)

    return obj(
        "Scale the workers from the engine's queue depth (the operator then owns the"
        " Deployment's replicas and spec.replicas is not used): desired = clamp(ceil((queued"
        " + running) / targetPerReplica), minReplicas, maxReplicas), never below the busy"
        " workers; idle workers are drained before a scale-down.",
        {
            "minReplicas": count("Fewest workers; 0 lets the pool sleep.", minimum=0, default=0),
            "maxReplicas": count("Most workers.", minimum=1, maximum=1000, default=10),
            "targetPerReplica": count(
                "Queued plus running tasks one worker should take; default: spec.slots.",
                minimum=1,
            ),
            "activationQueued": count(
                "Queued tasks needed to wake a pool at 0 replicas.", minimum=1, default=1
            ),
            "scaleUpStabilizationSeconds": count(
                "A scale-up must be wanted this long (0: at once).", minimum=0, default=0
            ),
            "scaleDownStabilizationSeconds": count(
                "A scale-down must be wanted this long.", minimum=0, default=300
            ),
            "maxScaleUpStep": count("Replicas added per decision at most.", minimum=1, default=4),
            "maxScaleDownStep": count(
                "Replicas removed per decision at most.", minimum=1, default=1
            ),
            "drainTimeoutSeconds": count(
                "How long a worker chosen for removal may finish its tasks.",
                minimum=0,
                default=600,
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minReplicas) || !has(self.maxReplicas)"
                    " || self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must not exceed maxReplicas",
                },
                {
                    "rule": "!has(self.targetPerReplica) || self.targetPerReplica > 0",
                    "message": "targetPerReplica must be greater than 0",
                },
                {
                    "rule": "(!has(self.maxScaleUpStep) || self.maxScaleUpStep >= 1)"
                    " && (!has(self.maxScaleDownStep) || self.maxScaleDownStep >= 1)",
                    "message": "maxScaleUpStep and maxScaleDownStep must be at least 1",
                },
            ]
        },
    )


def workerpool_status() -> Schema:
    return status_schema(
        "The worker Deployment.",
        {
            "replicas": integer("Worker pods that exist.", format="int32", minimum=0),
            "readyReplicas": integer("Worker pods that are ready.", format="int32", minimum=0),
            "selector": string("Label selector of the pods (for the scale subresource)."),
            "deploymentName": string("The Deployment the operator manages."),
            "tokenSecretName": string("The Secret holding the workers' API token."),
            "tokenId": string("Engine id of that token (revoked when the pool is deleted)."),
            "desiredReplicas": integer(
                "Replicas the autoscaler wants (spec.replicas without autoscaling).",
                format="int32",
                minimum=0,
            ),
            "queued": integer("Runnable queued tasks of the pool's workflows.", minimum=0),
            "running": integer("Running tasks of the pool's workflows.", minimum=0),
            "busyWorkers": integer("The pool's workers running a task.", minimum=0),
            "lastScaleTime": string(
                "When the autoscaler last changed replicas.", format="date-time"
            ),
            "lastScaleReason": string("Why (a CamelCase reason and the numbers it saw)."),
            "lastDecision": string(
                "The autoscaler's latest decision or why it holds (e.g. EngineUnavailable)."
            ),
        },
    )


def ready_columns() -> list[Schema]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
    ]


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

KINDS: list[dict[str, Any]] = [
    {
        "kind": "Workflow",
        "plural": "workflows",
        "short": "hwf",
        "description": "A Hewer (Hatchet) workflow: a DAG of tasks, registered with the engine.",
        "spec": workflow_spec,
        "status": workflow_status,
        "columns": [
            {"name": "Workflow", "type": "string", "jsonPath": ".spec.name"},
            *ready_columns(),
            AGE,
        ],
    },
    {
        "kind": "CronTrigger",
        "plural": "crontriggers",
        "short": "hcron",
        "description": "A cron schedule that runs a workflow.",
        "spec": crontrigger_spec,
        "status": crontrigger_status,
        "columns": [
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            *ready_columns(),
            {"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Next", "type": "date", "jsonPath": ".status.nextScheduleTime"},
            AGE,
        ],
    },
    {
        "kind": "RateLimit",
        "plural": "ratelimits",
        "short": "hrl",
        "description": "A named rate limit in the engine.",
        "spec": ratelimit_spec,
        "status": ratelimit_status,
        "columns": [
            {"name": "Key", "type": "string", "jsonPath": ".spec.key"},
            {"name": "Limit", "type": "integer", "jsonPath": ".spec.limit"},
            {"name": "Duration", "type": "string", "jsonPath": ".spec.duration"},
            *ready_columns(),
            AGE,
        ],
    },
    {
        "kind": "WorkerPool",
        "plural": "workerpools",
        "short": "hwp",
        "description": "A Deployment of workers for the engine.",
        "spec": workerpool_spec,
        "status": workerpool_status,
        "columns": [
            {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
            {"name": "Current", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Ready-Pods", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Queued", "type": "integer", "jsonPath": ".status.queued"},
            {"name": "Image", "type": "string", "jsonPath": ".spec.template.image"},
            *ready_columns(),
            AGE,
        ],
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    },
]


def crd(kind: dict[str, Any]) -> Schema:
    subresources: Schema = {"status": {}}
    if "scale" in kind:
        subresources["scale"] = kind["scale"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind['plural']}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "hewer"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind["kind"],
                "listKind": f"{kind['kind']}List",
                "plural": kind["plural"],
                "singular": kind["kind"].lower(),
                "shortNames": [kind["short"]],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": kind["columns"],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind["description"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": kind["spec"](),
                                "status": kind["status"](),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by scripts/gen_crds.py: edit that file and re-run it, do not edit this one.\n"


def render(kind: dict[str, Any]) -> str:
    body = yaml.safe_dump(crd(kind), sort_keys=False, width=4096, allow_unicode=True)
    return HEADER + "---\n" + body


def files() -> dict[Path, str]:
    return {CRD_DIR / f"{GROUP}_{k['plural']}.yaml": render(k) for k in KINDS}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in files().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(path.relative_to(REPO))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        names = ", ".join(map(str, stale))
        print(f"out of date: {names} (run python scripts/gen_crds.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
