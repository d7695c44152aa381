"""The one way a task becomes runnable: every producer hands its queued tasks to here.

Triggers, DAG progression, retries, lost attempts and replays all call
:meth:`Enqueuer.enqueue`. A task without concurrency gets its queue item at once. A task
subject to concurrency (its own strategies, or its workflow's) gets a chain of concurrency
slots instead and reaches the queue only when admission admits the whole chain
(:mod:`hewer.engine.services.admission`), so no producer can bypass a policy.

``create_runs`` (one statement for a whole trigger) is the batched form of the plain case
and is used only for workflows :meth:`Enqueuer.is_plain` says have no policy to apply.
Tasks created for runs that exist (DAG children, on-failure tasks) are handed in with their
items (:class:`NewTasks`): they are written in the same statement as the queue items, so a
DAG hop costs one write whatever the policies decide.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hewer.engine.core.concurrency import (
    ConcurrencySpec,
    KeyEvaluationError,
    evaluate_key,
    key_variables,
)
from hewer.engine.core.model import StepDef, TaskStatus, WorkflowVersionDef
from hewer.engine.core.rate_limits import RateLimitEvaluationError, ResolvedLimit, resolve
from hewer.engine.db.concurrency_repo import NewSlot
from hewer.engine.db.repository import Conn, NewTaskRow, QueueEntry, Record, Repository, TaskEvent
from hewer.engine.services.bus import Bus
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.task_messages import opt

# Hatchet's priority for work the engine puts back (retries, lost attempts): above every
# user priority (1-3), so a retry does not queue behind newer runs of its key.
REQUEUE_PRIORITY = 4


@dataclass(frozen=True, slots=True)
class Enqueue:
    """A task that is QUEUED under ``retry_count`` and needs a way into the queue."""

    task_id: str
    run_id: str
    retry_count: int
    version_id: str
    step_id: str
    priority: int
    desired_worker_id: str | None
    delay_seconds: float = 0.0
    requeued: bool = False  # a retry or a lost attempt rather than new work
    # a lost attempt (its worker died, its dispatch failed) goes back under its previous
    # queue position, ahead of work queued after it (fair recovery)
    keep_queue_position: bool = False
    parents: Mapping[str, Any] = field(default_factory=dict)  # parent outputs, for CEL
    # already admitted and still holding its concurrency slots (a restored durable task:
    # eviction keeps them, like its retry count): queued directly, or it would wait for
    # a slot it holds itself
    admitted: bool = False


@dataclass(frozen=True, slots=True)
class NewTasks:
    """Tasks not yet written whose queue items :meth:`Enqueuer.enqueue` writes: they are
    inserted with the items (and before anything that reads them), with each one's first
    event. Tasks that are not QUEUED (WAITING, skipped) are among them but not among the
    items."""

    tasks: Sequence[NewTaskRow]
    events: Sequence[TaskEvent]


@dataclass(slots=True)
class EnqueueResult:
    queued: int = 0  # queue items written
    gated: int = 0  # tasks waiting for admission
    # tasks whose concurrency key could not be computed: failed, not queued (rows of
    # fail_unqueued_tasks, for the caller's DAG progression)
    failed: list[Record] = field(default_factory=list)


def admission_chain(version: WorkflowVersionDef, step: StepDef) -> tuple[ConcurrencySpec, ...]:
    """The strategies a task of ``step`` holds itself (Hatchet moves a single-task
    workflow's workflow-level strategies onto its task, ahead of the task's own)."""
    if version.is_single_task:
        return (*version.concurrency, *step.concurrency)
    return step.concurrency


def strategy_id(version: WorkflowVersionDef, step: StepDef | None, position: int) -> str:
    """``<workflow id>/<task name, or * for the workflow level>/<index>``: stable across
    versions, so the runs of a new version share their keys with the old one's."""
    workflow_level = step is None or (
        version.is_single_task and position < len(version.concurrency)
    )
    if workflow_level or step is None:
        return f"{version.workflow_id}/*/{position}"
    return f"{version.workflow_id}/{step.readable_id}/{position}"


