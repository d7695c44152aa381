"""Tasks created WAITING on their conditions, and the look-back every user-event wait shares.

A WAITING task gets its match (``services/matches.py``) in the transaction that creates it:
a root when its run is triggered (``services/triggers.py``), a child once its parents are
done and the on-failure task once the run failed (``services/lifecycle.py``). No queue item
and no slot exist for it until the match fires.

A user-event condition with a look-back (``consider_events_since``) may be met already by
an event stored before its match existed; :func:`look_back` finds it, for DAG conditions
and durable waits alike. What it found is handed to the match mechanism, which may fire the
match at once (:meth:`LookBackSatisfier.satisfy_now`). The creator of DAG tasks does that
only when its own writes are done (:func:`satisfy_met`): a skip or a cancel advances the
run, and must see every task the creator made and not be overwritten by it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hewer.engine.core.conditions import (
    Condition,
    ConditionKind,
    event_condition_holds,
    look_back_start,
)
from hewer.engine.core.model import TaskStatus
from hewer.engine.db.repository import Conn, NewTaskRow, Repository

# the task event a new task gets for its initial state, where it is not the state's name
CREATED_EVENT = {TaskStatus.QUEUED: "QUEUED", TaskStatus.WAITING: "CREATED"}


class LookBackSatisfier(Protocol):
    """What the creators of WAITING tasks need from the match mechanism."""

    async def satisfy_now(self, conn: Conn, *, match_id: str, found: dict[int, str]) -> None: ...

    def sleep_registered(self) -> None: ...


@dataclass(frozen=True, slots=True)
class MetAlready:
    """A new match some of whose conditions a look-back met: ``found`` maps a condition's
    position (in the task's pending conditions) to the event payload that met it."""

    match_id: str
    found: dict[int, str]


async def look_back(
    repo: Repository, conn: Conn, *, tenant_id: str, conditions: Sequence[Condition]
) -> dict[int, str]:
    """Conditions (by position) met by an event stored since their look-back start: the
    newest matching event's payload. Conditions without a look-back see only new events."""
    found: dict[int, str] = {}
    for position, c in enumerate(conditions):
        since = look_back_start(c)
        if since is None:
            continue
        for payload in await repo.recent_events(
            conn, tenant_id=tenant_id, key=c.event_key, since=since, scope=c.event_scope or None
        ):
            if event_condition_holds(c.expression, json.loads(payload)):
                found[position] = payload
                break
    return found


async def register_waiting(
    repo: Repository, conn: Conn, *, tenant_id: str, rows: Sequence[NewTaskRow]
) -> list[MetAlready]:
    """Insert the matches of the WAITING tasks among ``rows`` (already inserted) and look
    back for the events their conditions may have missed; returns the matches a look-back
    met, for :func:`satisfy_met` once the caller's own writes are done."""
    waiting = [r for r in rows if r.task.status is TaskStatus.WAITING]
    match_ids = await repo.insert_task_matches(conn, tenant_id=tenant_id, rows=waiting)
    met: list[MetAlready] = []
    # the tasks of one step share their conditions (a bulk trigger): look back once
    seen: dict[tuple[Condition, ...], dict[int, str]] = {}
    for match_id, row in zip(match_ids, waiting, strict=True):
        pending = row.task.pending
        if not any(look_back_start(c) for c in pending):
            continue
        if pending not in seen:
            seen[pending] = await look_back(repo, conn, tenant_id=tenant_id, conditions=pending)
        if seen[pending]:
            met.append(MetAlready(match_id, seen[pending]))
    return met


async def satisfy_met(
    satisfier: LookBackSatisfier | None, conn: Conn, met: Sequence[MetAlready]
) -> None:
    """Satisfy (and maybe fire) what a look-back met, inside the caller's transaction."""
    if not met:
        return
    if satisfier is None:  # an assembly fault, not a request's: never drop a met condition
        raise RuntimeError("a look-back met a condition but no match service is wired")
    for m in met:
        await satisfier.satisfy_now(conn, match_id=m.match_id, found=m.found)


def has_sleep(rows: Sequence[NewTaskRow]) -> bool:
    """Whether a WAITING task among ``rows`` waits for a sleep (the timer loop wakes up)."""
    return any(
        c.kind is ConditionKind.SLEEP
        for r in rows
        if r.task.status is TaskStatus.WAITING
        for c in r.task.pending
    )
