"""Pushed events: stored, then every workflow whose event trigger matches the key runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hewer.engine.db.repository import Repository
from hewer.engine.services.triggers import TriggerError, TriggerRequest, Triggers

MAX_BULK_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class NewEvent:
    key: str
    payload: dict[str, Any]
    additional_metadata: dict[str, Any]
    priority: int | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    key: str
    payload: dict[str, Any]
    additional_metadata: dict[str, Any]
    created_at: datetime
    run_ids: tuple[str, ...]


class Events:
    def __init__(self, *, repo: Repository, triggers: Triggers) -> None:
        self._repo = repo
        self._triggers = triggers

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
        event_id = str(uuid.uuid4())
        created_at = await self._repo.insert_event(
            event_id=event_id,
            tenant_id=tenant_id,
            key=event.key,
            payload=event.payload,
            metadata=event.additional_metadata,
            priority=event.priority,
            scope=event.scope,
        )
        matches = await self._repo.workflows_for_event_key(tenant_id, event.key)
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
            )
            for m in matches
            if str(m["workflow_id"]) in names
        ]
        if requests:
            run_ids = await self._triggers.trigger(tenant_id=tenant_id, requests=requests)
        return StoredEvent(
            id=event_id,
            key=event.key,
            payload=event.payload,
            additional_metadata=event.additional_metadata,
            created_at=created_at,
            run_ids=tuple(run_ids),
        )