class Enqueuer:
    def __init__(self, *, repo: Repository, bus: Bus, definitions: Definitions) -> None:
        self._repo = repo
        self._bus = bus
        self._defs = definitions

    @staticmethod
    def needs_admission(version: WorkflowVersionDef) -> bool:
        return bool(version.concurrency) or any(s.concurrency for s in version.steps)

    @classmethod
    def is_plain(cls, version: WorkflowVersionDef) -> bool:
        """No policy to apply on the way in: ``create_runs`` may queue it in one statement."""
        return not cls.needs_admission(version) and not any(s.rate_limits for s in version.steps)

    async def enqueue(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        items: Sequence[Enqueue],
        creating: NewTasks | None = None,
    ) -> EnqueueResult:
        """Queue ``items`` or put them in front of admission, inside the caller's transaction.

        ``creating``: the tasks of ``items`` are new, written here with their queue items.
        The caller publishes its own ``queue`` wake-up; an ``admit`` wake-up is published
        here when slots were written.
        """
        result = EnqueueResult()
        ready: list[Enqueue] = []
        slots: list[NewSlot] = []
        failures: dict[str, str] = {}
        runs = await self._policy_runs(conn, items)
        new_run_slots: set[str] = set()
        for item in items:
            version = await self._defs.version(item.version_id, conn=conn)
            step = version.step_by_id(item.step_id)
            if item.admitted or not self.needs_admission(version):
                ready.append(item)
                continue
            run = runs[item.run_id]
            try:
                variables = _variables(run, item)
                if version.concurrency and not version.is_single_task:
                    if int(run["slots"]) == 0 and item.run_id not in new_run_slots:
                        # the run's own slots: its queued tasks wait until they are admitted
                        slots += _chain(
                            version,
                            None,
                            version.concurrency,
                            variables,
                            holder_id=item.run_id,
                            holder_kind="run",
                            item=item,
                        )
                        new_run_slots.add(item.run_id)
                        result.gated += 1
                        continue
                    if item.run_id in new_run_slots or not run["admitted"]:
                        result.gated += 1
                        continue  # picked up when the run is admitted
                chain = admission_chain(version, step)
                if not chain:
                    ready.append(item)
                    continue
                slots += _chain(
                    version,
                    step,
                    chain,
                    variables,
                    holder_id=item.task_id,
                    holder_kind="task",
                    item=item,
                )
                result.gated += 1
            except KeyEvaluationError as exc:
                failures[item.task_id] = str(exc)
        # first: it creates the new tasks, which slots and failures refer to
        result.queued = await self._queue(
            conn,
            tenant_id=tenant_id,
            items=ready,
            runs=runs,
            failures=failures,
            creating=creating,
        )
        if slots:
            await self._repo.insert_concurrency_slots(conn, tenant_id=tenant_id, slots=slots)
            delay = min(i.delay_seconds for i in items)
            await self._bus.publish(conn, {"t": "admit", "tenant": tenant_id, "delay": delay})
        if failures:
            result.failed = await self._repo.fail_unqueued_tasks(
                conn, task_ids=list(failures), errors=list(failures.values())
            )
        return result

    async def admitted(
        self, conn: Conn, *, tenant_id: str, holders: Sequence[Record]
    ) -> EnqueueResult:
        """Queue what the admission pass just admitted whole (``admit_slots`` rows)."""
        task_ids = [str(h["holder_id"]) for h in holders if h["holder_kind"] == "task"]
        run_ids = [str(h["holder_id"]) for h in holders if h["holder_kind"] == "run"]
        result = EnqueueResult()
        if task_ids:
            rows = await self._repo.admitted_task_entries(conn, task_ids)
            items = [_item(r, delay=0.0) for r in rows]
            failures: dict[str, str] = {}
            result.queued += await self._queue(
                conn,
                tenant_id=tenant_id,
                items=items,
                runs=await self._policy_runs(conn, items),
                failures=failures,
            )
            if failures:
                result.failed += await self._repo.fail_unqueued_tasks(
                    conn, task_ids=list(failures), errors=list(failures.values())
                )
        if run_ids:
            waiting = await self._repo.waiting_tasks_of_runs(conn, run_ids)
            more = await self.enqueue(
                conn, tenant_id=tenant_id, items=[_item(r, delay=0.0) for r in waiting]
            )
            result.queued += more.queued
            result.gated += more.gated
            result.failed += more.failed
        return result

    async def _policy_runs(self, conn: Conn, items: Sequence[Enqueue]) -> dict[str, Record]:
        """Input, metadata and run-slot state of the runs whose tasks have policies."""
        run_ids: set[str] = set()
        for item in items:
            if not self.is_plain(await self._defs.version(item.version_id, conn=conn)):
                run_ids.add(item.run_id)
        return await self._repo.gate_runs(conn, sorted(run_ids)) if run_ids else {}

    async def _queue(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        items: Sequence[Enqueue],
        runs: Mapping[str, Record],
        failures: dict[str, str],
        creating: NewTasks | None = None,
    ) -> int:
        """Queue items for the scheduler, with the rate limits each will take resolved;
        with ``creating``, in the statement that creates the tasks."""
        entries: list[QueueEntry] = []
        entry_workflow_ids: list[str] = []
        lost = 0
        dynamic: dict[str, ResolvedLimit] = {}
        for item in items:
            version = await self._defs.version(item.version_id, conn=conn)
            step = version.step_by_id(item.step_id)
            limits_json = None
            if step.rate_limits:
                try:
                    variables = _variables(runs[item.run_id], item)
                    limits = [resolve(limit, variables) for limit in step.rate_limits]
                except RateLimitEvaluationError as exc:
                    failures[item.task_id] = str(exc)
                    continue
                dynamic.update({r.key: r for r in limits if r.limit is not None})
                limits_json = json.dumps([r.as_json() for r in limits])
            entry = _queue_entry(item, step, rate_limits=limits_json)
            if item.keep_queue_position:
                await self._repo.requeue_lost_item(conn, tenant_id=tenant_id, entry=entry)
                lost += 1
            else:
                entries.append(entry)
                entry_workflow_ids.append(version.workflow_id)
        if dynamic:
            # a dynamic limit's bucket is created, or its limit and window updated, from
            # the newest run that names it
            await self._repo.upsert_dynamic_rate_limits(
                conn, tenant_id=tenant_id, limits=sorted(dynamic.values(), key=lambda r: r.key)
            )
        if creating is not None:
            await self._repo.create_tasks(
                conn,
                tenant_id=tenant_id,
                tasks=creating.tasks,
                entries=entries,
                entry_workflow_ids=entry_workflow_ids,
                events=creating.events,
            )
        else:
            await self._repo.insert_queue_items(conn, tenant_id=tenant_id, entries=entries)
        return len(entries) + lost


