"""Workflow registration and a cache of immutable workflow versions."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from hewer.engine.core.cel import CelError
from hewer.engine.core.cel import check as check_cel
from hewer.engine.core.cron import InvalidCron, code_crons, next_tick
from hewer.engine.core.definition import InvalidDefinition, WorkflowSpec, parse_workflow
from hewer.engine.core.drift import definition_diff, summarize
from hewer.engine.core.idempotency import parse_idempotency
from hewer.engine.core.model import WorkflowVersionDef
from hewer.engine.db.events_repo import FilterSpec
from hewer.engine.db.repository import Conn, Record, Repository

log = logging.getLogger(__name__)


class Definitions:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        # versions never change once stored, so the cache needs no invalidation
        self._versions: dict[str, WorkflowVersionDef] = {}
        self._warned: set[tuple[str, str]] = set()

    async def register(
        self, *, tenant_id: str, definition: dict[str, Any], declared_by: str | None = None
    ) -> tuple[str, str]:
        """Validate and store a registration; returns ``(version_id, workflow_id)``.

        ``declared_by`` ("namespace/name" of a Workflow resource) marks the workflow
        declared. While it is, another registration (a worker's) does not replace the
        declared version: it gets the declared ids back and is recorded as drift.

        Raises :class:`~hewer.engine.core.definition.InvalidDefinition` for bad input.
        """
        spec = parse_workflow(definition)
        await self._check_static_units(tenant_id, spec)
        default_filters = parse_default_filters(spec.name, definition)
        parse_idempotency(spec.name, definition)  # a bad key expression is refused here
        try:
            cron_exprs, cron_input = code_crons(definition)
        except InvalidCron as exc:
            raise InvalidDefinition(f"workflow {spec.name!r}: {exc}") from None
        if declared_by is None:
            declared = await self._repo.get_declared_workflow(tenant_id, spec.name)
            if declared is not None:
                return await self._keep_declared(tenant_id, declared, definition)
        version_id, workflow_id, created = await self._repo.put_workflow(
            tenant_id=tenant_id,
            spec=spec,
            definition=definition,
            step_ids=[str(uuid.uuid4()) for _ in spec.steps],
        )
        await self._repo.sync_declarative_filters(
            tenant_id=tenant_id, workflow_id=workflow_id, filters=default_filters
        )
        if created or cron_exprs:
            # code-defined crons are replaced on each registration; API crons are kept
            now = datetime.now(UTC)
            await self._repo.sync_code_crons(
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                expressions=cron_exprs,
                next_fire_at=[next_tick(e, now) for e in cron_exprs],
                input=cron_input,
                priority=None,
            )
        if spec.unenforced and (tenant_id, spec.name) not in self._warned:
            self._warned.add((tenant_id, spec.name))
            log.warning(
                "workflow %r stores settings this engine version does not enforce yet: %s",
                spec.name,
                ", ".join(spec.unenforced),
            )
        if created:
            log.info("registered workflow %r (version %s)", spec.name, version_id)
        if declared_by is not None:
            await self._record_declared(
                tenant_id=tenant_id,
                name=spec.name,
                workflow_id=workflow_id,
                resource=declared_by,
                definition=definition,
            )
        return version_id, workflow_id

    async def _check_static_units(self, tenant_id: str, spec: WorkflowSpec) -> None:
        """A task that takes more units of an existing static limit than the limit allows
        could never run: refuse it now. (A limit created later is checked when the task is
        claimed: it waits, with a REQUEUED_RATE_LIMIT event saying why.)"""
        static = [
            (step.readable_id, limit)
            for step in spec.steps
            for limit in step.rate_limits
            if limit.key_expr is None and limit.units_expr is None
        ]
        if not static:
            return
        values = await self._repo.rate_limit_values(
            tenant_id=tenant_id, keys=sorted({limit.key for _, limit in static})
        )
        for task, limit in static:
            allowed = values.get(limit.key)
            if allowed is not None and limit.units > allowed:
                raise InvalidDefinition(
                    f"workflow {spec.name!r} task {task!r}: takes {limit.units} units of rate "
                    f"limit {limit.key!r}, whose limit is {allowed}"
                )

    async def _record_declared(
        self,
        *,
        tenant_id: str,
        name: str,
        workflow_id: str,
        resource: str,
        definition: dict[str, Any],
    ) -> None:
        previous = await self._repo.get_declared_workflow(tenant_id, name)
        worker_definition = None if previous is None else previous["worker_definition"]
        drift = (
            None
            if worker_definition is None
            else summarize(definition_diff(definition, worker_definition))
        )
        await self._repo.upsert_declared_workflow(
            tenant_id=tenant_id,
            name=name,
            workflow_id=workflow_id,
            resource=resource,
            definition=definition,
            drift=drift,
        )
        await self._repo.record_owned_object(
            tenant_id=tenant_id, kind="workflow", object_id=workflow_id, resource=resource
        )

    async def _keep_declared(
        self, tenant_id: str, declared: Record, definition: dict[str, Any]
    ) -> tuple[str, str]:
        """A worker registered a declared workflow: keep the declaration, note any drift."""
        name = str(declared["name"])
        drift = summarize(definition_diff(declared["definition"], definition))
        if drift != declared["drift"] or definition != declared["worker_definition"]:
            if drift:
                log.warning(
                    "workflow %r is declared by %s; a worker registered a different "
                    "definition, which is ignored: %s",
                    name,
                    declared["resource"],
                    drift,
                )
            await self._repo.set_declared_drift(
                tenant_id=tenant_id, name=name, worker_definition=definition, drift=drift
            )
        latest = await self._repo.latest_version_by_name(tenant_id, name)
        if latest is None:  # the workflow went away between the two reads
            raise InvalidDefinition(f"workflow {name!r} is being deleted")
        return str(latest["version_id"]), str(latest["workflow_id"])

    async def version(self, version_id: str, *, conn: Conn | None = None) -> WorkflowVersionDef:
        cached = self._versions.get(version_id)
        if cached is None:
            cached = await self._repo.load_version(version_id, conn=conn)
            self._versions[version_id] = cached
        return cached


def parse_default_filters(workflow: str, definition: dict[str, Any]) -> list[FilterSpec]:
    """The registration's ``default_filters`` (payload: JSON bytes, base64 in the dict form)."""
    found: list[FilterSpec] = []
    for i, raw in enumerate(definition.get("default_filters", []) or []):
        where = f"workflow {workflow!r} default filter {i}"
        expression = str(raw.get("expression", ""))
        scope = str(raw.get("scope", ""))
        if not scope:
            raise InvalidDefinition(f"{where}: scope is required")
        try:
            check_cel(expression)
        except CelError as exc:
            raise InvalidDefinition(f"{where}: {exc}") from None
        payload: Any = {}
        if raw.get("payload"):
            try:
                payload = json.loads(base64.b64decode(str(raw["payload"])))
            except ValueError:
                raise InvalidDefinition(f"{where}: payload is not a JSON object") from None
        if not isinstance(payload, dict):
            raise InvalidDefinition(f"{where}: payload is not a JSON object")
        found.append(FilterSpec(scope=scope, expression=expression, payload=payload))
    return found
