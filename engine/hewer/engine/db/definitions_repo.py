"""Workflow definitions: workflows, versions, steps, edges, event triggers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hewer.engine.core.definition import InvalidDefinition, WorkflowSpec, stored_policies
from hewer.engine.core.model import StepDef, StepKind, WorkflowVersionDef
from hewer.engine.core.placement import labels_to_json
from hewer.engine.db.base import (
    Conn,
    Record,
    RepositoryBase,
)
from hewer.engine.db.batches_repo import BatchQueries
from hewer.engine.db.queries import query


class DefinitionQueries(BatchQueries, RepositoryBase):
    # -- definitions ----------------------------------------------------------------------

    async def put_workflow(
        self,
        *,
        tenant_id: str,
        spec: WorkflowSpec,
        definition: dict[str, Any],
        step_ids: Sequence[str],
    ) -> tuple[str, str, bool]:
        """Store a workflow version unless the latest one has the same checksum.

        Returns ``(version_id, workflow_id, created)``.
        """
        async with self.transaction() as conn:
            workflow_id = str(
                await conn.fetchval(
                    query("upsert_workflow"), tenant_id, spec.name, spec.description
                )
            )
            await conn.execute(query("lock_workflow"), workflow_id)
            latest = await conn.fetchrow(query("latest_version_of_workflow"), workflow_id)
            if latest is not None and latest["checksum"] == spec.checksum:
                return str(latest["id"]), workflow_id, False
            ordinal = 1 if latest is None else int(latest["ordinal"]) + 1
            version_id = str(
                await conn.fetchval(
                    query("insert_version"),
                    tenant_id,
                    workflow_id,
                    ordinal,
                    spec.version,
                    spec.checksum,
                    definition,
                    spec.sticky,
                    spec.default_priority,
                )
            )
            steps = spec.steps
            await conn.execute(
                query("insert_steps"),
                tenant_id,
                version_id,
                list(step_ids),
                [s.readable_id for s in steps],
                [s.action_id for s in steps],
                [s.kind.value for s in steps],
                [s.position for s in steps],
                [s.timeout_seconds for s in steps],
                [s.schedule_timeout_seconds for s in steps],
                [s.retries for s in steps],
                [s.backoff_factor for s in steps],
                [s.backoff_max_seconds for s in steps],
                [s.is_durable for s in steps],
                [json.dumps(s.slot_requests) for s in steps],
                [json.dumps(list(s.parents)) for s in steps],
                [labels_to_json(s.desired_labels) for s in steps],
            )
            id_of = {s.readable_id: sid for s, sid in zip(steps, step_ids, strict=True)}
            await self.insert_step_batch_configs(
                conn,
                tenant_id=tenant_id,
                configs={id_of[s.readable_id]: s.batch for s in steps if s.batch is not None},
            )
            edges = [(id_of[p], id_of[s.readable_id]) for s in steps for p in s.parents]
            if edges:
                await conn.execute(
                    query("insert_edges"),
                    version_id,
                    [e[0] for e in edges],
                    [e[1] for e in edges],
                )
            if spec.event_triggers:
                await conn.execute(
                    query("insert_event_triggers"),
                    version_id,
                    tenant_id,
                    list(spec.event_triggers),
                )
            return version_id, workflow_id, True

    async def load_version(
        self, version_id: str, *, conn: Conn | None = None
    ) -> WorkflowVersionDef:
        target = conn or self.pool
        head = await target.fetchrow(query("load_version"), version_id)
        if head is None:
            raise KeyError(version_id)
        rows = await target.fetch(query("load_version_steps"), version_id)
        try:
            policies = stored_policies(dict(head["definition"]))
        except InvalidDefinition as exc:
            # stored by an engine that did not validate these settings yet
            raise InvalidDefinition(f"workflow version {version_id}: {exc}") from None
        batches = await self.step_batch_configs_of_version(conn, version_id)
        steps = tuple(
            StepDef(
                id=str(r["id"]),
                readable_id=r["readable_id"],
                action_id=r["action_id"],
                kind=StepKind(r["kind"]),
                position=r["position"],
                parents=tuple(r["parents"]),
                timeout_seconds=r["timeout_seconds"],
                schedule_timeout_seconds=r["schedule_timeout_seconds"],
                retries=r["retries"],
                backoff_factor=r["backoff_factor"],
                backoff_max_seconds=r["backoff_max_seconds"],
                is_durable=r["is_durable"],
                slot_requests=dict(r["slot_requests"]),
                concurrency=policies.step_concurrency.get(r["readable_id"], ()),
                rate_limits=policies.step_rate_limits.get(r["readable_id"], ()),
                batch=batches.get(str(r["id"])),
                conditions=policies.step_conditions.get(r["readable_id"], ()),
            )
            for r in rows
        )
        return WorkflowVersionDef(
            id=str(head["id"]),
            workflow_id=str(head["workflow_id"]),
            workflow_name=head["workflow_name"],
            default_priority=head["default_priority"],
            sticky=head["sticky"],
            steps=steps,
            concurrency=policies.concurrency,
        )

    async def latest_version_by_name(self, tenant_id: str, name: str) -> Record | None:
        return await self.pool.fetchrow(query("latest_version_by_name"), tenant_id, name)

    async def workflow_names(self, workflow_ids: Sequence[str]) -> dict[str, str]:
        rows = await self.pool.fetch(query("workflow_names"), list(workflow_ids))
        return {str(r["id"]): r["name"] for r in rows}

    async def workflows_for_event_key(self, tenant_id: str, key: str) -> list[Record]:
        return list(await self.pool.fetch(query("workflows_for_event_key"), tenant_id, key))
