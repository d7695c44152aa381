"""Durable execution: the event log behind ``v1.V1Dispatcher/DurableTask``.

Every request names a task and its invocation (the number of times it was assigned). The
task row is locked for the request, so one task's log is written in order even across
replicas. A request from an older invocation is stale: the caller tells the worker to drop
it (``server_evict``).

* memo: a node holding a value the task computed once; returned as recorded on replay.
* wait: a node plus a match (``services/matches.py``) holding its sleep and user-event
  conditions; when the match fires, the node is satisfied with what satisfied it.
* children: one node per child run, created in the same transaction; a CHILD condition is
  satisfied by the trigger that finishes the child (migration 0013).

A satisfied node is pushed to the worker that runs the task (bus kind ``durable``) or, when
the task was evicted, the task is queued again (restore) and replays its log. Workers also
poll the nodes they wait for (``worker_status``), so a lost push only delays a wake-up.
Eviction, restore and branching live in ``services/durable_eviction.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hewer.engine.core import durable as log_rules
from hewer.engine.core.conditions import Condition, ConditionKind
from hewer.engine.core.durable import (
    EntryKind,
    LoggedNode,
    NonDeterminism,
    PollAnswer,
    branch_holding,
)
from hewer.engine.core.model import TaskStatus
from hewer.engine.db.durable_repo import NewEntry
from hewer.engine.db.repository import Conn, Record, Repository
from hewer.engine.services.bus import Bus
from hewer.engine.services.durable_eviction import (
    DurableRequestError,
    DurableTaskNotFound,
    EvictionAndBranching,
    lock_durable_task,
)
from hewer.engine.services.enqueue import Enqueuer
from hewer.engine.services.triggers import TriggerRequest, Triggers
from hewer.engine.services.waiting import LookBackSatisfier, look_back

log = logging.getLogger(__name__)

__all__ = ["DurableRequestError", "DurableTaskNotFound", "NonDeterminism", "PollAnswer"]


class StaleInvocation(Exception):
    """The request comes from an invocation that is no longer the task's current one."""

    def __init__(self, task_id: str, invocation: int) -> None:
        super().__init__(f"invocation {invocation} of task {task_id} is stale")
        self.task_id = task_id
        self.invocation = invocation


@dataclass(frozen=True, slots=True)
class Ref:
    task_id: str
    invocation: int
    branch_id: int
    node_id: int


@dataclass(frozen=True, slots=True)
class Completion:
    ref: Ref
    result: bytes | None
    is_failure: bool = False
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class MemoAck:
    ref: Ref
    existed: bool
    result: bytes | None
    # the node was in the log already: a replay reached it, which may free results held
    # back for it (core.durable.deliverable); a new node frees none
    replayed: bool


@dataclass(frozen=True, slots=True)
class WaitAck:
    ref: Ref
    replayed: bool  # as MemoAck.replayed


@dataclass(frozen=True, slots=True)
class Ready:
    """What the worker running the task's current invocation may be handed now."""

    worker_id: str | None
    invocation: int
    completions: list[Completion]


