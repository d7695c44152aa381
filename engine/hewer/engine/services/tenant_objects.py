"""What a tenant edits through the REST API: event filters, webhooks, rate limits, the objects
the operator owns, workflow deletion and token revocation.

Handlers write through this service, never the repository (``lint-imports`` checks it); each
method is one repository write in its own transaction.
"""

from __future__ import annotations

from typing import Any

from hewer.engine.db.base import Record
from hewer.engine.db.events_repo import NewWebhook
from hewer.engine.db.repository import Repository

__all__ = ["NewWebhook", "TenantObjects"]


class TenantObjects:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def insert_filter(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        scope: str,
        expression: str,
        payload: dict[str, Any],
    ) -> Record | None:
        return await self._repo.insert_filter(
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            scope=scope,
            expression=expression,
            payload=payload,
        )

    async def update_filter(
        self,
        tenant_id: str,
        filter_id: str,
        *,
        expression: str | None,
        scope: str | None,
        payload: dict[str, Any] | None,
    ) -> Record | None:
        return await self._repo.update_filter(
            tenant_id, filter_id, expression=expression, scope=scope, payload=payload
        )

    async def delete_filter(self, tenant_id: str, filter_id: str) -> Record | None:
        return await self._repo.delete_filter(tenant_id, filter_id)

    async def insert_webhook(self, tenant_id: str, hook: NewWebhook) -> Record | None:
        return await self._repo.insert_webhook(tenant_id, hook)

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
        return await self._repo.update_webhook(
            tenant_id,
            name,
            event_key_expression=event_key_expression,
            scope_expression=scope_expression,
            static_payload=static_payload,
            return_event=return_event,
        )

    async def delete_webhook(self, tenant_id: str, name: str) -> Record | None:
        return await self._repo.delete_webhook(tenant_id, name)

    async def upsert_rate_limit(
        self, *, tenant_id: str, key: str, limit: int, duration: str
    ) -> None:
        return await self._repo.upsert_rate_limit(
            tenant_id=tenant_id, key=key, limit=limit, duration=duration
        )

    async def delete_rate_limit(self, *, tenant_id: str, key: str) -> bool:
        return await self._repo.delete_rate_limit(tenant_id=tenant_id, key=key)

    async def record_owned_object(
        self, *, tenant_id: str, kind: str, object_id: str, resource: str
    ) -> None:
        return await self._repo.record_owned_object(
            tenant_id=tenant_id, kind=kind, object_id=object_id, resource=resource
        )

    async def forget_owned_object(self, *, tenant_id: str, kind: str, object_id: str) -> bool:
        return await self._repo.forget_owned_object(
            tenant_id=tenant_id, kind=kind, object_id=object_id
        )

    async def delete_workflow(self, *, tenant_id: str, workflow_id: str) -> bool:
        return await self._repo.delete_workflow(tenant_id=tenant_id, workflow_id=workflow_id)

    async def delete_workflow_by_name(self, tenant_id: str, name: str) -> str | None:
        return await self._repo.delete_workflow_by_name(tenant_id, name)

    async def revoke_tenant_api_token(self, *, tenant_id: str, token_id: str) -> bool:
        return await self._repo.revoke_tenant_api_token(tenant_id=tenant_id, token_id=token_id)
