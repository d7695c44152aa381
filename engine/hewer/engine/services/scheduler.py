"""The scheduling loop: claim queued items for the workers this replica holds, assign, send.

Wake-ups are event driven: a trigger or a freed slot sets an in-process event (and, from
other replicas, arrives over the bus). A one-second safety tick covers delayed retries whose
time has come and any signal lost while the listener reconnected.

A round reads the capacity of the local workers that serve an action with a ready item, and
only those (with 500 workers of which 50 serve the queued work, one row in ten); when there
is none it stops there. (When every local worker serves the same actions, a woken round
reads them all without asking what is ready: the claim asks again anyway.) A round goes
again at once only when a claim came back full (the queue may hold more). A round whose
claims were not full, or that found nothing ready, leaves the tenant *drained*: until
something is queued again, a wake-up (a freed slot, the safety tick) reads before it opens a
transaction, which it then most likely does not need.

A transaction that queues tasks of a drained tenant (a DAG hop: a completion that creates
the next tasks) may assign them itself, before it commits (``assign_within``): the claim
sees its new queue items, nothing older is waiting, and the hop saves the scheduler round
that would otherwise follow the commit. It claims only the items it queued: the runs they
belong to are the ones it holds locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hewer.engine.core.assignment import (
    Assignment,
    QueuedItem,
    WorkerCapacity,
    assign,
    came_back_full,
    free_capacity,
    further_limits,
)
from hewer.engine.core.placement import labels_from_json
from hewer.engine.db.repository import Conn, Record, Repository
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.outage import log_failure, outage_log
from hewer.engine.services.rate_limiting import RateLimitGate
from hewer.engine.services.workers import ActionKind, ActionMessage, WorkerHub, WorkerSession

log = logging.getLogger(__name__)

MAX_PER_ACTION = 500
ASSIGN_HEARTBEAT_WINDOW = 10.0  # seconds; workers beat every 4 s
SAFETY_TICK = 1.0
PLACEMENT_PASSES = 3  # claim passes per round past items placement held back
# a task softly pinned to a live worker of another replica is left to that replica this long
SOFT_PIN_SECONDS = 2.0


@dataclass(frozen=True)
class Round:
    """What a round did: how many tasks it assigned, and whether it claimed at all (a round
    without free capacity does not; one that found nothing ready counts as an empty claim)
    and if so whether a claim came back full."""

    assigned: int = 0
    claimed: bool = False
    full: bool = False


@dataclass(frozen=True)
class Dispatch:
    """Tasks assigned inside a caller's transaction (``Scheduler.assign_within``), to be sent
    once it committed."""

    tenant_id: str
    rows: list[Record]
    full: bool  # the claim took all it asked for: more may be waiting


class Scheduler:
    def __init__(self, *, repo: Repository, hub: WorkerHub, engine_id: str) -> None:
        self._repo = repo
        self._hub = hub
        self._engine_id = engine_id
        self._rate_limits = RateLimitGate(repo)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.on_undeliverable: Any = None  # set by the engine: requeues what could not be sent
        # held while reading capacity and assigning; the batch flusher assigns to the same
        # workers and takes it too, so the two never hand out one slot twice
        self.assign_lock = asyncio.Lock()
        # bumped by every queue and resync message; a tenant is drained while the count is
        # what it was when a round of it last claimed less than it asked for
        self._queue_signals = 0
        self._drained: dict[str, int] = {}
        self._had_room: dict[str, bool] = {}  # whether a tenant's last round found free slots

    def wake(self, delay: float = 0.0) -> None:
        if delay <= 0:
            self._wake.set()
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, self._wake.set)
        self._timers.add(handle)
        if len(self._timers) > 1000:
            self._timers = {h for h in self._timers if not h.cancelled()}

    def on_bus(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind in ("queue", "resync"):
            self._queue_signals += 1
        if kind == "queue":
            self.wake(float(message.get("delay", 0) or 0))
        elif (kind == "slots" and self._hub.get(str(message.get("worker")))) or kind == "resync":
            self.wake()

    def drained(self, tenant_id: str) -> bool:
        """Whether the tenant's last round claimed less than it asked for and nothing was
        queued since (as far as this replica heard)."""
        return self._drained.get(tenant_id) == self._queue_signals

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            woken = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=SAFETY_TICK)
                woken = True
            self._wake.clear()
            try:
                busy = False
                tenants = self._hub.tenants()
                for tenant_id in tenants:
                    drained = self.drained(tenant_id)
                    async with self.assign_lock:
                        done = await self._round(tenant_id, only_if_ready=drained or not woken)
                    busy = busy or (done.assigned > 0 and done.full)
                if busy:
                    self._wake.set()  # there may be more: go again without waiting
                if tenants:  # a round without tenants did not reach the database
                    outage_log("scheduler").succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure("scheduler", exc, log, "scheduling round")
                await asyncio.sleep(0.5)

    async def run_round(self, tenant_id: str, *, only_if_ready: bool = False) -> bool:
        """One claim-assign-send pass for a tenant; True when it assigned anything."""
        return (await self._round(tenant_id, only_if_ready=only_if_ready)).assigned > 0

    async def _round(self, tenant_id: str, *, only_if_ready: bool) -> Round:
        """``only_if_ready`` (the safety tick, or a wake-up of a drained tenant): read the
        capacity (of no worker, most likely: nothing is ready) before opening the claim's
        transaction, so that an idle engine opens none every second, nor at every freed
        slot."""
        signals = self._queue_signals
        done = await self._claim_round(tenant_id, only_if_ready=only_if_ready)
        if done.claimed and not done.full:
            self._drained[tenant_id] = signals
        elif done.full:
            self._drained.pop(tenant_id, None)
        return done

    async def _claim_round(self, tenant_id: str, *, only_if_ready: bool) -> Round:
        sessions = self._sessions(tenant_id)
        served = {s.actions - s.batch_actions for s in sessions}
        actions = sorted(set().union(*served))
        if not actions:
            return Round()
        # read outside the claim transaction: only this replica assigns to these workers, and
        # a slot freed meanwhile just waits for the next round. The readiness probe (one
        # index probe per action, as the claim makes again) runs when it can spare work: on a
        # wake-up that most likely finds nothing, and when the workers serve different
        # actions, so that those without ready work are not read
        reading = asyncio.ensure_future(
            self._repo.worker_capacity(
                tenant_id=tenant_id,
                worker_ids=[s.worker_id for s in sessions],
                action_ids=actions,
                ready_only=only_if_ready or len(served) > 1,
                heartbeat_window=ASSIGN_HEARTBEAT_WINDOW,
            )
        )
        capacities: list[WorkerCapacity] | None = None
        if only_if_ready or not self._had_room.get(tenant_id, True):
            # most likely nothing is ready (the safety tick, a drained tenant), or the last
            # round found every worker full and so will this one: read first and open no
            # transaction for nothing
            states = await reading
            if not states:
                return Round(claimed=True)  # nothing ready that a worker here serves
            capacities, limits = self._capacities(tenant_id, sessions, states)
            if not limits:
                return Round()
        try:
            # otherwise the BEGIN goes out while the capacity is read (two connections): one
            # round trip less per round; a round that then finds no room commits an empty
            # transaction, and the next one reads first
            async with self._repo.generic_plan_transaction() as conn:
                if capacities is None:
                    states = await reading
                    if not states:
                        return Round(claimed=True)
                    capacities, limits = self._capacities(tenant_id, sessions, states)
                    if not limits:
                        return Round()
                METRICS.queue_round(tenant_id)
                rows, full = await self._claim_and_assign(conn, tenant_id, limits, capacities)
                if not rows:
                    return Round(claimed=True, full=full)
        finally:
            if not reading.done():  # the transaction failed to open: let the read finish
                await asyncio.wait([reading])
            if not reading.cancelled():
                reading.exception()  # retrieved: a failed read is the round's error already
        await self._send(tenant_id, rows)
        return Round(assigned=len(rows), claimed=True, full=full)

    async def assign_within(
        self, conn: Conn, *, tenant_id: str, task_ids: Sequence[str], action_ids: Sequence[str]
    ) -> Dispatch | None:
        """Claim and assign ``task_ids`` in the caller's transaction, which just queued
        them (tasks of ``tenant_id`` for ``action_ids``); None (nothing done) unless the
        tenant is drained (nothing older waits) and no round is running here. The caller
        must hand the returned dispatch to ``end_dispatch`` once its transaction committed or
        rolled back.

        The assign lock is held from here until then, so that no round reads the capacity
        these uncommitted assignments use.

        Only the caller's own tasks are claimed: their runs are locked by the caller. An
        item of another run, queued by another replica whose wake-up has not arrived yet,
        may belong to a run that replica's own hop holds while it claims one of ours; the
        two would wait on each other until PostgreSQL's deadlock detector aborted one."""
        if self.assign_lock.locked() or not self.drained(tenant_id):
            return None
        sessions = self._sessions(tenant_id)
        if not sessions:
            return None
        await self.assign_lock.acquire()  # free: taken at once
        try:
            # not ready_only: the read runs on another connection, which cannot see the items
            # this transaction queued
            states = await self._repo.worker_capacity(
                tenant_id=tenant_id,
                worker_ids=[s.worker_id for s in sessions],
                action_ids=action_ids,
                ready_only=False,
                heartbeat_window=ASSIGN_HEARTBEAT_WINDOW,
            )
            capacities, limits = self._capacities(tenant_id, sessions, states)
            if not limits:  # no room: a round follows when a slot frees
                self.assign_lock.release()
                return None
            rows, full = await self._claim_and_assign(
                conn, tenant_id, limits, capacities, only_tasks=task_ids
            )
        except BaseException:
            self.assign_lock.release()
            raise
        METRICS.queue_round(tenant_id)
        return Dispatch(tenant_id=tenant_id, rows=rows, full=full)

    async def end_dispatch(self, dispatch: Dispatch, *, committed: bool) -> None:
        """After the transaction of ``assign_within``: send what it assigned if it committed;
        release the assign lock either way. Never raises: the caller's work stands."""
        try:
            if committed:
                if not dispatch.full:
                    # still drained, counting the caller's own queue wake-up, echoed next
                    self._drained[dispatch.tenant_id] = self._queue_signals + 1
                await self._send(dispatch.tenant_id, dispatch.rows)
        except Exception as exc:
            log_failure("scheduler", exc, log, "sending tasks assigned in a transaction")
        finally:
            self.assign_lock.release()

    async def _send(self, tenant_id: str, rows: list[Record]) -> None:
        METRICS.assigned_rows(tenant_id, rows)
        undeliverable: list[ActionMessage] = []
        for row in rows:
            message = start_message(tenant_id, row)
            if not self._hub.send(str(row["worker_id"]), message):
                undeliverable.append(message)
        if undeliverable and self.on_undeliverable is not None:
            await self.on_undeliverable(undeliverable)

    def _sessions(self, tenant_id: str) -> list[WorkerSession]:
        return [s for s in self._hub.sessions() if s.tenant_id == tenant_id and not s.closed]

    def _capacities(
        self, tenant_id: str, sessions: list[WorkerSession], states: list[Record]
    ) -> tuple[list[WorkerCapacity], dict[str, int]]:
        """The free capacity of the local workers that may take work (of those ``states``
        names: ``worker_capacity``'s rows), and from it how many items of each action a
        claim may take (none: no room; remembered per tenant)."""
        capacities = worker_capacities(
            states,
            sessions,
            engine_id=self._engine_id,
            actions_of=lambda s: s.actions - s.batch_actions,  # batch: services/batches.py
        )
        limits: dict[str, int] = {}
        for cap in capacities:
            units = sum(cap.free.values())
            if units <= 0:
                continue
            for action in cap.actions:
                limits[action] = min(MAX_PER_ACTION, limits.get(action, 0) + units)
        self._had_room[tenant_id] = bool(limits)
        return capacities, limits

    async def _claim_and_assign(
        self,
        conn: Conn,
        tenant_id: str,
        limits: dict[str, int],
        capacities: list[WorkerCapacity],
        *,
        only_tasks: Sequence[str] | None = None,
    ) -> tuple[list[Record], bool]:
        """Claim, place and assign (the rows of ``assign_tasks``, to send after the commit);
        claim again (a few passes) past items placement held back. Also says whether any
        claim came back full. ``only_tasks``: claim those tasks' items only.

        Claims take as many items per action as there is room, so a head of items no
        worker here may take now (a required label, a full desired worker) would hide the
        items behind it; each further pass claims past what earlier passes hold.
        """
        local = [c.worker_id for c in capacities]
        decided: list[Assignment] = []
        seen: list[int] = []
        full = False
        for _ in range(PLACEMENT_PASSES):
            claimed = await self._repo.claim_queue_items(
                conn,
                tenant_id=tenant_id,
                limits=limits,
                local_workers=local,
                exclude=seen,
                soft_pin_seconds=SOFT_PIN_SECONDS,
                only_tasks=only_tasks,
            )
            seen += [int(r["id"]) for r in claimed]
            actions = [str(r["action_id"]) for r in claimed]
            full = full or came_back_full(claimed=actions, limits=limits)
            checked = await self._rate_limits.check(conn, tenant_id=tenant_id, rows=claimed)
            if checked.next_refill_in is not None:
                self.wake(checked.next_refill_in)
            placed = assign([_queued_item(r) for r in checked.allowed], capacities)
            await self._rate_limits.debit(
                conn,
                tenant_id=tenant_id,
                checked=checked,
                assigned=[a.item.queue_id for a in placed],
            )
            decided += placed
            limits = further_limits(
                claimed=actions,
                placed=[a.item.action_id for a in placed],
                limits=limits,
                capacities=capacities,
                most=MAX_PER_ACTION,
            )
            if not limits:
                break
        if not decided:
            return [], full
        rows = await self._repo.assign_tasks(
            conn,
            queue_ids=[a.item.queue_id for a in decided],
            worker_ids=[a.worker_id for a in decided],
        )
        return rows, full


