"""Pushed events: stored, then the workflows whose event triggers match the key run.

Trigger rules (Hatchet's): a workflow whose latest version has an event trigger matching
the key (exact, or with ``*`` wildcards) and

1. no event filters at all: runs once;
2. filters, but the event has no scope or no filter has the event's scope: does not run;
3. otherwise: runs once per filter of that scope whose CEL expression holds over ``input``
   (the payload), ``additional_metadata``, ``payload`` (the filter's), ``event_id`` and
   ``event_key``; the task sees that filter's payload as ``ctx.filter_payload``. A filter
   whose expression fails to evaluate does not match.

A run whose idempotency key is held is not created and the event still succeeds (as in
Hatchet); the event lists only the runs it created. A key that cannot be derived from the
event (the expression fails, or yields no string) refuses the push with that reason, where
Hatchet drops the run silently: the event is stored, and none of its runs are created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hewer.engine.core.cel import CelError, evaluate_bool, filter_variables
from hewer.engine.core.ids import new_event_id
from hewer.engine.db.repository import Record, Repository

if TYPE_CHECKING:
    from hewer.engine.services.matches import Matches
from hewer.engine.services.triggers import (
    IdempotencyCollision,
    TriggerError,
    TriggerRequest,
    Triggers,
)

MAX_BULK_EVENTS = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewEvent:
    key: str
    payload: dict[str, Any]
    additional_metadata: dict[str, Any]
    priority: int | None = None
    scope: str | None = None
    # the incoming webhook the event came through
    webhook_name: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    key: str
    payload: dict[str, Any]
    additional_metadata: dict[str, Any]
    created_at: datetime
    run_ids: tuple[str, ...]
    scope: str | None = None
    webhook_name: str | None = None


class Events:
    def __init__(self, *, repo: Repository, triggers: Triggers) -> None:
        self._repo = repo
        self._triggers = triggers
        # waiting DAG tasks' user-event conditions (services/matches.py); set by the server
        self.matches: Matches | None = None

    async def push(self, *, tenant_id: str, events: list[NewEvent]) -> list[StoredEvent]:
        if not events:
            raise TriggerError("no events to push")
        if len(events) > MAX_BULK_EVENTS:
            raise TriggerError(f"at most {MAX_BULK_EVENTS} events per call, got {len(events)}")
        for event in events:
            if not event.key:
                raise TriggerError("event key is required")
            if event.priority is not None and not 1 <= event.priority <= 3:
                raise TriggerError(f"priority must be between 1 and 3, got {event.priority}")
        return [await self._push_one(tenant_id=tenant_id, event=e) for e in events]

    async def _push_one(self, *, tenant_id: str, event: NewEvent) -> StoredEvent:
        event_id = new_event_id()
        created_at = await self._repo.store_event(
            event_id=event_id,
            tenant_id=tenant_id,
            key=event.key,
            payload=event.payload,
            metadata=event.additional_metadata,
            priority=event.priority,
            scope=event.scope,
            webhook_name=event.webhook_name,
        )
        if self.matches is not None:
            await self.matches.on_event(
                tenant_id=tenant_id, key=event.key, payload=event.payload, scope=event.scope
            )
        matches = await self._repo.workflows_for_event_key(tenant_id, event.key)
        filters = await self._repo.filters_for_workflows(
            tenant_id, [str(m["workflow_id"]) for m in matches]
        )
        inherited = {
            k: v for k, v in event.additional_metadata.items() if not k.startswith("hatchet__")
        }
        metadata = {**inherited, "hatchet__event_id": event_id, "hatchet__event_key": event.key}
        run_ids: list[str] = []
        names = await self._repo.workflow_names([str(m["workflow_id"]) for m in matches])
        requests = [
            TriggerRequest(
                workflow_name=names[str(m["workflow_id"])],
                input=event.payload,
                additional_metadata=metadata,
                priority=event.priority,
                event_id=event_id,
                event_key=event.key,
                filter_payload=filter_payload,
            )
            for m in matches
            if str(m["workflow_id"]) in names
            for filter_payload in _runs_for(event, event_id, filters.get(str(m["workflow_id"]), []))
        ]
        if requests:
            try:
                run_ids = await self._triggers.trigger(tenant_id=tenant_id, requests=requests)
            except IdempotencyCollision as exc:
                run_ids = exc.created
                log.info(
                    "event %s (%r): %d run(s) not created, their idempotency keys are held: %s",
                    event_id,
                    event.key,
                    len(exc.collisions),
                    ", ".join(f"{c.key!r} by {c.existing_run_id}" for c in exc.collisions),
                )
        return StoredEvent(
            id=event_id,
            key=event.key,
            payload=event.payload,
            additional_metadata=event.additional_metadata,
            created_at=created_at,
            run_ids=tuple(run_ids),
            scope=event.scope,
            webhook_name=event.webhook_name,
        )


def _runs_for(event: NewEvent, event_id: str, filters: list[Record]) -> list[dict[str, Any] | None]:
    """One entry per run the event starts for a workflow: the filter payload, or None."""
    if not filters:
        return [None]
    if not event.scope:
        return []
    runs: list[dict[str, Any] | None] = []
    for f in filters:
        if f["scope"] != event.scope:
            continue
        payload = dict(f["payload"] or {})
        variables = filter_variables(
            input=event.payload,
            additional_metadata=event.additional_metadata,
            payload=payload,
            event_id=event_id,
            event_key=event.key,
        )
        try:
            matched = evaluate_bool(f["expression"], variables)
        except CelError as exc:
            log.debug("event filter %s did not evaluate: %s", f["id"], exc)
            continue
        if matched:
            runs.append(payload)
    return runs
