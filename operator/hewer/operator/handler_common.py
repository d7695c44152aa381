"""What the kopf handlers of every kind share: the memo's state, the outcome of a
reconcile, and the wrapper that turns it into status, Events and retries.

Each kind (``workflow_handlers``, ``cron_handlers``, ``ratelimit_handlers``,
``pool_handlers``) has one level-based ``reconcile_*`` coroutine (spec -> engine state), run
on create, update and resume and by a resync timer, and one cleanup run on delete (kopf
holds a finalizer until it succeeds); ``registry`` wires them. The wrapper here turns the
result into status (Ready and other conditions, ``observedGeneration``), Kubernetes Events
and retries: while the engine is unreachable the status says so (Ready=False, reason
EngineUnavailable) and the change handlers retry with exponential backoff; the timer simply
tries again at the next resync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import kopf

from hewer.operator.config import OperatorConfig
from hewer.operator.engine_client import (
    EngineClient,
    EngineRejected,
    EngineUnavailable,
)
from hewer.operator.kube import Kube, KubeError
from hewer.operator.spec_common import InvalidSpec, get_condition, resource_id, set_condition

__all__ = ["Outcome", "Reconciler", "State", "resource_of", "run_cleanup", "run_reconcile"]


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


Reconciler = Callable[
    [State, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Awaitable[Outcome]
]


def resource_of(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return resource_id(meta["namespace"], meta["name"])


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
    before = get_condition(previous, "Ready")
    conditions = set_condition(
        previous,
        type_="Ready",
        status=outcome.ready,
        reason=outcome.reason,
        message=outcome.message,
        generation=generation,
        now=now,
    )
    for type_, value, reason, message in outcome.conditions:
        conditions = set_condition(
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


async def run_reconcile(
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


async def run_cleanup(
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
