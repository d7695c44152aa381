"""kopf handlers: thin glue between the resources, the pure translations and the engine.

Each kind has one level-based ``reconcile_*`` coroutine (spec -> engine state), run on
create, update and resume and by a resync timer, and one cleanup run on delete (kopf holds
a finalizer until it succeeds). A shared wrapper turns the result into status (Ready and
other conditions, ``observedGeneration``), Kubernetes Events and retries: while the engine is
unreachable the status says so (Ready=False, reason EngineUnavailable) and the change
handlers retry with exponential backoff; the timer simply tries again at the next resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf

from hewer.operator import specs
from hewer.operator.config import OperatorConfig
from hewer.operator.engine_client import (
    EngineClient,
    EngineRejected,
    EngineUnavailable,
)
from hewer.operator.kube import Kube, KubeError
from hewer.operator.specs import GROUP, VERSION, InvalidSpec

__all__ = ["Outcome", "State", "build_registry"]

log = logging.getLogger(__name__)

FINALIZER = "hewer.dev/finalizer"
TOKEN_DAYS = 365
# a pool's readiness comes from its Deployment: look at it at least this often
POOL_STATUS_SECONDS = 10.0


@dataclass
class State:
    """What every handler needs; shared by all resources (kopf copies the memo shallowly)."""

    config: OperatorConfig
    engine: EngineClient
    kube: Kube | None = None


@dataclass
class Outcome:
    ready: bool
    reason: str
    message: str
    status: dict[str, Any] = field(default_factory=dict)
    # extra conditions: (type, status, reason, message)
    conditions: list[tuple[str, bool | None, str, str]] = field(default_factory=list)
    # (type "Normal"/"Warning", reason, message)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    retry: bool = False


Reconciler = Callable[[State, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Awaitable[
    Outcome
]]


def _resource(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return specs.resource_id(meta["namespace"], meta["name"])


def _event(body: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message[:1000])


def _failure(exc: Exception, config: OperatorConfig) -> Outcome:
    if isinstance(exc, InvalidSpec):
        return Outcome(False, exc.reason, exc.message)
    if isinstance(exc, EngineUnavailable):
        return Outcome(False, "EngineUnavailable", str(exc), retry=True)
    if isinstance(exc, EngineRejected):
        return Outcome(False, "EngineRejected", f"the engine refused: {exc.message}")
    if isinstance(exc, KubeError):
        return Outcome(False, "KubernetesError", exc.message, retry=exc.retriable)
    raise exc


def _apply(
    outcome: Outcome,
    *,
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: Any,
    now: datetime | None = None,
) -> None:
    generation = body["metadata"].get("generation")
    previous = status.get("conditions") or []
    before = specs.get_condition(previous, "Ready")
    conditions = specs.set_condition(
        previous,
        type_="Ready",
        status=outcome.ready,
        reason=outcome.reason,
        message=outcome.message,
        generation=generation,
        now=now,
    )
    for type_, value, reason, message in outcome.conditions:
        conditions = specs.set_condition(
            conditions,
            type_=type_,
            status=value,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
    for key, value in outcome.status.items():
        if value is not None or key in status:
            patch.status[key] = value
    patch.status["conditions"] = conditions
    patch.status["observedGeneration"] = generation
    for type_, reason, message in outcome.events:
        _event(body, type_=type_, reason=reason, message=message)
    changed = (
        before is None
        or before.get("status") != ("True" if outcome.ready else "False")
        or before.get("reason") != outcome.reason
        or (not outcome.ready and before.get("message") != outcome.message)
    )
    if changed and not outcome.ready:
        _event(body, type_="Warning", reason=outcome.reason, message=outcome.message)
    elif changed and before is not None and before.get("status") != "True":
        _event(body, type_="Normal", reason=outcome.reason, message=outcome.message)


def _lock(memo: Any) -> asyncio.Lock:
    lock = memo.get("lock")
    if lock is None:
        lock = asyncio.Lock()
        memo["lock"] = lock
    return lock  # type: ignore[no-any-return]


async def _reconcile(
    fn: Reconciler,
    *,
    body: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: Any,
    memo: Any,
    retry: int,
    from_timer: bool,
) -> None:
    state: State = memo["state"]
    async with _lock(memo):
        try:
            outcome = await fn(state, body, spec, status)
        except (InvalidSpec, EngineUnavailable, EngineRejected, KubeError) as exc:
            outcome = _failure(exc, state.config)
        _apply(outcome, body=body, status=status, patch=patch)
    if outcome.retry and not from_timer:
        delay = state.config.backoff(retry)
        raise kopf.TemporaryError(f"{outcome.reason}: {outcome.message}", delay=delay)


async def _cleanup(
    fn: Callable[[State, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Awaitable[str]],
    *,
    body: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: Any,
    memo: Any,
    retry: int,
) -> None:
    state: State = memo["state"]
    async with _lock(memo):
        try:
            message = await fn(state, body, spec, status)
        except (EngineUnavailable, KubeError) as exc:
            outcome = _failure(exc, state.config)
            outcome.reason = f"Delete{outcome.reason}"
            outcome.message = f"cannot clean up yet: {outcome.message}"
            _apply(outcome, body=body, status=status, patch=patch)
            raise kopf.TemporaryError(outcome.message, delay=state.config.backoff(retry)) from None
        except EngineRejected as exc:  # nothing more we can do: let the resource go
            _event(
                body, type_="Warning", reason="DeleteRejected", message=f"the engine refused: {exc}"
            )
            return
    _event(body, type_="Normal", reason="Deleted", message=message)


# -- Workflow -----------------------------------------------------------------------------


async def reconcile_workflow(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Outcome:
    meta = body["metadata"]
    name = specs.workflow_engine_name(spec, meta["name"])
    registration = specs.workflow_registration(name, spec)
    resource = _resource(body)
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
    return Outcome(
        True,
        "Registered",
        f"workflow {name!r} is registered (version {version_id})",
        status={
            "workflowName": name,
            "workflowId": result.get("workflowId"),
            "versionId": version_id,
            "drift": drift,
        },
        conditions=[drift_condition],
        events=events,
    )


async def delete_workflow(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> str:
    try:
        name = status.get("workflowName") or specs.workflow_engine_name(
            spec, body["metadata"]["name"]
        )
    except InvalidSpec:
        return "nothing was registered"
    found = await state.engine.delete_declared_workflow(name, resource=_resource(body))
    return f"workflow {name!r} removed from the engine" if found else "nothing was registered"


# -- CronTrigger ---------------------------------------------------------------------------


def _cron_id(row: Mapping[str, Any]) -> str:
    return str((row.get("metadata") or {}).get("id") or row.get("id") or "")


async def _drop_cron(state: State, cron_id: str) -> None:
    await state.engine.delete_cron(cron_id)
    await state.engine.forget_owned(kind="cron", object_id=cron_id)


async def reconcile_cron(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Outcome:
    meta = body["metadata"]
    desired = specs.cron_request(spec, namespace=meta["namespace"], name=meta["name"])
    workflow_name = specs.cron_workflow_name(spec)
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
    keep = next((c for c in mine if specs.cron_matches(c, desired)), None)
    for cron in mine:
        if cron is not keep:
            await _drop_cron(state, _cron_id(cron))
    if old_id and old_id not in {_cron_id(c) for c in mine}:
        await _drop_cron(state, old_id)  # e.g. under the previously referenced workflow
    if keep is None:
        created = await state.engine.create_cron(workflow_name, desired)
        cron_id = _cron_id(created)
        await state.engine.record_owned(kind="cron", object_id=cron_id, resource=_resource(body))
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
            metadata=(specs.CRON_METADATA_KEY, desired["cronName"]),
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
            "nextScheduleTime": specs.next_schedule_time(desired["cronExpression"]),
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


# -- RateLimit -----------------------------------------------------------------------------


def _registered(row: Mapping[str, Any] | None) -> tuple[int | None, str | None]:
    if not row:
        return None, None
    limit = row.get("limit", row.get("limitValue"))
    duration = row.get("duration") or row.get("window")
    return (None if limit is None else int(limit)), (None if duration is None else str(duration))


async def reconcile_rate_limit(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Outcome:
    key, limit, duration = specs.rate_limit_request(spec)
    events: list[tuple[str, str, str]] = []
    old_key = status.get("key")
    if old_key and old_key != key:
        await state.engine.delete_rate_limit(old_key)
        await state.engine.forget_owned(kind="rate_limit", object_id=old_key)
        events.append(("Normal", "Renamed", f"rate limit {old_key!r} removed from the engine"))
    try:
        current = await state.engine.get_rate_limit(key)
    except EngineRejected:
        current = None
    registered = _registered(current)
    if registered != (limit, duration):
        result = await state.engine.put_rate_limit(key, limit=limit, duration=duration)
        await state.engine.record_owned(kind="rate_limit", object_id=key, resource=_resource(body))
        registered = _registered(result)
        if registered == (None, None):
            registered = (limit, duration)
        if current is None and status.get("registeredLimit") is None:
            events.append(("Normal", "Created", f"rate limit {key!r}: {limit} per {duration}"))
        elif body["metadata"].get("generation") != status.get("observedGeneration"):
            events.append(("Normal", "Updated", f"rate limit {key!r}: {limit} per {duration}"))
        else:
            events.append(("Normal", "Repaired", f"rate limit {key!r} was changed in the engine"))
    return Outcome(
        True,
        "Registered",
        f"rate limit {key!r} is {registered[0]} per {registered[1]}",
        status={
            "key": key,
            "registeredLimit": registered[0],
            "registeredDuration": registered[1],
        },
        events=events,
    )


async def delete_rate_limit(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> str:
    key = status.get("key") or spec.get("key")
    if not key:
        return "no rate limit was registered"
    await state.engine.delete_rate_limit(str(key))
    await state.engine.forget_owned(kind="rate_limit", object_id=str(key))
    return f"rate limit {key!r} removed from the engine"


# -- WorkerPool ----------------------------------------------------------------------------


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
    resource = _resource(body)
    name = specs.token_secret_name(meta["name"])
    secret = await kube.get_secret(meta["namespace"], name)
    token_id = None
    if secret is not None:
        token_id = ((secret.get("metadata") or {}).get("annotations") or {}).get(
            specs.TOKEN_ID_ANNOTATION
        )
        owned = await state.engine.owned(resource)
        if token_id and any(
            o.get("kind") == "token" and o.get("objectId") == token_id for o in owned
        ):
            return str(token_id)
    minted = await state.engine.create_token(
        name=f"workerpool {resource}", expires_in_days=TOKEN_DAYS, resource=resource
    )
    manifest = specs.token_secret(body, token=minted["token"], token_id=minted["tokenId"])
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
    pool = specs.pool_spec(spec)
    engine = specs.endpoints(
        spec,
        specs.EngineEndpoints(
            grpc_address=state.config.grpc_address, server_url=state.config.public_url
        ),
    )
    events: list[tuple[str, str, str]] = []
    token_id = await _ensure_token_secret(state, body, events)
    secret_name = specs.token_secret_name(meta["name"])
    desired = specs.deployment(body, engine=engine, secret_name=secret_name)
    kube = _kube(state)
    live = await kube.get_deployment(meta["namespace"], desired["metadata"]["name"])
    if live is None:
        live = await kube.create_deployment(desired)
        events.append(("Normal", "Created", f"Deployment {desired['metadata']['name']} created"))
    elif specs.deployment_needs_update(live, desired):
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
        events.append(("Normal", "Updated", f"Deployment {desired['metadata']['name']} updated"))
    live_status = (live or {}).get("status") or {}
    ready, reason, message = specs.pool_readiness(live_status, pool["replicas"])
    return Outcome(
        ready,
        reason,
        message,
        status={
            "replicas": int(live_status.get("replicas") or 0),
            "readyReplicas": int(live_status.get("readyReplicas") or 0),
            "selector": specs.pool_selector(meta["name"]),
            "deploymentName": desired["metadata"]["name"],
            "tokenSecretName": secret_name,
            "tokenId": token_id,
        },
        events=events,
    )


async def delete_pool(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> str:
    token_id = status.get("tokenId")
    if token_id:
        await state.engine.revoke_token(str(token_id))
    # the Deployment and the Secret are owned by the pool: garbage collection removes them
    return "worker token revoked" if token_id else "no worker token was minted"


# -- registry ------------------------------------------------------------------------------

_KINDS: dict[str, tuple[Reconciler, Any]] = {
    "workflows": (reconcile_workflow, delete_workflow),
    "crontriggers": (reconcile_cron, delete_cron),
    "ratelimits": (reconcile_rate_limit, delete_rate_limit),
    "workerpools": (reconcile_pool, delete_pool),
}


def build_registry(config: OperatorConfig) -> Any:
    """A kopf registry with every handler; intervals come from ``config``."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        # the kubernetes library captures $KUBECONFIG at import; read it at call time
        import os

        if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: Any, **_: Any) -> None:
        settings.peering.standalone = True
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 60
        settings.watching.client_timeout = 90

    @kopf.on.cleanup(registry=registry)
    async def close(memo: Any, **_: Any) -> None:
        state: State = memo["state"]
        await state.engine.close()

    for plural, (reconcile, cleanup) in _KINDS.items():
        interval = config.resync_seconds
        if plural == "workerpools":
            interval = min(interval, POOL_STATUS_SECONDS)
        _register_kind(registry, plural, reconcile, cleanup, interval)
    return registry


