"""Creating workflow runs: direct triggers, bulk triggers, child spawns and events."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hewer.engine.core.dag import initial_tasks, starts_waiting
from hewer.engine.core.idempotency import Collision, IdempotencyKeyError
from hewer.engine.core.ids import child_run_id, new_run_id, task_id_for
from hewer.engine.core.json_input import JsonInputError, decode_json
from hewer.engine.core.placement import DesiredLabel, labels_to_json
from hewer.engine.db.repository import (
    Conn,
    NewRun,
    NewTaskRow,
    Repository,
    TaskEvent,
)
from hewer.engine.services.bus import CHANNEL, Bus
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.enqueue import Enqueuer, first_attempts
from hewer.engine.services.idempotency import Idempotency, KeyClaim
from hewer.engine.services.waiting import (
    CREATED_EVENT,
    LookBackSatisfier,
    has_sleep,
    register_waiting,
    satisfy_met,
)

MAX_BULK = 1000
# the latest version of workflows triggered by name, per replica (entries beyond this: start
# over); only versions the one-statement path takes are kept, and that statement refuses a
# stale one (queries/runs.sql create_runs), so a trigger saves its version lookup
LATEST_CACHE_SIZE = 10_000
# a trigger whose workflow changes under it looks the versions up again this often
VERSION_ATTEMPTS = 3


class _VersionChanged(Exception):
    """create_runs wrote nothing: a run named a version that is no longer its workflow's
    latest, or a deleted workflow."""


class TriggerError(ValueError):
    """A trigger the engine refuses (unknown workflow, bad input...); nothing was created."""


class IdempotencyCollision(TriggerError):
    """Some runs were not created because their idempotency key is held by another run.

    Raised after the others were committed: ``created`` are the ids of the runs this call
    created (request order), ``collisions`` the refused requests and the runs holding them.
    """

    def __init__(self, *, created: list[str], collisions: list[Collision]) -> None:
        first = collisions[0]
        more = f" (and {len(collisions) - 1} more)" if len(collisions) > 1 else ""
        super().__init__(
            f"idempotency key collision: key {first.key!r} is held by workflow run "
            f"{first.existing_run_id}{more}"
        )
        self.created = created
        self.collisions = collisions


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    workflow_name: str
    input: dict[str, Any]
    additional_metadata: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    parent_task_id: str | None = None
    child_index: int | None = None
    child_key: str | None = None
    desired_worker_id: str | None = None
    # replace the steps' registered labels for every task of the run
    desired_worker_labels: tuple[DesiredLabel, ...] = ()
    event_id: str | None = None
    event_key: str | None = None
    # the payload of the event filter that started the run (``ctx.filter_payload``)
    filter_payload: dict[str, Any] | None = None


def parse_json_object(text: str | bytes, *, what: str, max_bytes: int) -> dict[str, Any]:
    """Decode a JSON object sent as text; empty means ``{}``."""
    size = len(text) if isinstance(text, bytes) else len(text.encode())
    if size > max_bytes:
        raise TriggerError(
            f"{what} is {size} bytes, larger than HEWER_MAX_PAYLOAD_BYTES ({max_bytes})"
        )
    if not text.strip():
        return {}
    try:
        value = decode_json(text, what=what)
    except JsonInputError as exc:
        raise TriggerError(str(exc)) from None
    if not isinstance(value, dict):
        raise TriggerError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


class Triggers:
    def __init__(
        self, *, repo: Repository, bus: Bus, definitions: Definitions, enqueuer: Enqueuer
    ) -> None:
        self._repo = repo
        self._bus = bus
        self._defs = definitions
        self._enqueuer = enqueuer
        self._idempotency = Idempotency(repo=repo)
        self._latest: dict[tuple[str, str], tuple[str, str]] = {}
        # roots that wait on conditions: their look-back and sleeps (services/matches.py);
        # set by the server
        self.matches: LookBackSatisfier | None = None

    async def trigger(
        self,
        *,
        tenant_id: str,
        requests: Sequence[TriggerRequest],
        conn: Conn | None = None,
    ) -> list[str]:
        """Create the runs; returns their ids in request order.

        With ``conn`` the runs are created inside that transaction (a savepoint), so that a
        caller can make the trigger part of its own unit of work (a cron tick's claim).

        A child spawn repeated under the same parent and key (or index) returns the run
        created the first time and creates nothing.

        Runs whose idempotency key is held are not created: :class:`IdempotencyCollision`
        is raised once the others are committed.
        """
        if not requests:
            return []
        if len(requests) > MAX_BULK:
            raise TriggerError(f"at most {MAX_BULK} runs per call, got {len(requests)}")
        names = {r.workflow_name for r in requests}
        # new roots outside a caller's transaction may name a cached version
        cached = conn is None and not any(r.parent_task_id for r in requests)
        for _ in range(VERSION_ATTEMPTS):
            resolved = {n: await self._latest_version(tenant_id, n, cached=cached) for n in names}
            try:
                return await self._create(
                    tenant_id=tenant_id, requests=requests, resolved=resolved, conn=conn
                )
            except _VersionChanged:
                for name in names:
                    self._latest.pop((tenant_id, name), None)
                cached = False
        raise TriggerError(
            f"workflow {sorted(names)[0]!r} changed {VERSION_ATTEMPTS} times while its runs "
            "were being created; nothing was created, try again"
        )

    async def _latest_version(self, tenant_id: str, name: str, *, cached: bool) -> tuple[str, str]:
        """``(workflow_id, version_id)`` of the workflow's latest version."""
        if cached and (ids := self._latest.get((tenant_id, name))) is not None:
            return ids
        row = await self._repo.latest_version_by_name(tenant_id, name)
        if row is None:
            raise TriggerError(f"workflow {name!r} not found")
        ids = (str(row["workflow_id"]), str(row["version_id"]))
        if await self._one_statement(ids[1]):
            if len(self._latest) >= LATEST_CACHE_SIZE:
                self._latest.clear()
            self._latest[(tenant_id, name)] = ids
        return ids

    async def _one_statement(self, version_id: str) -> bool:
        """Whether new runs of the version may take create_runs (see _insert): nothing to
        admit, no rate limit, no idempotency key to claim, and no root that waits on
        conditions (those get matches: the transactional path). Only these versions come
        from the cache, as create_runs refuses a stale one."""
        version = await self._defs.version(version_id)
        return (
            self._enqueuer.is_plain(version)
            and not starts_waiting(version)
            and await self._idempotency.config(version_id) is None
        )

    async def _create(
        self,
        *,
        tenant_id: str,
        requests: Sequence[TriggerRequest],
        resolved: dict[str, tuple[str, str]],
        conn: Conn | None,
    ) -> list[str]:
        runs: list[NewRun] = []
        parents: dict[str, Any] = {}
        filter_payloads: dict[str, dict[str, Any]] = {}
        for req in requests:
            if req.priority is not None and not 1 <= req.priority <= 3:
                raise TriggerError(f"priority must be between 1 and 3, got {req.priority}")
            workflow_id, version_id = resolved[req.workflow_name]
            version = await self._defs.version(version_id)
            metadata = dict(req.additional_metadata)
            dedupe_key = None
            parent_run_id = None
            if req.parent_task_id:
                parent = parents.get(req.parent_task_id)
                if parent is None:
                    parent = await self._repo.parent_context(
                        tenant_id=tenant_id, task_id=req.parent_task_id
                    )
                    if parent is None:
                        raise TriggerError(f"parent task {req.parent_task_id} not found")
                    parents[req.parent_task_id] = parent
                parent_run_id = str(parent["workflow_run_id"])
                inherited = {
                    k: v
                    for k, v in dict(parent["additional_metadata"]).items()
                    if not k.startswith("hatchet__")
                }
                metadata = {
                    **inherited,
                    **metadata,
                    "hatchet__parent_workflow_run_id": parent_run_id,
                    "hatchet__parent_step_run_id": req.parent_task_id,
                }
                child = req.child_key if req.child_key else str(req.child_index or 0)
                dedupe_key = f"{req.parent_task_id}.{child}"
                run_id = child_run_id(parent_task_id=req.parent_task_id, spawn_key=child)
            else:
                run_id = new_run_id()
            if req.filter_payload is not None:
                filter_payloads[run_id] = req.filter_payload
            runs.append(
                NewRun(
                    id=run_id,
                    workflow_id=workflow_id,
                    version_id=version_id,
                    input_json=json.dumps(req.input),
                    metadata_json=json.dumps(metadata),
                    priority=req.priority or version.default_priority,
                    parent_task_id=req.parent_task_id,
                    parent_run_id=parent_run_id,
                    child_index=req.child_index,
                    child_key=req.child_key,
                    dedupe_key=dedupe_key,
                    desired_worker_id=req.desired_worker_id,
                    desired_worker_labels=labels_to_json(req.desired_worker_labels),
                    event_id=req.event_id,
                    event_key=req.event_key,
                )
            )
        try:
            claims = await self._idempotency.keys_for(runs)
        except IdempotencyKeyError as exc:
            raise TriggerError(str(exc)) from None
        return await self._insert(
            tenant_id=tenant_id,
            runs=runs,
            filter_payloads=filter_payloads,
            conn=conn,
            claims=claims,
        )

    async def _insert(
        self,
        *,
        tenant_id: str,
        runs: list[NewRun],
        filter_payloads: dict[str, dict[str, Any]] | None = None,
        conn: Conn | None = None,
        claims: list[KeyClaim] | None = None,
    ) -> list[str]:
        wake = {"t": "queue", "tenant": tenant_id, "delay": 0}
        one_statement = conn is None and all(r.dedupe_key is None for r in runs)
        for version_id in {r.version_id for r in runs}:
            one_statement = one_statement and await self._one_statement(version_id)
        if one_statement:
            # the common case (no policy on the way in, no child dedupe, no caller
            # transaction): one statement
            tasks = await self._first_tasks(runs, created=None, filter_payloads=filter_payloads)
            current = await self._repo.create_runs(
                tenant_id=tenant_id,
                runs=runs,
                tasks=tasks,
                notify_channel=CHANNEL,
                notify_payload=json.dumps(self._bus.echoed(wake)),
            )
            if not current:
                raise _VersionChanged
            self._bus.echo_locally(wake)  # committed: this replica's scheduler can start now
            return [r.id for r in runs]
        own_transaction = conn is None
        collisions: list[Collision] = []
        # one id per request; a child spawned twice has one id (core/ids.py child_run_id),
        # inserted once, and a repeat of an earlier spawn is skipped by the insert
        ids = [r.id for r in runs]
        first_of: dict[str, NewRun] = {}
        for run in runs:
            first_of.setdefault(run.id, run)
        runs = list(first_of.values())
        async with self._repo.unit(conn) as conn:
            if claims:
                claimed = await self._idempotency.claim(conn, tenant_id=tenant_id, claims=claims)
                collisions = claimed.collisions
                refused = {c.requested_run_id for c in collisions}
                runs = [r for r in runs if r.id not in refused]
                ids = [i for i in ids if i not in refused]
            created = await self._repo.insert_runs(conn, tenant_id=tenant_id, runs=runs)
            if claims:
                await self._idempotency.settle(
                    conn, tenant_id=tenant_id, held=claimed.held, created=created
                )
            tasks = await self._first_tasks(
                runs, created=created, filter_payloads=filter_payloads, conn=conn
            )
            await self._repo.insert_tasks(conn, tenant_id=tenant_id, tasks=tasks)
            met = await register_waiting(self._repo, conn, tenant_id=tenant_id, rows=tasks)
            version_of = {r.id: r.version_id for r in runs}
            outcome = await self._enqueuer.enqueue(
                conn,
                tenant_id=tenant_id,
                items=first_attempts(tasks, version_of=version_of),
            )
            if outcome.failed:
                # the trigger's own input cannot be admitted: refuse it, create nothing
                raise TriggerError(str(outcome.failed[0]["error"]))
            await self._repo.insert_task_events(
                conn,
                tenant_id=tenant_id,
                events=[
                    TaskEvent(
                        task_id=t.id,
                        run_id=t.run_id,
                        retry_count=0,
                        event_type=CREATED_EVENT[t.task.status],
                    )
                    for t in tasks
                ],
            )
            if tasks:
                await self._bus.publish(conn, wake, echoed=own_transaction)
            # last: a skip or cancel a look-back fires advances a run that is complete now
            await satisfy_met(self.matches, conn, met)
        if tasks and own_transaction:
            self._bus.echo_locally(wake)  # committed: this replica's scheduler can start now
        if self.matches is not None and has_sleep(tasks):
            self.matches.sleep_registered()  # the timer loop sleeps until the nearest one
        if collisions:
            raise IdempotencyCollision(created=ids, collisions=collisions)
        return ids

    async def _first_tasks(
        self,
        runs: list[NewRun],
        *,
        created: set[str] | None,
        filter_payloads: dict[str, dict[str, Any]] | None,
        conn: Conn | None = None,
    ) -> list[NewTaskRow]:
        """The root tasks of the runs that were created (all of them when ``created`` is None)."""
        tasks: list[NewTaskRow] = []
        for run in runs:
            if created is not None and run.id not in created:
                continue
            version = await self._defs.version(run.version_id, conn=conn)
            for new in initial_tasks(version):
                filter_payload = (filter_payloads or {}).get(run.id)
                if filter_payload is not None:
                    triggers = {**new.payload_extra.get("triggers", {})}
                    triggers["filter_payload"] = filter_payload
                    new = dataclasses.replace(
                        new, payload_extra={**new.payload_extra, "triggers": triggers}
                    )
                # a single-task run shares its id with its task, as Hatchet's does
                task_id = run.id if len(version.steps) == 1 else task_id_for(run.id)
                tasks.append(
                    NewTaskRow(
                        id=task_id,
                        run_id=run.id,
                        task=new,
                        priority=run.priority,
                        desired_worker_id=run.desired_worker_id,
                    )
                )
        return tasks