def worker_capacities(
    states: Sequence[Record],
    sessions: Sequence[WorkerSession],
    *,
    engine_id: str,
    actions_of: Callable[[WorkerSession], frozenset[str]],
) -> list[WorkerCapacity]:
    """The free capacity, for ``actions_of`` each, of the ``sessions`` whose row in
    ``states`` (``worker_capacity``'s) says they may take work from this replica: not
    paused, beating, streaming here. The scheduler and the batch flusher both place on it."""
    usable = {
        str(r["id"]): r
        for r in states
        if not r["is_paused"] and r["alive"] and r["engine_id"] == engine_id
    }
    return [
        WorkerCapacity(
            worker_id=s.worker_id,
            actions=actions_of(s),
            free=free_capacity(
                s.slot_config, {str(k): int(v) for k, v in dict(row["used"]).items()}
            ),
            labels=dict(row["labels"] or {}),
        )
        for s in sessions
        if (row := usable.get(s.worker_id)) is not None
    ]


def _queued_item(row: Record) -> QueuedItem:
    requests = json.loads(row["slot_requests"])
    return QueuedItem(
        queue_id=row["id"],
        task_id=str(row["task_id"]),
        action_id=row["action_id"],
        priority=row["priority"],
        slot_requests={str(k): int(v) for k, v in requests.items()},
        desired_worker_id=None
        if row["desired_worker_id"] is None
        else str(row["desired_worker_id"]),
        sticky=row["sticky"],
        labels=labels_from_json(row["desired_labels"]),
    )