def _register_kind(
    registry: Any, plural: str, reconcile: Reconciler, cleanup: Any, interval: float
) -> None:
    async def on_change(
        body: Any, spec: Any, status: Any, patch: Any, memo: Any, retry: int, **_: Any
    ) -> None:
        await _reconcile(
            reconcile,
            body=body,
            spec=spec,
            status=status,
            patch=patch,
            memo=memo,
            retry=retry,
            from_timer=False,
        )

    async def on_timer(body: Any, spec: Any, status: Any, patch: Any, memo: Any, **_: Any) -> None:
        await _reconcile(
            reconcile,
            body=body,
            spec=spec,
            status=status,
            patch=patch,
            memo=memo,
            retry=0,
            from_timer=True,
        )

    async def on_delete(
        body: Any, spec: Any, status: Any, patch: Any, memo: Any, retry: int, **_: Any
    ) -> None:
        await _cleanup(
            cleanup, body=body, spec=spec, status=status, patch=patch, memo=memo, retry=retry
        )

    kind = (GROUP, VERSION, plural)
    kopf.on.create(*kind, registry=registry, id="create")(on_change)
    kopf.on.update(*kind, registry=registry, id="update")(on_change)
    kopf.on.resume(*kind, registry=registry, id="resume")(on_change)
    kopf.timer(
        *kind, registry=registry, id="resync", interval=interval, initial_delay=interval
    )(on_timer)
    kopf.on.delete(*kind, registry=registry, id="cleanup")(on_delete)
