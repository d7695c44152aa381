"""Declared workflows (registered by the Kubernetes operator) and owned objects.

Statements from ``sql/queries/declared.sql``, mixed into :class:`Repository`. Every one
filters on the tenant.
"""

from __future__ import annotations

from typing import Any

from hewer.engine.db.base import Conn, Record, RepositoryBase
from hewer.engine.db.queries import query


class DeclaredQueries(RepositoryBase):
    async def get_declared_workflow(
        self, tenant_id: str, name: str, *, conn: Conn | None = None
    ) -> Record | None:
        return await (conn or self.pool).fetchrow(query("get_declared_workflow"), tenant_id, name)

    async def upsert_declared_workflow(
        self,
        *,
        tenant_id: str,
        name: str,
        workflow_id: str,
        resource: str,
        definition: dict[str, Any],
        drift: str | None,
    ) -> None:
        await self.pool.execute(
            query("upsert_declared_workflow"),
            tenant_id,
            name,
            workflow_id,
            resource,
            definition,
            drift,
        )

    async def set_declared_drift(
        self,
        *,
        tenant_id: str,
        name: str,
        worker_definition: dict[str, Any],
        drift: str | None,
    ) -> None:
        await self.pool.execute(
            query("set_declared_drift"), tenant_id, name, worker_definition, drift
        )

    async def delete_workflow_by_name(self, tenant_id: str, name: str) -> str | None:
        """Soft-delete a workflow (runs kept, see ``delete_workflow``); its id, or None."""
        value = await self.pool.fetchval(query("delete_workflow"), None, tenant_id, name)
        return None if value is None else str(value)

    async def record_owned_object(
        self, *, tenant_id: str, kind: str, object_id: str, resource: str
    ) -> None:
        await self.pool.execute(query("record_owned_object"), tenant_id, kind, object_id, resource)

    async def forget_owned_object(self, *, tenant_id: str, kind: str, object_id: str) -> bool:
        value = await self.pool.fetchval(query("forget_owned_object"), tenant_id, kind, object_id)
        return value is not None

    async def owned_objects_of(self, tenant_id: str, resource: str | None) -> list[Record]:
        return list(await self.pool.fetch(query("owned_objects_of"), tenant_id, resource))

    async def revoke_tenant_api_token(self, *, tenant_id: str, token_id: str) -> bool:
        value = await self.pool.fetchval(query("revoke_tenant_api_token"), token_id, tenant_id)
        return value is not None
