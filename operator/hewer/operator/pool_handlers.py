"""WorkerPool handlers: mint the pool's engine token into a Secret and keep its
Deployment as the spec says; readiness comes from the Deployment."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hewer.operator import pool_specs
from hewer.operator.engine_client import EngineError
from hewer.operator.handler_common import Outcome, State, resource_of
from hewer.operator.kube import Kube, KubeError
from hewer.operator.pool_autoscaler import initial_replicas

log = logging.getLogger(__name__)

TOKEN_DAYS = 365


def _kube(state: State) -> Kube:
    if state.kube is None:
        raise KubeError(0, "the Kubernetes client is not configured")
    return state.kube


async def _ensure_token_secret(
    state: State, body: Mapping[str, Any], events: list[tuple[str, str, str]]
) -> str:
    """The token Secret's token id; a new token is minted when the Secret is missing or its
    token is no longer the pool's (revoked in the engine)."""
    kube, meta = _kube(state), body["metadata"]
    resource = resource_of(body)
    name = pool_specs.token_secret_name(meta["name"])
    secret = await kube.get_secret(meta["namespace"], name)
    token_id = None
    if secret is not None:
        token_id = ((secret.get("metadata") or {}).get("annotations") or {}).get(
            pool_specs.TOKEN_ID_ANNOTATION
        )
        owned = await state.engine.owned(resource)
        if token_id and any(
            o.get("kind") == "token" and o.get("objectId") == token_id for o in owned
        ):
            return str(token_id)
    minted = await state.engine.create_token(
        name=f"workerpool {resource}", expires_in_days=TOKEN_DAYS, resource=resource
    )
    manifest = pool_specs.token_secret(body, token=minted["token"], token_id=minted["tokenId"])
    try:
        if secret is None:
            await kube.create_secret(manifest)
        else:
            manifest["metadata"]["resourceVersion"] = secret["metadata"].get("resourceVersion")
            await kube.replace_secret(manifest)
    except KubeError:
        await state.engine.revoke_token(minted["tokenId"])  # nothing half-created
        raise
    if token_id:
        await state.engine.revoke_token(str(token_id))
    events.append(("Normal", "TokenMinted", f"worker token stored in Secret {name}"))
    return str(minted["tokenId"])


async def reconcile_pool(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Outcome:
    meta = body["metadata"]
    pool = pool_specs.pool_spec(spec)
    engine = pool_specs.endpoints(
        spec,
        pool_specs.EngineEndpoints(
            grpc_address=state.config.grpc_address, server_url=state.config.public_url
        ),
    )
    events: list[tuple[str, str, str]] = []
    token_id = await _ensure_token_secret(state, body, events)
    secret_name = pool_specs.token_secret_name(meta["name"])
    kube = _kube(state)
    name = pool_specs.deployment_name(meta["name"])
    live = await kube.get_deployment(meta["namespace"], name)
    autoscaled = pool["autoscaling"] is not None
    replicas: int | None = None
    if autoscaled:
        # the autoscaler owns replicas: a new pool starts at the computed count (no Pod
        # starts only to be removed), an existing one keeps what the autoscaler set
        replicas = (
            int((live.get("spec") or {}).get("replicas") or 0)
            if live is not None
            else await initial_replicas(state, meta["name"], pool)
        )
        seen = status.get("specReplicasSeen")
        if seen is not None and seen != pool["replicas"]:
            events.append(
                (
                    "Warning",
                    "ScaleIgnored",
                    f"spec.replicas={pool['replicas']} is not used: spec.autoscaling owns "
                    "the replicas (remove spec.autoscaling to scale by hand)",
                )
            )
    desired = pool_specs.deployment(body, engine=engine, secret_name=secret_name, replicas=replicas)
    if live is None:
        live = await kube.create_deployment(desired)
        events.append(("Normal", "Created", f"Deployment {name} created"))
    elif pool_specs.deployment_needs_update(live, desired, autoscaled=autoscaled):
        updated = dict(live)
        updated["spec"] = desired["spec"]
        updated["metadata"] = {
            **live["metadata"],
            "labels": {**(live["metadata"].get("labels") or {}), **desired["metadata"]["labels"]},
            "annotations": {
                **(live["metadata"].get("annotations") or {}),
                **desired["metadata"]["annotations"],
            },
            "ownerReferences": desired["metadata"]["ownerReferences"],
        }
        live = await kube.replace_deployment(updated)
        events.append(("Normal", "Updated", f"Deployment {name} updated"))
    live_status = (live or {}).get("status") or {}
    target = int(desired["spec"]["replicas"])
    ready, reason, message = pool_specs.pool_readiness(live_status, target)
    pool_status: dict[str, Any] = {
        "replicas": int(live_status.get("replicas") or 0),
        "readyReplicas": int(live_status.get("readyReplicas") or 0),
        "selector": pool_specs.pool_selector(meta["name"]),
        "deploymentName": name,
        "tokenSecretName": secret_name,
        "tokenId": token_id,
        "specReplicasSeen": pool["replicas"],
    }
    if not autoscaled:  # an autoscaled pool's desiredReplicas is the autoscaler's to write
        pool_status["desiredReplicas"] = pool["replicas"]
        await _tell_engine(state, meta, pool, pool_status)
    return Outcome(ready, reason, message, status=pool_status, events=events)


async def _tell_engine(
    state: State, meta: Mapping[str, Any], pool: Mapping[str, Any], status: Mapping[str, Any]
) -> None:
    """A pool scaled by hand, for the engine's dashboard (the autoscaler reports its own)."""
    try:
        await state.engine.report_pool(
            meta["name"],
            report={
                "namespace": meta["namespace"],
                "workflows": list(pool["workflows"]),
                "autoscaling": False,
                "desiredReplicas": int(pool["replicas"]),
                "replicas": int(status["replicas"]),
                "readyReplicas": int(status["readyReplicas"]),
                "reason": "spec.replicas",
            },
        )
    except EngineError as exc:
        log.debug("cannot report %s/%s to the engine: %s", meta["namespace"], meta["name"], exc)


async def delete_pool(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> str:
    token_id = status.get("tokenId")
    if token_id:
        await state.engine.revoke_token(str(token_id))
    meta = body["metadata"]
    await state.engine.forget_pool_report(meta["name"], namespace=meta["namespace"])
    # the Deployment and the Secret are owned by the pool: garbage collection removes them
    return "worker token revoked" if token_id else "no worker token was minted"
