"""Workflow registration and a cache of immutable workflow versions."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from hewer.engine.core.definition import parse_workflow
from hewer.engine.core.model import WorkflowVersionDef
from hewer.engine.db.repository import Conn, Repository

log = logging.getLogger(__name__)


class Definitions:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        # versions never change once stored, so the cache needs no invalidation
        self._versions: dict[str, WorkflowVersionDef] = {}
        self._warned: set[tuple[str, str]] = set()

    async def register(self, *, tenant_id: str, definition: dict[str, Any]) -> tuple[str, str]:
        """Validate and store a registration; returns ``(version_id, workflow_id)``.

        Raises :class:`~hewer.engine.core.definition.InvalidDefinition` for bad input.
        """
        spec = parse_workflow(definition)
        version_id, workflow_id, created = await self._repo.put_workflow(
            tenant_id=tenant_id,
            spec=spec,
            definition=definition,
            step_ids=[str(uuid.uuid4()) for _ in spec.steps],
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
        return version_id, workflow_id

    async def version(self, version_id: str, *, conn: Conn | None = None) -> WorkflowVersionDef:
        cached = self._versions.get(version_id)
        if cached is None:
            cached = await self._repo.load_version(version_id, conn=conn)
            self._versions[version_id] = cached
        return cached
