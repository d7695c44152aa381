"""WorkerPool resources -> the Kubernetes objects that run its workers: a Deployment and
the Secret holding the pool's engine token, both owned by the pool.

Pure (no I/O); invalid input raises :class:`InvalidSpec` naming the offending field. The
Deployment carries a hash of its spec so an unchanged pool is never rewritten.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hewer.operator.autoscale import autoscaling_spec
from hewer.operator.spec_common import API_VERSION, InvalidSpec, check_int, check_str_list

POOL_LABEL = "hewer.dev/worker-pool"
# the worker label naming a worker's Pod (the autoscaler drains exactly that Pod)
POD_LABEL = "hewer.dev/pod"
PRESET_LABELS_ENV = "HATCHET_CLIENT_WORKER_PRESET_LABELS"
POD_NAME_ENV = "HEWER_POD_NAME"
TOKEN_ID_ANNOTATION = "hewer.dev/token-id"
SPEC_HASH_ANNOTATION = "hewer.dev/spec-hash"
MANAGED_BY = "hewer-operator"
_MANAGED_ENV = (
    "HATCHET_CLIENT_TOKEN",
    "HATCHET_CLIENT_HOST_PORT",
    "HATCHET_CLIENT_SERVER_URL",
    "HATCHET_CLIENT_TLS_STRATEGY",
    "HATCHET_CLIENT_NAMESPACE",
    "HEWER_WORKER_POOL",
    "HEWER_WORKER_SLOTS",
    "HEWER_WORKER_DURABLE_SLOTS",
    "HEWER_WORKER_WORKFLOWS",
    POD_NAME_ENV,
    PRESET_LABELS_ENV,
)


@dataclass(frozen=True, slots=True)
class EngineEndpoints:
    """Where worker pods reach the engine (the operator's defaults, or spec.engineRef)."""

    grpc_address: str
    server_url: str


def deployment_name(pool: str) -> str:
    return pool


def token_secret_name(pool: str) -> str:
    return f"{pool}-hewer-token"


def pool_labels(pool: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "hewer-worker",
        "app.kubernetes.io/instance": pool,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        POOL_LABEL: pool,
    }


def pool_selector(pool: str) -> str:
    return f"{POOL_LABEL}={pool}"


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", "WorkerPool"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def token_secret(body: Mapping[str, Any], *, token: str, token_id: str) -> dict[str, Any]:
    meta = body["metadata"]
    pool = meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": token_secret_name(pool),
            "namespace": meta["namespace"],
            "labels": pool_labels(pool),
            "annotations": {TOKEN_ID_ANNOTATION: token_id},
            "ownerReferences": [owner_reference(body)],
        },
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