class DurableLog(EvictionAndBranching):
    def __init__(
        self, *, repo: Repository, bus: Bus, enqueuer: Enqueuer, triggers: Triggers
    ) -> None:
        self._repo = repo
        self._bus = bus
        self._enqueuer = enqueuer
        self._triggers = triggers
        # set by the server: satisfies a fresh match at once (look-back) and wakes timers
        self.matches: DurableMatches | None = None

    # -- requests from the task --------------------------------------------------------

    async def memo(
        self, *, tenant_id: str, worker_id: str, task_id: str, invocation: int, key: bytes
    ) -> MemoAck:
        async with self._repo.transaction() as conn:
            await self._held(conn, tenant_id, worker_id, task_id, invocation)
            ref, existing = await self._next_node(conn, tenant_id, task_id, invocation)
            wanted = log_rules.memo_key(key)
            if existing is not None:
                self._check(existing, ref, EntryKind.MEMO, wanted)
                if existing["satisfied"]:
                    return MemoAck(ref, True, existing["result"], replayed=True)
                return MemoAck(ref, False, None, replayed=True)
            await self._repo.insert_durable_entries(
                conn,
                task_id=task_id,
                tenant_id=tenant_id,
                entries=[NewEntry(ref.branch_id, ref.node_id, EntryKind.MEMO.value, wanted)],
            )
            return MemoAck(ref, False, None, replayed=False)

    async def complete_memo(
        self, *, tenant_id: str, ref: Ref, key: bytes, payload: bytes | None
    ) -> None:
        async with self._repo.transaction() as conn:
            task = await self._repo.lock_durable_task(
                conn, task_id=ref.task_id, tenant_id=tenant_id
            )
            if task is None:
                raise DurableTaskNotFound(f"task {ref.task_id} not found")
            entries = await self._repo.durable_entries_at(
                conn, task_id=ref.task_id, refs=[(ref.branch_id, ref.node_id)]
            )
            entry = entries.get((ref.branch_id, ref.node_id))
            if entry is None:
                raise DurableRequestError(
                    f"memo node {ref.node_id} of branch {ref.branch_id} does not exist"
                )
            self._check(entry, ref, EntryKind.MEMO, log_rules.memo_key(key))
            await self._repo.satisfy_durable_entry(
                conn,
                task_id=ref.task_id,
                branch_id=ref.branch_id,
                node_id=ref.node_id,
                result=payload or b"",
            )

    async def wait_for(
        self,
        *,
        tenant_id: str,
        worker_id: str,
        task_id: str,
        invocation: int,
        conditions: Sequence[Condition],
        label: str | None,
    ) -> WaitAck:
        try:
            log_rules.durable_conditions(conditions)
        except ValueError as exc:
            raise DurableRequestError(str(exc)) from None
        wanted = log_rules.wait_key(conditions)
        async with self._repo.transaction() as conn:
            await self._held(conn, tenant_id, worker_id, task_id, invocation)
            ref, existing = await self._next_node(conn, tenant_id, task_id, invocation)
            if existing is not None:
                self._check(existing, ref, EntryKind.WAIT_FOR, wanted)
                # a replay: its result is delivered in order (ready)
                return WaitAck(ref, replayed=True)
            await self._repo.insert_durable_entries(
                conn,
                task_id=task_id,
                tenant_id=tenant_id,
                entries=[
                    NewEntry(ref.branch_id, ref.node_id, EntryKind.WAIT_FOR.value, wanted, label)
                ],
            )
            match_id = await self._repo.insert_durable_match(
                conn,
                tenant_id=tenant_id,
                task_id=task_id,
                branch_id=ref.branch_id,
                node_id=ref.node_id,
                conditions=conditions,
            )
            if match_id is not None and self.matches is not None:
                found = await look_back(
                    self._repo, conn, tenant_id=tenant_id, conditions=conditions
                )
                if found:
                    await self.matches.satisfy_now(conn, match_id=match_id, found=found)
        if self.matches is not None and any(c.kind is ConditionKind.SLEEP for c in conditions):
            self.matches.sleep_registered()
        return WaitAck(ref, replayed=False)

    async def trigger_runs(
        self,
        *,
        tenant_id: str,
        worker_id: str,
        task_id: str,
        invocation: int,
        requests: Sequence[TriggerRequest],
    ) -> list[tuple[Ref, str]]:
        """Spawn children as log nodes; returns each node with its child run id."""
        if not requests:
            return []
        async with self._repo.transaction() as conn:
            await self._held(conn, tenant_id, worker_id, task_id, invocation)
            first, current = await self._repo.take_durable_nodes(
                conn,
                task_id=task_id,
                tenant_id=tenant_id,
                invocation=invocation,
                count=len(requests),
            )
            branches = await self._repo.durable_branches(conn, task_id)
            refs = [
                Ref(task_id, invocation, branch_holding(branches, current=current, node_id=n), n)
                for n in range(first, first + len(requests))
            ]
            existing = await self._repo.durable_entries_at(
                conn, task_id=task_id, refs=[(r.branch_id, r.node_id) for r in refs]
            )
            keys = [
                log_rules.run_key(
                    workflow_name=req.workflow_name,
                    input_json=json.dumps(req.input, sort_keys=True),
                    child_key=req.child_key,
                )
                for req in requests
            ]
            run_ids: dict[int, str] = {}
            new: list[int] = []
            for i, ref in enumerate(refs):
                entry = existing.get((ref.branch_id, ref.node_id))
                if entry is None:
                    new.append(i)
                    continue
                self._check(entry, ref, EntryKind.RUN, keys[i])
                run_ids[i] = str(entry["child_run_id"])
            if new:
                created = await self._triggers.trigger(
                    tenant_id=tenant_id, requests=[requests[i] for i in new], conn=conn
                )
                children = {
                    str(r["id"]): r for r in await self._repo.durable_child_runs(conn, created)
                }
                for i, run_id in zip(new, created, strict=True):
                    # a spawn deduplicated onto an earlier child (same key or index) must
                    # be the same spawn, or the replay is not deterministic
                    _same_spawn(children.get(run_id), requests[i], refs[i])
                    run_ids[i] = run_id
                await self._repo.insert_durable_entries(
                    conn,
                    task_id=task_id,
                    tenant_id=tenant_id,
                    entries=[
                        NewEntry(
                            refs[i].branch_id,
                            refs[i].node_id,
                            EntryKind.RUN.value,
                            keys[i],
                            child_run_id=run_ids[i],
                        )
                        for i in new
                    ],
                )
                for i in new:
                    await self._repo.insert_durable_match(
                        conn,
                        tenant_id=tenant_id,
                        task_id=task_id,
                        branch_id=refs[i].branch_id,
                        node_id=refs[i].node_id,
                        conditions=(),
                        child_run_id=run_ids[i],
                    )
                # a deduplicated child may have finished already: nothing will finish it again
                finished = [r for r in children.values() if r["finished"]]
                if finished and self.matches is not None:
                    await self.matches.children_finished(conn, [str(r["id"]) for r in finished])
        return [(refs[i], run_ids[i]) for i in range(len(requests))]

    async def poll(self, *, tenant_id: str, waiting: Sequence[Ref]) -> PollAnswer:
        """A worker's poll of the nodes it waits for: which invocations are stale, and which
        tasks have something to hand over again (``core.durable.answer_poll``)."""
        rows = await self._repo.durable_waiting_states(
            tenant_id=tenant_id, nodes=[(r.task_id, r.branch_id, r.node_id) for r in waiting]
        )
        return log_rules.answer_poll(
            waiting,
            current={str(r["task_id"]): int(r["invocation_count"]) for r in rows},
            satisfied={
                (str(r["task_id"]), int(r["branch_id"]), int(r["node_id"]))
                for r in rows
                if r["satisfied"]
            },
        )

    async def ready(self, *, tenant_id: str, task_id: str) -> Ready | None:
        """The satisfied nodes the task's current invocation may be handed, in the order they
        were satisfied (``core.durable.deliverable``); None when the task is not running."""
        async with self._repo.transaction() as conn:
            state = await self._repo.durable_delivery_state(
                conn, task_id=task_id, tenant_id=tenant_id
            )
            if state is None or state["status"] != TaskStatus.RUNNING.value:
                return None
            entries = await self._repo.durable_log_entries(conn, task_id)
            branches = await self._repo.durable_branches(conn, task_id)
        invocation = int(state["invocation_count"])
        by_key = {(int(e["branch_id"]), int(e["node_id"])): e for e in entries}
        nodes = log_rules.deliverable(
            (
                LoggedNode(branch, node, EntryKind(e["kind"]), e["satisfied_order"])
                for (branch, node), e in by_key.items()
            ),
            branches,
            current=int(state["branch_id"]),
            reached=int(state["reached_node_id"]),
        )
        worker = state["worker_id"]
        return Ready(
            worker_id=None if worker is None else str(worker),
            invocation=invocation,
            completions=[
                _completion(
                    Ref(task_id, invocation, n.branch_id, n.node_id),
                    by_key[(n.branch_id, n.node_id)],
                )
                for n in nodes
            ],
        )

    # -- a node was satisfied (services/matches.py) ----------------------------------------

    async def satisfied(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        task_id: str,
        branch_id: int,
        node_id: int,
        result: bytes | None,
        is_failure: bool = False,
        error_message: str | None = None,
    ) -> None:
        task = await self._repo.lock_durable_task(conn, task_id=task_id, tenant_id=tenant_id)
        if task is None:
            return
        written = await self._repo.satisfy_durable_entry(
            conn,
            task_id=task_id,
            branch_id=branch_id,
            node_id=node_id,
            result=result,
            is_failure=is_failure,
            error_message=error_message,
        )
        if not written:
            return
        status = TaskStatus(task["status"])
        if status is TaskStatus.EVICTED:
            if await self._reads(conn, tenant_id, task_id, [(branch_id, node_id)]):
                await self._restore_locked(conn, tenant_id, task_id, why="its wait was satisfied")
        elif status is TaskStatus.RUNNING and task["worker_id"] is not None:
            # the stream reads the result back (ready): a NOTIFY payload is capped at 8 kB
            await self._bus.publish(
                conn,
                {"t": "durable", "worker": str(task["worker_id"]), "task": task_id},
            )

    # -- helpers ---------------------------------------------------------------------------

    async def _held(
        self, conn: Conn, tenant_id: str, worker_id: str, task_id: str, invocation: int
    ) -> Record:
        task = await lock_durable_task(self._repo, conn, tenant_id=tenant_id, task_id=task_id)
        current = int(task["invocation_count"])
        if invocation < current:
            raise StaleInvocation(task_id, invocation)
        if invocation > current:
            raise DurableRequestError(
                f"task {task_id} has had {current} invocations; {invocation} is not one of them"
            )
        if task["status"] != TaskStatus.RUNNING.value:
            raise DurableRequestError(f"task {task_id} is {task['status']}, not running")
        if task["worker_id"] is None or str(task["worker_id"]) != worker_id:
            raise DurableRequestError(f"task {task_id} is not held by worker {worker_id}")
        return task

    async def _next_node(
        self, conn: Conn, tenant_id: str, task_id: str, invocation: int
    ) -> tuple[Ref, Record | None]:
        node_id, current = await self._repo.take_durable_nodes(
            conn, task_id=task_id, tenant_id=tenant_id, invocation=invocation, count=1
        )
        branches = await self._repo.durable_branches(conn, task_id)
        ref = Ref(
            task_id, invocation, branch_holding(branches, current=current, node_id=node_id), node_id
        )
        existing = await self._repo.durable_entries_at(
            conn, task_id=task_id, refs=[(ref.branch_id, ref.node_id)]
        )
        if ref.branch_id != current and (ref.branch_id, ref.node_id) not in existing:
            # an older branch never reached this node: it is new, written to the current one
            ref = Ref(task_id, invocation, current, node_id)
            existing = await self._repo.durable_entries_at(
                conn, task_id=task_id, refs=[(current, node_id)]
            )
        return ref, existing.get((ref.branch_id, ref.node_id))

    @staticmethod
    def _check(entry: Record, ref: Ref, kind: EntryKind, key: bytes) -> None:
        log_rules.check_entry(
            node_id=ref.node_id,
            recorded_kind=entry["kind"],
            recorded_key=entry["idempotency_key"],
            kind=kind,
            key=key,
        )


class DurableMatches(LookBackSatisfier, Protocol):
    """What the durable log needs from the match mechanism (``services/matches.py``): what
    a DAG task's creator needs, and the children that had ended already."""

    async def children_finished(self, conn: Conn, run_ids: list[str]) -> None: ...


def _completion(ref: Ref, entry: Record) -> Completion:
    result = entry["result"]
    return Completion(
        ref=ref,
        result=None if result is None else bytes(result),
        is_failure=bool(entry["is_failure"]),
        error_message=entry["error_message"],
    )


def _same_spawn(child: Record | None, request: TriggerRequest, ref: Ref) -> None:
    if child is None:
        return
    asked = EntryKind.RUN
    if child["workflow_name"] != request.workflow_name:
        raise NonDeterminism(node_id=ref.node_id, recorded=asked, asked=asked)
    if request.child_key:
        return
    try:
        recorded_input = json.loads(child["input"] or "{}")
    except ValueError:
        recorded_input = None
    if recorded_input != request.input:
        raise NonDeterminism(node_id=ref.node_id, recorded=asked, asked=asked)