def first_attempts(rows: Sequence[NewTaskRow], *, version_of: Mapping[str, str]) -> list[Enqueue]:
    """The new tasks (a trigger's roots, a DAG hop's children) that start QUEUED, as
    first attempts; ``version_of`` maps each run id to its workflow version."""
    return [
        Enqueue(
            task_id=row.id,
            run_id=row.run_id,
            retry_count=0,
            version_id=version_of[row.run_id],
            step_id=row.task.step.id,
            priority=row.priority,
            desired_worker_id=row.desired_worker_id,
            parents=row.task.payload_extra.get("parents", {}),
        )
        for row in rows
        if row.task.status is TaskStatus.QUEUED
    ]


def _variables(run: Record, item: Enqueue) -> dict[str, Any]:
    return key_variables(
        input=json.loads(run["input"]),
        additional_metadata=json.loads(run["additional_metadata"]),
        workflow_run_id=item.run_id,
        parents=item.parents,
    )


def _item(row: Record, *, delay: float) -> Enqueue:
    """An :class:`Enqueue` from a task row joined with its run (admission's reads)."""
    return Enqueue(
        task_id=str(row["id"]),
        run_id=str(row["workflow_run_id"]),
        retry_count=row["retry_count"],
        version_id=str(row["workflow_version_id"]),
        step_id=str(row["step_id"]),
        priority=row["priority"],
        desired_worker_id=opt(row["desired_worker_id"]),
        delay_seconds=delay,
        parents=json.loads(row["payload_extra"] or "{}").get("parents", {}),
    )


def _queue_entry(item: Enqueue, step: StepDef, *, rate_limits: str | None) -> QueueEntry:
    return QueueEntry(
        task_id=item.task_id,
        retry_count=item.retry_count,
        action_id=step.action_id,
        priority=item.priority,
        slot_requests=step.slot_requests,
        desired_worker_id=item.desired_worker_id,
        delay_seconds=item.delay_seconds,
        schedule_timeout_seconds=step.schedule_timeout_seconds,
        rate_limits=rate_limits,
    )


def _chain(
    version: WorkflowVersionDef,
    step: StepDef | None,
    specs: Sequence[ConcurrencySpec],
    variables: Mapping[str, Any],
    *,
    holder_id: str,
    holder_kind: str,
    item: Enqueue,
) -> list[NewSlot]:
    schedule_timeout = (
        step.schedule_timeout_seconds
        if step is not None
        else max(s.schedule_timeout_seconds for s in version.steps)
    )
    return [
        NewSlot(
            holder_id=holder_id,
            holder_kind=holder_kind,
            run_id=item.run_id,
            retry_count=item.retry_count if holder_kind == "task" else 0,
            position=position,
            strategy_id=strategy_id(version, step, position),
            strategy=spec.strategy.value,
            max_runs=spec.max_runs,
            key=evaluate_key(spec, variables),
            priority=REQUEUE_PRIORITY if item.requeued else item.priority,
            delay_seconds=item.delay_seconds,
            schedule_timeout_seconds=schedule_timeout,
            expression=spec.expression,
        )
        for position, spec in enumerate(specs)
    ]
