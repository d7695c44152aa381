"""Satisfying DAG conditions: the one match mechanism (table ``task_matches``, 0012).

A WAITING task has one match holding its pending sleep and user-event conditions, each
with an action (QUEUE = ``wait_for``, SKIP, CANCEL) and an or-group. Two producers satisfy
them: the timer loop (:meth:`Matches.fire_due_sleeps`) and event ingestion
(:meth:`Matches.on_event`). Either one, in a single transaction, locks the matches (in id
order), marks the conditions satisfied with what satisfied them, applies the CNF rule
(``core.conditions.fired_action``) and, when an action is complete, deletes the match and
moves the task: QUEUED through the one enqueue path (so concurrency and rate limits still
apply), COMPLETED skipped (its children then run), or CANCELLED (which cascades).
A replica that locked the same match second finds it gone: no match fires twice.

Durable waits (``services/durable.py``) are matches too, one per log entry, with action
CREATE: when one fires, its entry is satisfied with what satisfied it (the sleep, the event
payload, or the child run's outcome, read here). CHILD conditions are satisfied by a trigger
when the child run ends (migration 0013); :meth:`Matches.fire_ready_children` fires them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from hewer.engine.core import durable as log_rules
from hewer.engine.core.conditions import (
    Action,
    ConditionKind,
    Satisfied,
    event_condition_holds,
    fired_action,
)
from hewer.engine.core.dag import SKIPPED_OUTPUT
from hewer.engine.core.model import TaskStatus
from hewer.engine.db.repository import Conn, Record, Repository
from hewer.engine.services.bus import Bus
from hewer.engine.services.durable import DurableLog
from hewer.engine.services.enqueue import Enqueue, Enqueuer
from hewer.engine.services.lifecycle import Lifecycle
from hewer.engine.services.outage import log_failure
from hewer.engine.services.task_messages import opt, record_task_event

log = logging.getLogger(__name__)
BATCH = 200

# what satisfies a condition: its data (JSON text) or None when it does not
Satisfier = Callable[[Record], str | None]


class Matches:
    def __init__(
        self, *, repo: Repository, bus: Bus, lifecycle: Lifecycle, enqueuer: Enqueuer
    ) -> None:
        self._repo = repo
        self._bus = bus
        self._lifecycle = lifecycle
        self._enqueuer = enqueuer
        # set by the server: durable waits' entries, and a wake-up for the timer loop
        self.durable: DurableLog | None = None
        self.wake_timers: Callable[[], None] | None = None
        self._children_drain: asyncio.Task[None] | None = None
        self._children_again = False

    async def fire_due_sleeps(self) -> int:
        """Satisfy the sleeps that are due; returns how many matches fired."""
        async with self._repo.transaction() as conn:
            match_ids = await self._repo.due_sleep_matches(conn, limit=BATCH)
            if not match_ids:
                return 0
            return await self._satisfy(conn, match_ids, _due_sleep)

    async def on_event(
        self, *, tenant_id: str, key: str, payload: Mapping[str, Any], scope: str | None
    ) -> int:
        """Satisfy the user-event conditions this event meets; returns matches fired."""
        data = json.dumps(dict(payload))

        def satisfier(c: Record) -> str | None:
            if c["kind"] != ConditionKind.USER_EVENT.value or c["event_key"] != key:
                return None
            if c["event_scope"] and c["event_scope"] != scope:
                return None
            return data if event_condition_holds(c["expression"], dict(payload)) else None

        async with self._repo.transaction() as conn:
            match_ids = await self._repo.event_key_matches(conn, tenant_id=tenant_id, key=key)
            if not match_ids:
                return 0
            return await self._satisfy(conn, match_ids, satisfier)

    def on_children_bus(self, message: dict[str, Any]) -> None:
        """Child runs ended (the trigger of migration 0013 notified): fire their matches,
        one drain at a time per replica."""
        if self._children_drain is None or self._children_drain.done():
            self._children_drain = asyncio.create_task(self._drain_children())
        else:
            self._children_again = True

    async def _drain_children(self) -> None:
        while True:
            self._children_again = False
            try:
                while await self.fire_ready_children():
                    pass
            except Exception as exc:  # the timer loop's sweep fires them later
                log_failure("durable children", exc, log, "firing finished children")
                return
            if not self._children_again:
                return

    async def fire_ready_children(self) -> int:
        """Fire the durable matches whose child runs have ended; returns how many fired."""
        async with self._repo.transaction() as conn:
            match_ids = await self._repo.ready_child_matches(conn, limit=BATCH)
            if not match_ids:
                return 0
            return await self._satisfy(conn, match_ids, _nothing_new)

    async def children_finished(self, conn: Conn, run_ids: list[str]) -> None:
        """Satisfy the CHILD conditions of child runs that had ended already (a spawn
        deduplicated onto a finished child), inside the caller's transaction."""
        ended = set(run_ids)
        match_ids = await self._repo.child_run_matches(conn, run_ids)

        def satisfier(c: Record) -> str | None:
            if c["kind"] != ConditionKind.CHILD.value or str(c["child_run_id"]) not in ended:
                return None
            return json.dumps({"run": str(c["child_run_id"])})

        if match_ids:
            await self._satisfy(conn, match_ids, satisfier)

    async def satisfy_now(self, conn: Conn, *, match_id: str, found: dict[int, str]) -> None:
        """Satisfy conditions of a fresh match (by position) with what was found already:
        the events a look-back found."""
        positions = {}
        for position, c in enumerate(await self._repo.match_conditions(conn, [match_id])):
            positions[int(c["id"])] = position

        def satisfier(c: Record) -> str | None:
            return found.get(positions.get(int(c["id"]), -1))

        await self._satisfy(conn, [match_id], satisfier)

    def sleep_registered(self) -> None:
        if self.wake_timers is not None:
            self.wake_timers()

    async def _satisfy(self, conn: Conn, match_ids: list[str], satisfier: Satisfier) -> int:
        conditions = await self._repo.match_conditions(conn, match_ids)
        newly: list[tuple[int, str]] = []
        states: dict[str, list[Satisfied]] = {}
        task_of: dict[str, Record] = {}
        rows_of: dict[str, list[Record]] = {}
        for c in conditions:
            match_id = str(c["match_id"])
            task_of[match_id] = c
            rows_of.setdefault(match_id, []).append(c)
            satisfied = bool(c["satisfied"])
            if not satisfied:
                data = satisfier(c)
                if data is not None:
                    newly.append((int(c["id"]), data))
                    satisfied = True
            states.setdefault(match_id, []).append(
                Satisfied(Action(c["action"]), str(c["or_group_id"]), satisfied)
            )
        if newly:
            await self._repo.satisfy_match_conditions(
                conn, ids=[i for i, _ in newly], data=[d for _, d in newly]
            )
        fired = {m: a for m, s in states.items() if (a := fired_action(s)) is not None}
        if not fired:
            return 0
        await self._repo.delete_task_matches(conn, list(fired))
        fresh = dict(newly)
        for match_id, action in fired.items():
            head = task_of[match_id]
            if action is Action.CREATE:
                await self._fire_durable(conn, rows_of[match_id], fresh)
                continue
            await self._apply(
                conn, tenant_id=str(head["tenant_id"]), task_id=str(head["task_id"]), action=action
            )
        return len(fired)

    async def _fire_durable(
        self, conn: Conn, conditions: list[Record], fresh: Mapping[int, str]
    ) -> None:
        """A durable wait or child completed: satisfy its log entry with what met it."""
        head = conditions[0]
        if self.durable is None or head["durable_node_id"] is None:
            return
        met = [c for c in conditions if c["satisfied"] or int(c["id"]) in fresh]
        result: bytes | None
        failure, error = False, None
        child = next((c for c in met if c["kind"] == ConditionKind.CHILD.value), None)
        if child is not None:
            outcome = log_rules.child_outcome(
                [
                    log_rules.ChildTask(r["readable_id"], r["status"], r["output"], r["error"])
                    for r in await self._repo.child_run_tasks(conn, [str(child["child_run_id"])])
                    if r["readable_id"] is not None
                ]
            )
            result, failure, error = outcome.result, outcome.is_failure, outcome.error_message
        else:
            result = log_rules.wait_result(
                (str(c["readable_data_key"]), _condition_data(c, fresh)) for c in met
            )
        await self.durable.satisfied(
            conn,
            tenant_id=str(head["tenant_id"]),
            task_id=str(head["task_id"]),
            branch_id=int(head["durable_branch_id"]),
            node_id=int(head["durable_node_id"]),
            result=result,
            is_failure=failure,
            error_message=error,
        )

    async def _apply(self, conn: Conn, *, tenant_id: str, task_id: str, action: Action) -> None:
        if action is Action.CANCEL:
            await self._lifecycle.cancel(
                tenant_id=tenant_id, task_ids=[task_id], reason="cancel_if condition met", conn=conn
            )
            return
        if action is Action.SKIP:
            row = await self._repo.skip_waiting_task(conn, task_id, output=SKIPPED_OUTPUT)
            if row is None:
                return
            await record_task_event(
                self._repo, conn, tenant_id=tenant_id, row=row, event_type="SKIPPED"
            )
            await self._lifecycle.advance_and_publish(
                conn, row, status=TaskStatus.COMPLETED, payload=SKIPPED_OUTPUT
            )
            return
        queued = await self._repo.queue_waiting_task(conn, task_id)
        if queued is None:
            return
        extra = queued["payload_extra"]
        parents = (json.loads(extra) if isinstance(extra, str) else dict(extra or {})).get(
            "parents", {}
        )
        outcome = await self._enqueuer.enqueue(
            conn,
            tenant_id=tenant_id,
            items=[
                Enqueue(
                    task_id=task_id,
                    run_id=str(queued["workflow_run_id"]),
                    retry_count=int(queued["retry_count"]),
                    version_id=str(queued["workflow_version_id"]),
                    step_id=str(queued["step_id"]),
                    priority=int(queued["priority"]),
                    desired_worker_id=opt(queued["desired_worker_id"]),
                    parents=parents,
                )
            ],
        )
        await record_task_event(
            self._repo, conn, tenant_id=tenant_id, row=queued, event_type="QUEUED"
        )
        for failed in outcome.failed:  # a concurrency key that could not be computed
            await self._lifecycle.advance_and_publish(
                conn, failed, status=TaskStatus.FAILED, payload=str(failed["error"])
            )
        await self._bus.publish(conn, {"t": "queue", "tenant": tenant_id, "delay": 0})


def _nothing_new(c: Record) -> str | None:
    return None


def _condition_data(c: Record, fresh: Mapping[int, str]) -> Any:
    if c["kind"] == ConditionKind.SLEEP.value:
        return log_rules.sleep_data(c["sleep_for"] or "")
    text = fresh.get(int(c["id"])) or c["data"]
    return json.loads(text) if text else {}


def _due_sleep(c: Record) -> str | None:
    if c["kind"] != ConditionKind.SLEEP.value or not c["due"]:
        return None
    return json.dumps({"sleep_until": c["sleep_until"].isoformat()})
