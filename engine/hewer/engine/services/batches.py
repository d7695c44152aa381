"""The batch flusher: turns queued items of batch actions into START_BATCH assignments.

Batch tasks are queued like every task (queue_items: pause, priority and admission apply to
them as to any other), but the scheduler leaves batch actions alone (a worker's
``batch_actions``). This loop claims them instead, per (tenant, action), under a transaction
advisory lock so that one replica at a time forms the groups of an action from every pending
item, and ``batch_group_max_runs`` is counted and respected in the same transaction. Nothing
is buffered in memory: a replica that dies mid-pass rolls back and the items stay queued.

Each pass: fill in the group key and size of items seen for the first time (a key that does
not evaluate fails that task only), plan the flushes (``core.batches.plan_flushes``), give
each batch ONE slot of one worker this replica holds (the scheduler's assignment decision,
under the same in-process lock, so the two never hand out the same slot), and send one
START_BATCH per batch. Wake-ups: queue and slot signals over the bus, plus the nearest
interval deadline; a one-second safety tick (no database work without batch workers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hewer.engine.core.assignment import QueuedItem, WorkerCapacity, assign
from hewer.engine.core.batches import (
    ITEM_OVERHEAD_BYTES,
    BatchConfig,
    GroupKeyError,
    PendingItem,
    PlannedBatch,
    batch_payload,
    evaluate_group_key,
    plan_flushes,
)
from hewer.engine.core.placement import labels_from_json
from hewer.engine.db.repository import Conn, Record, Repository
from hewer.engine.services.lifecycle import Lifecycle
from hewer.engine.services.loops import DeadlineLoop
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.rate_limiting import RateLimitGate
from hewer.engine.services.scheduler import (
    ASSIGN_HEARTBEAT_WINDOW,
    build_action_payload,
    worker_capacities,
)
from hewer.engine.services.task_messages import opt, slot_requests
from hewer.engine.services.workers import (
    ActionKind,
    ActionMessage,
    BatchStart,
    WorkerHub,
    WorkerSession,
)

log = logging.getLogger(__name__)

SAFETY_TICK = 1.0
MAX_PENDING = 5000  # items considered per action and pass; more are seen on the next pass

Undeliverable = Callable[[list[ActionMessage]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    row: Record
    key: str
    size_bytes: int


class BatchFlusher(DeadlineLoop):
    def __init__(
        self,
        *,
        repo: Repository,
        hub: WorkerHub,
        lifecycle: Lifecycle,
        engine_id: str,
        assign_lock: asyncio.Lock,
    ) -> None:
        super().__init__(name="batches", max_sleep=SAFETY_TICK)
        self._repo = repo
        self._hub = hub
        self._lifecycle = lifecycle
        self._engine_id = engine_id
        self._assign_lock = assign_lock
        self._rate_limits = RateLimitGate(repo)
        self._due: float | None = None  # loop time of the nearest interval deadline
        self._timers: set[asyncio.TimerHandle] = set()
        self.on_undeliverable: Undeliverable | None = None

    # -- wake-ups ---------------------------------------------------------------------------

    def on_bus(self, message: dict[str, Any]) -> None:
        """``queue`` (maybe delayed), ``slots`` (a batch or task ended) and ``resync``."""
        if not any(s.batch_actions for s in self._hub.sessions()):
            return
        delay = float(message.get("delay", 0) or 0) if message.get("t") == "queue" else 0.0
        if delay <= 0:
            self.wake()
            return
        handle = asyncio.get_running_loop().call_later(delay, self.wake)
        self._timers.add(handle)
        if len(self._timers) > 1000:
            self._timers = {h for h in self._timers if not h.cancelled()}

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        await super().stop()

    async def seconds_to_next(self) -> float | None:
        if self._due is None:
            return None
        return self._due - asyncio.get_running_loop().time()

    def _due_in(self, seconds: float) -> None:
        due = asyncio.get_running_loop().time() + max(0.0, seconds)
        self._due = due if self._due is None else min(self._due, due)

    # -- a pass -----------------------------------------------------------------------------

    async def run_once(self) -> None:
        self._due = None
        by_tenant: dict[str, list[WorkerSession]] = {}
        for session in self._hub.sessions():
            if session.batch_actions and not session.closed:
                by_tenant.setdefault(session.tenant_id, []).append(session)
        busy = False
        for tenant_id, sessions in by_tenant.items():
            busy = await self.flush_tenant(tenant_id, sessions) or busy
        if busy:
            self.wake()  # there may be more (a full group behind the one sent): go again

    async def flush_tenant(self, tenant_id: str, sessions: list[WorkerSession]) -> bool:
        """Flush what is due for the batch actions of these workers; True if any was sent."""
        actions = sorted({a for s in sessions for a in s.batch_actions})
        ready = await self._repo.batch_actions_with_items(tenant_id=tenant_id, action_ids=actions)
        if not ready:
            return False
        configs = await self._repo.batch_configs_of_actions(
            tenant_id=tenant_id, action_ids=list(ready)
        )
        sent = False
        for action_id, has_fresh in ready.items():
            config = configs.get(action_id)
            holders = [s for s in sessions if action_id in s.batch_actions]
            if config is None:
                # a newer version made it a plain task: the scheduler takes its items now
                log.warning("action %s is no longer a batch action", action_id)
                for session in holders:
                    session.batch_actions = session.batch_actions - {action_id}
                continue
            if has_fresh:
                # outside the assignment lock: CEL over many inputs must not stall the
                # scheduler, which shares that lock
                await self._prepare_fresh(tenant_id, action_id, config)
            sent = await self._flush_action(tenant_id, action_id, config, holders) or sent
        return sent

    async def _prepare_fresh(self, tenant_id: str, action_id: str, config: BatchConfig) -> None:
        """Fill in key and size of items no flusher has seen; fail those whose key is bad."""
        async with self._repo.transaction() as conn:
            rows = await self._repo.fresh_batch_items(
                conn, tenant_id=tenant_id, action_id=action_id, limit=MAX_PENDING
            )
            failures = await self._prepare(conn, rows, config) if rows else []
        for task_id, error in failures:
            await self._lifecycle.fail_queued(tenant_id=tenant_id, task_id=task_id, error=error)

    async def _capacities(
        self, tenant_id: str, action_id: str, sessions: list[WorkerSession]
    ) -> list[WorkerCapacity]:
        states = await self._repo.worker_capacity(
            tenant_id=tenant_id,
            worker_ids=[s.worker_id for s in sessions],
            action_ids=[action_id],
            ready_only=False,  # the flusher found items to send already
            heartbeat_window=ASSIGN_HEARTBEAT_WINDOW,
        )
        return worker_capacities(
            states,
            sessions,
            engine_id=self._engine_id,
            actions_of=lambda _: frozenset({action_id}),
        )

    async def _flush_action(
        self,
        tenant_id: str,
        action_id: str,
        config: BatchConfig,
        sessions: list[WorkerSession],
    ) -> bool:
        sends: list[tuple[str, ActionMessage]] = []
        async with self._assign_lock:
            capacities = await self._capacities(tenant_id, action_id, sessions)
            async with self._repo.transaction() as conn:
                await self._repo.lock_batch_action(conn, tenant_id=tenant_id, action_id=action_id)
                rows = await self._repo.pending_batch_items(
                    conn, tenant_id=tenant_id, action_id=action_id, limit=MAX_PENDING
                )
                if not rows:
                    return False
                now = float(rows[0]["db_now"])
                prepared = [
                    _Prepared(r, r["batch_key"] or "", r["batch_bytes"])
                    for r in rows
                    if r["batch_bytes"] is not None
                ]
                if len(prepared) < len(rows):
                    self.wake()  # items that arrived since: prepared on the next pass
                # rate limits apply per member, as to a task alone: an item its buckets
                # cannot pay for now is deferred to the refill and leaves its group
                checked = await self._rate_limits.check(
                    conn, tenant_id=tenant_id, rows=[p.row for p in prepared]
                )
                if checked.next_refill_in is not None:
                    self._due_in(checked.next_refill_in)
                allowed = {r["id"] for r in checked.allowed}
                prepared = [p for p in prepared if p.row["id"] in allowed]
                running: dict[str, int] = {}
                if config.group_max_runs is not None and prepared:
                    running = await self._repo.running_batches_per_key(
                        conn,
                        tenant_id=tenant_id,
                        action_id=action_id,
                        keys=[p.key for p in prepared],
                    )
                plan = plan_flushes(
                    [
                        PendingItem(
                            queue_id=p.row["id"],
                            key=p.key,
                            size_bytes=p.size_bytes,
                            ready_at=float(p.row["ready_at"]),
                        )
                        for p in prepared
                    ],
                    config=config,
                    now=now,
                    running=running,
                )
                if plan.next_deadline is not None:
                    self._due_in(plan.next_deadline - now)
                by_id = {p.row["id"]: p.row for p in prepared}
                assigned: list[int] = []
                for planned in plan.batches:
                    first = by_id[planned.queue_ids[0]]
                    decided = assign(
                        [
                            QueuedItem(
                                queue_id=first["id"],
                                task_id=str(first["task_id"]),
                                action_id=action_id,
                                priority=first["priority"],
                                slot_requests=slot_requests(first["slot_requests"]),
                                desired_worker_id=opt(first["desired_worker_id"]),
                                sticky=first["sticky"],
                                labels=labels_from_json(first["desired_labels"]),
                            )
                        ],
                        capacities,
                    )
                    if not decided:
                        # no slot here, or placement rules these workers out: a freed slot
                        # (or the replica that holds the wanted worker) takes it later
                        continue
                    worker_id = decided[0].worker_id
                    batch_id = str(uuid.uuid4())
                    members = await self._repo.assign_batch(
                        conn,
                        queue_ids=planned.queue_ids,
                        worker_id=worker_id,
                        batch_id=batch_id,
                        batch_key=planned.key,
                    )
                    if members:
                        METRICS.assigned_rows(tenant_id, members)
                        message = _start_batch(tenant_id, batch_id, planned, members)
                        sends.append((worker_id, message))
                        assigned.extend(planned.queue_ids)
                await self._rate_limits.debit(
                    conn, tenant_id=tenant_id, checked=checked, assigned=assigned
                )
        await self._deliver(sends)
        return bool(sends)

    async def _prepare(
        self, conn: Conn, rows: list[Record], config: BatchConfig
    ) -> list[tuple[str, str]]:
        """Compute and store the group key and size of new items (once per queue item).

        Returns ``(task_id, error)`` for items whose group key does not evaluate.
        """
        failures: list[tuple[str, str]] = []
        found = await self._repo.batch_item_contexts(conn, [r["id"] for r in rows])
        contexts = {c["id"]: c for c in found}
        new_ids: list[int] = []
        new_keys: list[str] = []
        new_sizes: list[int] = []
        for row in rows:
            context = contexts.get(row["id"])
            if context is None:
                continue
            try:
                key = _group_key(config, context)
            except GroupKeyError as exc:
                failures.append((str(row["task_id"]), str(exc)))
                continue
            size = int(context["bytes"]) + ITEM_OVERHEAD_BYTES
            new_ids.append(row["id"])
            new_keys.append(key)
            new_sizes.append(size)
        if new_ids:
            await self._repo.prepare_batch_items(
                conn, queue_ids=new_ids, keys=new_keys, sizes=new_sizes
            )
        return failures

    async def _deliver(self, sends: list[tuple[str, ActionMessage]]) -> None:
        undeliverable = [m for worker_id, m in sends if not self._hub.send(worker_id, m)]
        if undeliverable and self.on_undeliverable is not None:
            await self.on_undeliverable(undeliverable)


def _group_key(config: BatchConfig, context: Record) -> str:
    if config.group_key is None:
        return ""
    raw_input = json.loads(context["input"] or "{}")
    metadata = json.loads(context["additional_metadata"] or "{}")
    extra = json.loads(context["payload_extra"] or "{}")
    return evaluate_group_key(
        config.group_key,
        input=raw_input if isinstance(raw_input, dict) else {},
        additional_metadata=metadata if isinstance(metadata, dict) else {},
        parents=dict(extra.get("parents") or {}),
        workflow_run_id=str(context["workflow_run_id"]),
    )


def _start_batch(
    tenant_id: str, batch_id: str, planned: PlannedBatch, members: list[Record]
) -> ActionMessage:
    first = members[0]
    return ActionMessage(
        kind=ActionKind.START_BATCH,
        tenant_id=tenant_id,
        workflow_run_id=str(first["workflow_run_id"]),
        task_id="",
        step_id=str(first["step_id"]),
        readable_id=first["readable_id"],
        action_id=first["action_id"],
        retry_count=0,
        payload=batch_payload(
            [
                (
                    str(m["id"]),
                    str(m["workflow_run_id"]),
                    build_action_payload(m["input"], m["payload_extra"]),
                )
                for m in members
            ]
        ),
        priority=first["priority"],
        workflow_id=opt(first["workflow_id"]),
        workflow_version_id=opt(first["workflow_version_id"]),
        batch=BatchStart(
            batch_id=batch_id,
            batch_key=planned.key,
            reason=planned.reason,
            triggered_at=datetime.now(UTC),
            members=tuple((str(m["id"]), int(m["retry_count"])) for m in members),
        ),
    )