def _env_value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def pool_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The WorkerPool spec with defaults, validated."""
    template = spec.get("template")
    if not isinstance(template, Mapping) or not str(template.get("image") or "").strip():
        raise InvalidSpec("InvalidSpec", "spec.template.image is required")
    out: dict[str, Any] = {
        "template": dict(template),
        "workflows": check_str_list(spec.get("workflows"), "spec.workflows"),
        "slots": check_int(spec.get("slots", 100), "spec.slots", minimum=1),
        "durableSlots": check_int(spec.get("durableSlots", 1000), "spec.durableSlots", minimum=0),
        "replicas": check_int(spec.get("replicas", 1), "spec.replicas", minimum=0),
    }
    out["autoscaling"] = autoscaling_spec(spec.get("autoscaling"), slots=out["slots"])
    if out["autoscaling"] is not None and not out["workflows"]:
        raise InvalidSpec(
            "ServesNothing",
            "spec.autoscaling needs spec.workflows: a pool that names no workflow has no "
            "queue to scale on",
        )
    for key in ("command", "args"):
        if template.get(key) is not None:
            check_str_list(template[key], f"spec.template.{key}")
    env = template.get("env") or []
    if not isinstance(env, list) or not all(isinstance(e, Mapping) and e.get("name") for e in env):
        raise InvalidSpec("InvalidSpec", "spec.template.env: expected a list of {name, ...}")
    return out


def endpoints(spec: Mapping[str, Any], default: EngineEndpoints) -> EngineEndpoints:
    ref = spec.get("engineRef") or {}
    if not isinstance(ref, Mapping):
        raise InvalidSpec("InvalidSpec", "spec.engineRef must be an object")
    return EngineEndpoints(
        grpc_address=str(ref.get("grpcAddress") or default.grpc_address),
        server_url=str(ref.get("serverUrl") or default.server_url),
    )


def worker_labels_env(pool: str, user_env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The SDK's preset worker labels: the pool and the worker's own Pod (from the downward
    API, expanded by the kubelet), merged over labels the template sets itself."""
    labels: dict[str, Any] = {}
    for e in user_env:
        if e["name"] == PRESET_LABELS_ENV and isinstance(e.get("value"), str):
            try:
                given = json.loads(e["value"])
            except ValueError:
                raise InvalidSpec(
                    "InvalidSpec",
                    f"spec.template.env {PRESET_LABELS_ENV}: expected a JSON object",
                ) from None
            if not isinstance(given, dict):
                raise InvalidSpec(
                    "InvalidSpec", f"spec.template.env {PRESET_LABELS_ENV}: expected an object"
                )
            labels.update(given)
    labels.update({POOL_LABEL: pool, POD_LABEL: f"$({POD_NAME_ENV})"})
    return [
        {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        _env_value(PRESET_LABELS_ENV, json.dumps(labels, sort_keys=True)),
    ]


def deployment(
    body: Mapping[str, Any],
    *,
    engine: EngineEndpoints,
    secret_name: str,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The Deployment of a WorkerPool's workers, owned by the pool; ``replicas`` overrides
    spec.replicas (the autoscaler's count)."""
    meta = body["metadata"]
    pool = meta["name"]
    spec = pool_spec(body.get("spec") or {})
    template = spec["template"]
    labels = pool_labels(pool)
    given_env = [copy.deepcopy(dict(e)) for e in template.get("env") or []]
    user_env = [e for e in given_env if e["name"] not in _MANAGED_ENV]
    env = [
        *user_env,
        {
            "name": "HATCHET_CLIENT_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "token"}},
        },
        _env_value("HATCHET_CLIENT_HOST_PORT", engine.grpc_address),
        _env_value("HATCHET_CLIENT_SERVER_URL", engine.server_url),
        _env_value("HATCHET_CLIENT_TLS_STRATEGY", "none"),
        _env_value("HATCHET_CLIENT_NAMESPACE", ""),
        _env_value("HEWER_WORKER_POOL", pool),
        _env_value("HEWER_WORKER_SLOTS", str(spec["slots"])),
        _env_value("HEWER_WORKER_DURABLE_SLOTS", str(spec["durableSlots"])),
        _env_value("HEWER_WORKER_WORKFLOWS", ",".join(spec["workflows"])),
        *worker_labels_env(pool, given_env),
    ]
    container: dict[str, Any] = {"name": "worker", "image": str(template["image"]), "env": env}
    for key in ("imagePullPolicy", "command", "args", "resources"):
        if template.get(key):
            container[key] = copy.deepcopy(template[key])
    pod_spec: dict[str, Any] = {"containers": [container]}
    for key in ("serviceAccountName", "nodeSelector", "tolerations"):
        if template.get(key):
            pod_spec[key] = copy.deepcopy(template[key])
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": {POOL_LABEL: pool}},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    # replicas stay out of the hash: the autoscaler changes them without a rewrite
    hashed = spec_hash(dep_spec)
    dep_spec = {"replicas": spec["replicas"] if replicas is None else replicas, **dep_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(pool),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {SPEC_HASH_ANNOTATION: hashed},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": dep_spec,
    }


def spec_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def deployment_needs_update(
    existing: Mapping[str, Any], desired: Mapping[str, Any], *, autoscaled: bool = False
) -> bool:
    """Whether the live Deployment differs from ours (our hash, or replicas changed; an
    autoscaled pool's replicas are the autoscaler's, not compared here)."""
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if (
        annotations.get(SPEC_HASH_ANNOTATION)
        != desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    ):
        return True
    if autoscaled:
        return False
    return bool((existing.get("spec") or {}).get("replicas") != desired["spec"]["replicas"])


def pool_readiness(
    deployment_status: Mapping[str, Any] | None, replicas: int
) -> tuple[bool, str, str]:
    """``(ready, reason, message)`` of a pool from its Deployment's status."""
    status = deployment_status or {}
    ready = int(status.get("readyReplicas") or 0)
    if replicas == 0:
        return True, "ScaledToZero", "the pool has 0 replicas"
    if ready >= replicas:
        return True, "Available", f"{ready}/{replicas} workers ready"
    return False, "Progressing", f"{ready}/{replicas} workers ready"
