"""Worker streams held by this replica, and the messages sent down them.

A worker's ListenV2 stream lives on exactly one replica; that replica is the only one that
assigns work to the worker, so its slot accounting never races with another replica's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

log = logging.getLogger(__name__)


class ActionKind(IntEnum):
    # values match dispatcher.proto's ActionType
    START = 0
    CANCEL = 1
    START_BATCH = 3

    @property
    def name_in_proto(self) -> str:
        return {
            ActionKind.START: "START_STEP_RUN",
            ActionKind.CANCEL: "CANCEL_STEP_RUN",
            ActionKind.START_BATCH: "START_BATCH",
        }[self]


@dataclass(frozen=True, slots=True)
class BatchStart:
    """What a START_BATCH action adds: the batch and its members (services/batches.py)."""

    batch_id: str
    batch_key: str
    reason: str
    triggered_at: datetime
    members: tuple[tuple[str, int], ...]  # (task id, retry count), in payload order


@dataclass(frozen=True, slots=True)
class ActionMessage:
    """Everything an AssignedAction carries, without protobuf."""

    kind: ActionKind
    tenant_id: str
    workflow_run_id: str
    task_id: str
    step_id: str
    readable_id: str
    action_id: str
    retry_count: int
    payload: str = ""
    additional_metadata: str = "{}"
    priority: int = 1
    child_index: int | None = None
    child_key: str | None = None
    parent_task_id: str | None = None
    workflow_id: str | None = None
    workflow_version_id: str | None = None
    invocation_count: int | None = None
    triggering_event_id: str | None = None
    triggering_event_key: str | None = None
    batch: BatchStart | None = None  # START_BATCH only; task_id is then empty

    def attempts(self) -> list[tuple[str, int]]:
        """The (task id, retry count) attempts a START action carries: one, or a batch's."""
        if self.batch is not None:
            return list(self.batch.members)
        return [(self.task_id, self.retry_count)]


@dataclass(eq=False)
class WorkerSession:
    worker_id: str
    tenant_id: str
    actions: frozenset[str]
    slot_config: dict[str, int]
    outbox: asyncio.Queue[ActionMessage] = field(default_factory=asyncio.Queue)
    closed: bool = False
    # actions the batch flusher assigns (START_BATCH) and the scheduler leaves alone; read
    # when the stream opens (workers register their workflows before they listen)
    batch_actions: frozenset[str] = frozenset()


class WorkerHub:
    def __init__(self) -> None:
        self._sessions: dict[str, WorkerSession] = {}

    def attach(self, session: WorkerSession) -> WorkerSession | None:
        """Make ``session`` the worker's live stream; returns the one it replaces, if any."""
        previous = self._sessions.get(session.worker_id)
        self._sessions[session.worker_id] = session
        if previous is not None:
            previous.closed = True
        return previous

    def detach(self, session: WorkerSession) -> bool:
        """Forget ``session``; False when a newer session had already replaced it."""
        session.closed = True
        if self._sessions.get(session.worker_id) is session:
            del self._sessions[session.worker_id]
            return True
        return False

    def get(self, worker_id: str) -> WorkerSession | None:
        return self._sessions.get(worker_id)

    def sessions(self) -> list[WorkerSession]:
        return list(self._sessions.values())

    def tenants(self) -> set[str]:
        return {s.tenant_id for s in self._sessions.values()}

    def on_bus(self, message: dict[str, Any]) -> None:
        """A bus ``worker`` message: deliver it if this replica holds the worker's stream."""
        if message.get("op") != "cancel" or self.get(str(message.get("worker"))) is None:
            return
        self.send(
            str(message["worker"]),
            ActionMessage(
                kind=ActionKind.CANCEL,
                tenant_id=str(message["tenant"]),
                workflow_run_id=str(message["run"]),
                task_id=str(message["task"]),
                step_id=str(message["step"]),
                readable_id=str(message["readable"]),
                action_id=str(message["action"]),
                retry_count=int(message["retry"]),
                invocation_count=None if message.get("inv") is None else int(message["inv"]),
            ),
        )

    def send(self, worker_id: str, message: ActionMessage) -> bool:
        session = self._sessions.get(worker_id)
        if session is None or session.closed:
            return False
        session.outbox.put_nowait(message)
        return True