def build_action_payload(input_json: str, payload_extra: str) -> str:
    """The V1StepRunData JSON; the run input is spliced in as text, never re-parsed."""
    extra = json.loads(payload_extra) if payload_extra else {}
    return (
        '{"input":'
        + (input_json or "{}")
        + ',"triggered_by":"manual","parents":'
        + json.dumps(extra.get("parents", {}))
        + ',"triggers":'
        + json.dumps(extra.get("triggers", {}))
        + ',"user_data":null,"overrides":null,"step_run_errors":'
        + json.dumps(extra.get("step_run_errors", {}))
        + "}"
    )


def start_message(tenant_id: str, row: Record) -> ActionMessage:
    def opt(value: Any) -> str | None:
        return None if value is None else str(value)

    return ActionMessage(
        kind=ActionKind.START,
        tenant_id=tenant_id,
        workflow_run_id=str(row["workflow_run_id"]),
        task_id=str(row["id"]),
        step_id=str(row["step_id"]),
        readable_id=row["readable_id"],
        action_id=row["action_id"],
        retry_count=row["retry_count"],
        payload=build_action_payload(row["input"], row["payload_extra"]),
        additional_metadata=row["additional_metadata"] or "{}",
        priority=row["priority"],
        child_index=row["child_index"],
        child_key=row["child_key"],
        parent_task_id=opt(row["parent_task_id"]),
        workflow_id=opt(row["workflow_id"]),
        workflow_version_id=opt(row["workflow_version_id"]),
        # durable tasks only, as Go does: the Python SDK keys a running task by
        # "<task>/<retry>[/<invocation>]", and a CANCEL_STEP_RUN without the count
        # would miss a non-durable task that was started with one
        invocation_count=row["invocation_count"] if row["is_durable"] else None,
        triggering_event_id=opt(row["triggering_event_id"]),
        triggering_event_key=row["triggering_event_key"],
    )
