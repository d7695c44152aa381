"""OpenTelemetry spans and the rows a trace is derived from (``traces.sql``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hewer.engine.core.traces import Span
from hewer.engine.db.base import Record, RepositoryBase
from hewer.engine.db.queries import query


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class TraceQueries(RepositoryBase):
    async def insert_spans(self, *, tenant_id: str, spans: Sequence[Span]) -> int:
        """Store ``spans`` in one statement; returns how many were new."""
        if not spans:
            return 0
        rows = await self.pool.fetch(
            query("insert_spans"),
            tenant_id,
            [s.trace_id for s in spans],
            [s.span_id for s in spans],
            [s.parent_span_id for s in spans],
            [s.name for s in spans],
            [s.kind.value for s in spans],
            [s.service_name for s in spans],
            [s.status.value for s in spans],
            [s.status_message for s in spans],
            [s.start_ns for s in spans],
            [s.duration_ns for s in spans],
            [_json(s.resource_attributes) for s in spans],
            [_json(s.attributes) for s in spans],
            [_json(s.events) for s in spans],
            [_json(s.links) for s in spans],
            [s.scope_name for s in spans],
            [s.scope_version for s in spans],
            [s.task_run_id for s in spans],
            [s.workflow_run_id for s in spans],
            [s.retry_count for s in spans],
        )
        return len(rows)

    async def trace_spans(self, *, tenant_id: str, trace_id: bytes, limit: int) -> list[Record]:
        return await self.pool.fetch(query("trace_spans"), tenant_id, trace_id, limit)

    async def trace_of_spans(self, *, tenant_id: str, external_id: str) -> bytes | None:
        value = await self.pool.fetchval(query("trace_of_spans"), tenant_id, external_id)
        return bytes(value) if value is not None else None

    async def resolve_run(self, *, tenant_id: str, external_id: str) -> str | None:
        """The run of ``external_id``: a run id, or the id of one of a run's tasks."""
        value = await self.pool.fetchval(query("rest_resolve_run"), tenant_id, external_id)
        return None if value is None else str(value)

    async def trace_run_family(self, *, tenant_id: str, run_id: str, limit: int) -> list[str]:
        rows = await self.pool.fetch(query("trace_run_family"), tenant_id, run_id, limit)
        return [str(r["id"]) for r in rows]

    async def trace_runs(self, *, tenant_id: str, run_ids: Sequence[str]) -> list[Record]:
        return await self.pool.fetch(query("trace_runs"), tenant_id, list(run_ids))

    async def trace_task_events(self, *, tenant_id: str, run_ids: Sequence[str]) -> list[Record]:
        return await self.pool.fetch(query("trace_task_events"), tenant_id, list(run_ids))
