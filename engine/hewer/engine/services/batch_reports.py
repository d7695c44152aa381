"""What a worker reports about the members of a batch (``SendBatchActionEvent``), and which
of its actions are batch actions.

Each item maps onto the single-task outcome paths of :class:`Lifecycle` (started, completed,
failed with retries, cancelled), so DAG progression, outputs, retries and run results behave
for a batch member exactly as for a task run alone. An item counts only for the attempt that
runs in the reported batch: the SDK stamps every item with the batch's retry count, so the
attempt is found by batch id instead, and a late report for a member that was cancelled,
timed out or re-queued into another batch changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from hewer.engine.db.repository import Repository
from hewer.engine.services.lifecycle import Lifecycle, StaleAttempt, TaskNotFound

log = logging.getLogger(__name__)


class BatchEventKind:
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class InvalidBatchReport(ValueError):
    """A report the engine refuses as a whole (nothing was applied)."""


@dataclass(frozen=True, slots=True)
class BatchItemReport:
    task_id: str
    payload: str = ""
    should_not_retry: bool = False


class BatchReports:
    def __init__(self, *, repo: Repository, lifecycle: Lifecycle) -> None:
        self._repo = repo
        self._lifecycle = lifecycle

    async def batch_actions(self, *, tenant_id: str, action_ids: Sequence[str]) -> frozenset[str]:
        """Which of a worker's actions are batch actions (read when its stream opens)."""
        configs = await self._repo.batch_configs_of_actions(
            tenant_id=tenant_id, action_ids=action_ids
        )
        return frozenset(configs)

    async def report(
        self,
        *,
        tenant_id: str,
        reporter: str | None,
        batch_id: str,
        kind: str,
        items: Sequence[BatchItemReport],
    ) -> int:
        """Apply one event to every item; returns how many items it applied to.

        Raises :class:`TaskNotFound` when an item names no task of the tenant.
        """
        if kind not in (
            BatchEventKind.STARTED,
            BatchEventKind.COMPLETED,
            BatchEventKind.FAILED,
            BatchEventKind.CANCELLED,
        ):
            raise InvalidBatchReport(f"unsupported batch event type {kind}")
        attempts = await self._repo.batch_member_attempts(
            tenant_id=tenant_id, task_ids=[i.task_id for i in items]
        )
        unknown = sorted({i.task_id for i in items if i.task_id not in attempts})
        if unknown:
            raise TaskNotFound(f"tasks not found: {', '.join(unknown)}")
        current: list[tuple[BatchItemReport, int]] = []
        for item in items:
            row = attempts[item.task_id]
            if row["batch_id"] is None or str(row["batch_id"]) != batch_id:
                log.info(
                    "ignored %s for task %s: it no longer runs in batch %s",
                    kind,
                    item.task_id,
                    batch_id,
                )
                continue
            current.append((item, int(row["retry_count"])))
        if not current:
            return 0
        if kind == BatchEventKind.CANCELLED:
            await self._lifecycle.cancel(
                tenant_id=tenant_id,
                task_ids=[item.task_id for item, _ in current],
                reason="cancelled by the worker",
            )
            return len(current)
        outcomes = await asyncio.gather(
            *(self._apply(tenant_id, reporter, kind, item, retry) for item, retry in current),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, StaleAttempt):
                log.info("ignored batch item event: %s", outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        return len(current)

    async def _apply(
        self,
        tenant_id: str,
        reporter: str | None,
        kind: str,
        item: BatchItemReport,
        retry_count: int,
    ) -> None:
        if kind == BatchEventKind.STARTED:
            await self._lifecycle.started(
                tenant_id=tenant_id, task_id=item.task_id, retry_count=retry_count
            )
        elif kind == BatchEventKind.COMPLETED:
            await self._lifecycle.completed(
                tenant_id=tenant_id,
                task_id=item.task_id,
                retry_count=retry_count,
                output=item.payload,
                reporter=reporter,
            )
        else:
            await self._lifecycle.failed(
                tenant_id=tenant_id,
                task_id=item.task_id,
                retry_count=retry_count,
                error=item.payload.replace("\x00", ""),
                non_retryable=item.should_not_retry,
            )
