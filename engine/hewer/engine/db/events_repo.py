"""Pushed events, event filters and incoming webhooks, mixed into :class:`Repository`.

Every statement (``sql/queries/events.sql``) filters on the tenant, so an id or a name from
another tenant reads as "not found".
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hewer.engine.db.base import Record, RepositoryBase
from hewer.engine.db.queries import query


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """A filter as declared in a workflow registration (``default_filters``)."""

    scope: str
    expression: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewWebhook:
    name: str
    source_name: str
    event_key_expression: str
    scope_expression: str | None
    static_payload: dict[str, Any] | None
    return_event: bool
    auth_type: str
    secret_encrypted: bytes
    basic_username: str | None = None
    api_key_header_name: str | None = None
    hmac_algorithm: str | None = None
    hmac_encoding: str | None = None
    hmac_signature_header: str | None = None


class EventQueries(RepositoryBase):
    # -- events ---------------------------------------------------------------------------

    async def store_event(
        self,
        *,
        event_id: str,
        tenant_id: str,
        key: str,
        payload: dict[str, Any],
        metadata: dict[str, Any],
        priority: int | None,
        scope: str | None,
        webhook_name: str | None,
    ) -> datetime:
        value = await self.pool.fetchval(
            query("insert_pushed_event"),
            tenant_id,
            event_id,
            key,
            payload,
            metadata,
            priority,
            scope,
            webhook_name,
        )
        assert isinstance(value, datetime)
        return value

    # -- filters --------------------------------------------------------------------------

    async def filters_for_workflows(
        self, tenant_id: str, workflow_ids: Sequence[str]
    ) -> dict[str, list[Record]]:
        """``{workflow_id: filters}``, oldest first; workflows without filters are absent."""
        if not workflow_ids:
            return {}
        rows = await self.pool.fetch(query("filters_for_workflows"), tenant_id, list(workflow_ids))
        found: dict[str, list[Record]] = {}
        for r in rows:
            found.setdefault(str(r["workflow_id"]), []).append(r)
        return found

    async def insert_filter(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        scope: str,
        expression: str,
        payload: dict[str, Any],
    ) -> Record | None:
        """The new filter; None if the tenant has no such workflow."""
        return await self.pool.fetchrow(
            query("insert_filter"),
            tenant_id,
            str(uuid.uuid4()),
            workflow_id,
            scope,
            expression,
            payload,
            False,
        )

    async def get_filter(self, tenant_id: str, filter_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_filter"), tenant_id, filter_id)

    async def page_filters(
        self,
        tenant_id: str,
        *,
        workflow_ids: Sequence[str] | None,
        scopes: Sequence[str] | None,
        offset: int,
        limit: int,
    ) -> tuple[int, list[Record]]:
        row = await self.pool.fetchrow(
            query("page_filters"),
            tenant_id,
            None if workflow_ids is None else list(workflow_ids),
            None if scopes is None else list(scopes),
            offset,
            limit,
        )
        if row is None or not row["ids"]:
            return (0 if row is None else int(row["total"])), []
        ids = [str(i) for i in row["ids"]]
        rows = await self.pool.fetch(query("filters_by_ids"), tenant_id, ids)
        by_id = {str(r["id"]): r for r in rows}
        return int(row["total"]), [by_id[i] for i in ids if i in by_id]

    async def update_filter(
        self,
        tenant_id: str,
        filter_id: str,
        *,
        expression: str | None,
        scope: str | None,
        payload: dict[str, Any] | None,
    ) -> Record | None:
        return await self.pool.fetchrow(
            query("update_filter"), tenant_id, filter_id, expression, scope, payload
        )

    async def delete_filter(self, tenant_id: str, filter_id: str) -> Record | None:
        return await self.pool.fetchrow(query("delete_filter"), tenant_id, filter_id)

    async def sync_declarative_filters(
        self, *, tenant_id: str, workflow_id: str, filters: Sequence[FilterSpec]
    ) -> None:
        """Make the workflow's declarative filters exactly ``filters``.

        Filters that stay keep their ids; only the difference is deleted and inserted.
        """
        async with self.transaction() as conn:
            existing = await conn.fetch(query("declarative_filters"), tenant_id, workflow_id)
            wanted = list(filters)
            stale: list[str] = []
            for row in existing:
                spec = FilterSpec(
                    scope=row["scope"], expression=row["expression"], payload=row["payload"]
                )
                if spec in wanted:
                    wanted.remove(spec)
                else:
                    stale.append(str(row["id"]))
            if stale:
                await conn.execute(query("delete_filters_by_ids"), tenant_id, stale)
            for spec in wanted:
                await conn.execute(
                    query("insert_filter"),
                    tenant_id,
                    str(uuid.uuid4()),
                    workflow_id,
                    spec.scope,
                    spec.expression,
                    spec.payload,
                    True,
                )

    # -- webhooks -------------------------------------------------------------------------

    async def insert_webhook(self, tenant_id: str, hook: NewWebhook) -> Record | None:
        """The new webhook; None if the tenant already has one with this name."""
        return await self.pool.fetchrow(
            query("insert_webhook"),
            tenant_id,
            str(uuid.uuid4()),
            hook.name,
            hook.source_name,
            hook.event_key_expression,
            hook.scope_expression,
            hook.static_payload,
            hook.return_event,
            hook.auth_type,
            hook.basic_username,
            hook.api_key_header_name,
            hook.hmac_algorithm,
            hook.hmac_encoding,
            hook.hmac_signature_header,
            hook.secret_encrypted,
        )

    async def get_webhook(self, tenant_id: str, name: str) -> Record | None:
        return await self.pool.fetchrow(query("get_webhook"), tenant_id, name)

    async def list_webhooks(
        self,
        tenant_id: str,
        *,
        names: Sequence[str] | None,
        source_names: Sequence[str] | None,
        offset: int,
        limit: int,
    ) -> list[Record]:
        """One page; each row carries ``total``, the number of matches of the whole listing."""
        return list(
            await self.pool.fetch(
                query("list_webhooks"),
                tenant_id,
                None if names is None else list(names),
                None if source_names is None else list(source_names),
                offset,
                limit,
            )
        )

    async def update_webhook(
        self,
        tenant_id: str,
        name: str,
        *,
        event_key_expression: str | None,
        scope_expression: tuple[str | None] | None,
        static_payload: tuple[dict[str, Any] | None] | None,
        return_event: bool | None,
    ) -> Record | None:
        """Change the given fields; a 1-tuple sets a nullable field (possibly to NULL)."""
        return await self.pool.fetchrow(
            query("update_webhook"),
            tenant_id,
            name,
            event_key_expression,
            scope_expression is not None,
            None if scope_expression is None else scope_expression[0],
            static_payload is not None,
            None if static_payload is None else static_payload[0],
            return_event,
        )

    async def delete_webhook(self, tenant_id: str, name: str) -> Record | None:
        return await self.pool.fetchrow(query("delete_webhook"), tenant_id, name)
