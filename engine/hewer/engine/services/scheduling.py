"""Crons, one-time scheduled runs and workflow pause, and the ticker loop that fires them.

Every replica runs the ticker. A due cron (or scheduled run) is claimed with
``FOR UPDATE SKIP LOCKED`` and fired and moved on (marked fired) in the same transaction
that creates its run, so each tick fires exactly once across replicas. A tick missed by
more than the grace (the engine was down or stalled) is skipped, not back-filled.

The loop sleeps until the nearest due time (at most one second: rows created by another
replica are seen within that), and is woken at once by changes made on this replica.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hewer.engine.core.cron import InvalidCron, next_tick, normalize, should_fire
from hewer.engine.db.repository import Conn, Record, Repository
from hewer.engine.services.bus import Bus
from hewer.engine.services.lifecycle import Lifecycle
from hewer.engine.services.loops import DeadlineLoop
from hewer.engine.services.outage import log_failure
from hewer.engine.services.triggers import (
    IdempotencyCollision,
    TriggerError,
    TriggerRequest,
    Triggers,
)

log = logging.getLogger(__name__)

BATCH = 100
MAX_SLEEP = 1.0
# a tick or schedule later than this when the ticker reaches it was missed: it is skipped
MISSED_GRACE_SECONDS = 15.0
# a new schedule may be this far in the past (clock skew, transit) and still be accepted
PAST_TOLERANCE_SECONDS = 5.0
PAUSE_BEHAVIORS = ("QUEUE", "DROP")


class SchedulingError(ValueError):
    """A request the engine refuses; nothing was stored. ``kind`` picks the status."""

    kind = "invalid"


class NotFoundError(SchedulingError):
    kind = "not_found"


class ConflictError(SchedulingError):
    kind = "conflict"


@dataclass(frozen=True, slots=True)
class Scheduled:
    workflow_id: str
    version_id: str
    ids: list[str]
    trigger_at: list[datetime]


def _check_priority(priority: int | None) -> None:
    if priority is not None and not 1 <= priority <= 3:
        raise SchedulingError(f"priority must be between 1 and 3, got {priority}")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Scheduling(DeadlineLoop):
    def __init__(
        self,
        *,
        repo: Repository,
        bus: Bus,
        triggers: Triggers,
        lifecycle: Lifecycle,
        grace_seconds: float = MISSED_GRACE_SECONDS,
    ) -> None:
        super().__init__(name="ticker", max_sleep=MAX_SLEEP)
        self._repo = repo
        self._bus = bus
        self._triggers = triggers
        self._lifecycle = lifecycle
        self._grace = grace_seconds

    # -- crons ------------------------------------------------------------------------------

    async def _workflow(self, tenant_id: str, name: str) -> Record:
        row = await self._repo.latest_version_by_name(tenant_id, name)
        if row is None:
            raise NotFoundError(f"workflow {name!r} not found")
        return row

    async def create_cron(
        self,
        *,
        tenant_id: str,
        workflow_name: str,
        name: str,
        expression: str,
        input: dict[str, Any],
        metadata: dict[str, Any],
        priority: int | None,
    ) -> str:
        try:
            expression = normalize(expression)
        except InvalidCron as exc:
            raise SchedulingError(str(exc)) from None
        _check_priority(priority)
        if not name.strip():
            raise SchedulingError("cronName is required")
        workflow = await self._workflow(tenant_id, workflow_name)
        cron_id = await self._repo.insert_api_cron(
            tenant_id=tenant_id,
            workflow_id=str(workflow["workflow_id"]),
            name=name,
            expression=expression,
            input=input,
            metadata=metadata,
            priority=priority,
            next_fire_at=next_tick(expression, datetime.now(UTC)),
        )
        if cron_id is None:
            raise ConflictError(
                f"workflow {workflow_name!r} already has a cron named {name!r} "
                f"with expression {expression!r}"
            )
        self.wake()
        return cron_id

    async def trigger_cron(self, *, tenant_id: str, cron_id: str) -> str:
        """Run the cron's workflow now with the cron's input, metadata and priority."""
        rows = await self._repo.get_crons(tenant_id, [cron_id])
        if not rows:
            raise NotFoundError(f"cron {cron_id} not found")
        return await self._run_now(tenant_id=tenant_id, row=rows[0])

    async def _run_now(self, *, tenant_id: str, row: Record) -> str:
        """Trigger the workflow of a cron or scheduled-run row with the row's input."""
        try:
            ids = await self._triggers.trigger(
                tenant_id=tenant_id,
                requests=[
                    TriggerRequest(
                        workflow_name=row["workflow_name"],
                        input=dict(row["input"] or {}),
                        additional_metadata=dict(row["additional_metadata"] or {}),
                        priority=row["priority"],
                    )
                ],
            )
        except TriggerError as exc:
            raise SchedulingError(str(exc)) from None
        return ids[0]

    async def set_cron_enabled(self, *, tenant_id: str, cron_id: str, enabled: bool) -> None:
        rows = await self._repo.get_crons(tenant_id, [cron_id])
        if not rows:
            raise NotFoundError(f"cron {cron_id} not found")
        await self._repo.set_cron_enabled(
            tenant_id=tenant_id,
            cron_id=cron_id,
            enabled=enabled,
            next_fire_at=next_tick(rows[0]["expression"], datetime.now(UTC)),
        )
        self.wake()

    async def delete_cron(self, *, tenant_id: str, cron_id: str) -> None:
        """Delete a cron; runs it already started go on."""
        if not await self._repo.delete_cron(tenant_id=tenant_id, cron_id=cron_id):
            raise NotFoundError(f"cron {cron_id} not found")

    # -- scheduled runs ---------------------------------------------------------------------

    async def schedule(
        self,
        *,
        tenant_id: str,
        workflow_name: str,
        trigger_at: Sequence[datetime],
        input: dict[str, Any],
        metadata: dict[str, Any],
        priority: int | None,
        parent_task_id: str | None = None,
    ) -> Scheduled:
        if not trigger_at:
            raise SchedulingError("at least one schedule time is required")
        _check_priority(priority)
        times = [_aware(t).astimezone(UTC) for t in trigger_at]
        earliest = datetime.now(UTC) - timedelta(seconds=PAST_TOLERANCE_SECONDS)
        for t in times:
            if t < earliest:
                raise SchedulingError(f"schedule time {t.isoformat()} is in the past")
        workflow = await self._workflow(tenant_id, workflow_name)
        ids = [str(uuid.uuid4()) for _ in times]
        await self._repo.insert_scheduled_runs(
            tenant_id=tenant_id,
            workflow_id=str(workflow["workflow_id"]),
            ids=ids,
            trigger_at=times,
            input=input,
            metadata=metadata,
            priority=priority,
            parent_task_id=parent_task_id,
        )
        self.wake()
        return Scheduled(
            workflow_id=str(workflow["workflow_id"]),
            version_id=str(workflow["version_id"]),
            ids=ids,
            trigger_at=times,
        )

    async def reschedule(self, *, tenant_id: str, scheduled_id: str, trigger_at: datetime) -> None:
        when = _aware(trigger_at).astimezone(UTC)
        if when < datetime.now(UTC) - timedelta(seconds=PAST_TOLERANCE_SECONDS):
            raise SchedulingError(f"schedule time {when.isoformat()} is in the past")
        state = await self._repo.scheduled_state(tenant_id=tenant_id, scheduled_id=scheduled_id)
        if state is None:
            raise NotFoundError(f"scheduled run {scheduled_id} not found")
        if state["origin"] != "api":
            raise SchedulingError("only scheduled runs created through the API can be rescheduled")
        if not await self._repo.reschedule(
            tenant_id=tenant_id, scheduled_id=scheduled_id, trigger_at=when
        ):
            raise SchedulingError(f"scheduled run {scheduled_id} has already been triggered")
        self.wake()

    async def delete_scheduled(self, *, tenant_id: str, ids: Sequence[str]) -> list[str]:
        return await self._repo.delete_scheduled(tenant_id=tenant_id, ids=ids)

    async def trigger_scheduled(self, *, tenant_id: str, scheduled_id: str) -> str:
        """Run a scheduled run's workflow now (the schedule itself is left as it is)."""
        rows = await self._repo.get_scheduled(tenant_id, [scheduled_id])
        if not rows:
            raise NotFoundError(f"scheduled run {scheduled_id} not found")
        return await self._run_now(tenant_id=tenant_id, row=rows[0])

    # -- workflow pause ---------------------------------------------------------------------

    async def pause(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        queue_ttl_seconds: float,
        cron_behavior: str,
        scheduled_behavior: str,
    ) -> None:
        for value in (cron_behavior, scheduled_behavior):
            if value not in PAUSE_BEHAVIORS:
                raise SchedulingError(f"pause behaviour must be QUEUE or DROP, got {value!r}")
        if queue_ttl_seconds < 0:
            raise SchedulingError("pausedWorkflowQueueTTL must not be negative")
        if not await self._repo.pause_workflow(
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            queue_ttl_seconds=queue_ttl_seconds,
            cron_behavior=cron_behavior,
            scheduled_behavior=scheduled_behavior,
        ):
            raise NotFoundError(f"workflow {workflow_id} not found")
        self.wake()

    async def unpause(self, *, tenant_id: str, workflow_id: str) -> None:
        async with self._repo.transaction() as conn:
            restored = await self._repo.unpause_workflow(
                conn, tenant_id=tenant_id, workflow_id=workflow_id
            )
            if restored is None:
                raise NotFoundError(f"workflow {workflow_id} not found")
            if restored:
                await self._bus.publish(conn, {"t": "queue", "tenant": tenant_id, "delay": 0})

    # -- the ticker -------------------------------------------------------------------------

    async def seconds_to_next(self) -> float | None:
        return await self._repo.seconds_to_next_due()

    async def run_once(self) -> None:
        while await self._fire_crons() >= BATCH:
            pass
        while await self._fire_schedules() >= BATCH:
            pass
        await self._expire_paused()

    async def _trigger_in(self, conn: Conn, row: Record) -> str | None:
        try:
            ids = await self._triggers.trigger(
                tenant_id=str(row["tenant_id"]),
                requests=[
                    TriggerRequest(
                        workflow_name=row["workflow_name"],
                        input=json.loads(row["input"] or "{}"),
                        additional_metadata=json.loads(row["additional_metadata"] or "{}"),
                        priority=row["priority"],
                    )
                ],
                conn=conn,
            )
        except IdempotencyCollision as exc:  # a duplicate, not a failure: no traceback
            log.info("workflow %r not triggered: %s", row["workflow_name"], exc)
            return None
        except Exception as exc:
            log_failure("scheduled triggers", exc, log, f"triggering {row['workflow_name']!r}")
            return None
        return ids[0]

    async def _fire_crons(self) -> int:
        async with self._repo.transaction() as conn:
            rows = await self._repo.claim_due_crons(conn, limit=BATCH)
            for row in rows:
                now: datetime = row["db_now"]
                fire = should_fire(row["next_fire_at"], now, grace_seconds=self._grace)
                if row["is_paused"] and row["paused_cron_behavior"] == "DROP":
                    fire = False
                if fire:
                    fire = await self._trigger_in(conn, row) is not None
                try:
                    following = next_tick(row["expression"], now)
                except InvalidCron:
                    following = now + timedelta(days=3650)  # unreachable: stored ones are valid
                await self._repo.advance_cron(
                    conn, cron_id=str(row["id"]), next_fire_at=following, fired=fire
                )
        return len(rows)

    async def _fire_schedules(self) -> int:
        async with self._repo.transaction() as conn:
            rows = await self._repo.claim_due_schedules(conn, limit=BATCH)
            for row in rows:
                fire = should_fire(row["trigger_at"], row["db_now"], grace_seconds=self._grace)
                if not fire:
                    log.warning("scheduled run %s missed its time: not run", row["id"])
                if row["is_paused"] and row["paused_scheduled_behavior"] == "DROP":
                    fire = False
                run_id = await self._trigger_in(conn, row) if fire else None
                await self._repo.mark_schedule_fired(
                    conn,
                    scheduled_id=str(row["id"]),
                    status="QUEUED" if run_id else "CANCELLED",
                    run_id=run_id,
                )
        return len(rows)

    async def _expire_paused(self) -> None:
        rows = await self._repo.expired_paused_items(limit=BATCH)
        for row in rows:
            await self._lifecycle.cancel(
                tenant_id=str(row["tenant_id"]),
                task_ids=[str(row["task_id"])],
                reason="the workflow was paused for longer than its paused queue TTL",
            )
