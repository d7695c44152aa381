"""What the REST API needs from the engine to change state.

Reads go straight to the repository; every mutation goes through :class:`RunControl` so that
the REST layer never has to know how cancellation, replay or triggering are carried out
(queue rows, notifications to workers, DAG bookkeeping).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class RunControl(Protocol):
    async def cancel(self, *, tenant_id: str, external_ids: Sequence[str]) -> list[str]:
        """Cancel runs or tasks (ids may be either); returns the ids of cancelled tasks."""
        ...

    async def replay(self, *, tenant_id: str, external_ids: Sequence[str]) -> list[str]:
        """Replay runs or tasks (ids may be either); returns the ids of replayed tasks."""
        ...

    async def trigger(
        self,
        *,
        tenant_id: str,
        workflow_name: str,
        input: dict[str, Any],
        additional_metadata: dict[str, Any],
        priority: int | None,
    ) -> str:
        """Start a run of the latest version; returns its id.

        Raises ``ValueError`` (message shown to the caller) for an unknown workflow or bad
        input.
        """
        ...

    async def set_worker_paused(self, *, tenant_id: str, worker_id: str, paused: bool) -> bool:
        """Pause or resume assignment to a worker; False if the tenant has no such worker."""
        ...

    async def restore(self, *, tenant_id: str, task_id: str) -> bool:
        """Queue an evicted durable task again; False when it was not evicted."""
        ...

    async def branch_durable_task(
        self, *, tenant_id: str, task_id: str, node_id: int, branch_id: int
    ) -> int:
        """Reset a durable task from a node (a new branch, then a replay); returns the branch."""
        ...
