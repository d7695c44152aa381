"""RateLimit handlers: keep the engine's limit of the key equal to the spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hewer.operator.cron_specs import rate_limit_request
from hewer.operator.engine_client import EngineRejected
from hewer.operator.handler_common import Outcome, State, resource_of


def _registered(row: Mapping[str, Any] | None) -> tuple[int | None, str | None]:
    if not row:
        return None, None
    limit = row.get("limit", row.get("limitValue"))
    duration = row.get("duration") or row.get("window")
    return (None if limit is None else int(limit)), (None if duration is None else str(duration))


async def reconcile_rate_limit(
    state: State, body: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> Outcome:
    key, limit, duration = rate_limit_request(spec)
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
        await state.engine.record_owned(
            kind="rate_limit", object_id=key, resource=resource_of(body)
        )
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
