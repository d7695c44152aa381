"""DAG task conditions (``wait_for``, ``skip_if``, ``cancel_if``): parsing and the CNF rule.

The SDK sends a step's conditions as three lists (parent-output overrides, sleeps, user
events); each condition names an action (QUEUE for ``wait_for``, SKIP, CANCEL) and an
or-group id. Bare conditions get their own group, ``or_(a, b)`` shares one. An action fires
when every or-group of that action has at least one satisfied condition (conjunctive normal
form); when several fire at once SKIP wins over CANCEL over QUEUE (Hatchet's precedence).

Parent-output conditions are decided when the step's parents have all completed (task
completion satisfies them); sleeps and user events stay pending in the match table
(``task_match_conditions``) until the timer loop or event ingestion satisfies them. A task
without parents (a root, the on-failure task) waits on all its conditions from the moment it
is created; a parent-output condition cannot name a parent it does not have.

A user-event condition with ``consider_events_since`` also counts the events stored since
that time, when its match is created (the look-back).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from hewer.engine.core import cel
from hewer.engine.core.durations import InvalidDuration, parse_duration


class Action(StrEnum):
    QUEUE = "QUEUE"
    SKIP = "SKIP"
    CANCEL = "CANCEL"
    CREATE = "CREATE"  # a durable wait: satisfy its log entry (core/durable.py)


class ConditionKind(StrEnum):
    PARENT = "PARENT"
    SLEEP = "SLEEP"
    USER_EVENT = "USER_EVENT"
    CHILD = "CHILD"  # a durable task's child run finished


DAG_ACTIONS = frozenset({Action.QUEUE, Action.SKIP, Action.CANCEL})
DURABLE_ACTIONS = frozenset({Action.CREATE})


# when several actions are complete at once the first one here wins
PRECEDENCE = (Action.SKIP, Action.CANCEL, Action.QUEUE, Action.CREATE)


class InvalidCondition(ValueError):
    """A condition the engine refuses at registration; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    kind: ConditionKind
    action: Action
    or_group_id: str
    readable_data_key: str
    expression: str = ""  # CEL: over ``output`` (parent) or ``input`` (event payload)
    parent: str = ""  # PARENT: the parent's readable id
    sleep_seconds: float = 0.0  # SLEEP
    sleep_for: str = ""  # SLEEP: the duration as sent ("5s"), handed back when it fires
    event_key: str = ""  # USER_EVENT
    event_scope: str = ""  # USER_EVENT: only events pushed with this scope, when set
    # USER_EVENT: an event stored since this time (RFC 3339) satisfies the condition at once
    events_since: str = ""


@dataclass(frozen=True, slots=True)
class Satisfied:
    """A condition's state in a pending match: its group, action, and whether it is met."""

    action: Action
    or_group_id: str
    satisfied: bool


def parse_conditions(
    raw: Mapping[str, Any] | None,
    *,
    parents: Sequence[str],
    where: str,
    actions: frozenset[Action] = DAG_ACTIONS,
) -> tuple[Condition, ...]:
    """The step's conditions from the registration dict (``TaskConditions`` rendered with
    proto field names); raises :class:`InvalidCondition` for anything the engine cannot
    honour (bad CEL, a bad sleep, a parent condition naming a task that is not a parent)."""
    if not raw:
        return ()
    found: list[Condition] = []
    for item in raw.get("parent_override_conditions", []) or []:
        base = _base(item, where=where, actions=actions)
        parent = str(item.get("parent_readable_id", "")).strip()
        if not parents:
            raise InvalidCondition(
                f"{where}: a parent condition names {parent!r}, but this task has no parents "
                "(a task without parents can wait only for sleeps and user events)"
            )
        if parent not in parents:
            raise InvalidCondition(
                f"{where}: a parent condition names {parent!r}, which is not a parent of "
                f"this task (parents: {', '.join(parents) or 'none'})"
            )
        expression = base["expression"] or "true"
        _check_cel(expression, where=where)
        found.append(
            Condition(kind=ConditionKind.PARENT, parent=parent, **base | {"expression": expression})
        )
    for item in raw.get("sleep_conditions", []) or []:
        base = _base(item, where=where, actions=actions)
        text = str(item.get("sleep_for", "")).strip()
        try:
            seconds = parse_duration(text)
        except InvalidDuration as exc:
            raise InvalidCondition(f"{where}: sleep condition: {exc}") from None
        if seconds <= 0:
            raise InvalidCondition(f"{where}: sleep condition: duration must be positive")
        found.append(
            Condition(kind=ConditionKind.SLEEP, sleep_seconds=seconds, sleep_for=text, **base)
        )
    for item in raw.get("user_event_conditions", []) or []:
        base = _base(item, where=where, actions=actions)
        key = str(item.get("user_event_key", "")).strip()
        if not key:
            raise InvalidCondition(f"{where}: user event condition has no event key")
        if base["expression"]:
            _check_cel(base["expression"], where=where)
        since = str(item.get("consider_events_since", "") or "")
        if since:
            _parse_since(since, where=where)
        found.append(
            Condition(
                kind=ConditionKind.USER_EVENT,
                event_key=key,
                event_scope=str(item.get("event_scope", "") or ""),
                events_since=since,
                **base,
            )
        )
    return tuple(found)


def _base(item: Mapping[str, Any], *, where: str, actions: frozenset[Action]) -> dict[str, Any]:
    base = item.get("base") or {}
    action_name = str(base.get("action", "CREATE"))
    try:
        action = Action(action_name)
    except ValueError:
        action = None
    if action not in actions:
        allowed = ", ".join(sorted(a.value for a in actions))
        raise InvalidCondition(
            f"{where}: condition action must be one of {allowed}, got {action_name!r}"
        ) from None
    group = str(base.get("or_group_id", "")).strip()
    if not group:
        raise InvalidCondition(f"{where}: condition has no or_group_id")
    return {
        "action": action,
        "or_group_id": group,
        "readable_data_key": str(base.get("readable_data_key", "")),
        "expression": str(base.get("expression", "") or ""),
    }


def _parse_since(text: str, *, where: str) -> datetime:
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidCondition(
            f"{where}: user event condition: consider_events_since {text!r} is not a timestamp"
        ) from None
    if since.tzinfo is None:
        raise InvalidCondition(
            f"{where}: user event condition: consider_events_since {text!r} has no time zone"
        )
    return since


def look_back_start(condition: Condition) -> datetime | None:
    """Since when stored events count for a user-event condition (None: only new ones).
    Parsing checked the timestamp, so this cannot fail for a parsed condition."""
    if condition.kind is not ConditionKind.USER_EVENT or not condition.events_since:
        return None
    return _parse_since(condition.events_since, where="user event condition")


def _check_cel(expression: str, *, where: str) -> None:
    try:
        cel.check(expression)
    except cel.CelError as exc:
        raise InvalidCondition(f"{where}: condition expression {expression!r}: {exc}") from None


def fired_action(conditions: Iterable[Satisfied]) -> Action | None:
    """The action that fires, if any: per action, every or-group has a satisfied member;
    among complete actions the first in :data:`PRECEDENCE` wins."""
    groups: dict[Action, dict[str, bool]] = {}
    for c in conditions:
        per_action = groups.setdefault(c.action, {})
        per_action[c.or_group_id] = per_action.get(c.or_group_id, False) or c.satisfied
    for action in PRECEDENCE:
        if action in groups and all(groups[action].values()):
            return action
    return None


def parent_condition_holds(condition: Condition, output: Any) -> bool:
    """A parent-output condition over the parent's decoded output. An expression that
    cannot be evaluated against this output (a missing field) does not hold."""
    try:
        return cel.evaluate(condition.expression, {"output": output}) is True
    except cel.CelError:
        return False


def event_condition_holds(expression: str, payload: Any) -> bool:
    if not expression:
        return True
    try:
        return cel.evaluate(expression, {"input": payload}) is True
    except cel.CelError:
        return False


@dataclass(frozen=True, slots=True)
class ParentsDecision:
    """What a conditioned task becomes once all its parents have completed.

    ``action`` None means WAITING on ``pending`` (its sleep and user-event conditions)."""

    action: Action | None
    pending: tuple[Condition, ...] = ()


def decide_at_parents(
    conditions: Sequence[Condition], outputs: Mapping[str, Any]
) -> ParentsDecision:
    """Hatchet's two phases, decided in one step: first the parent-output conditions (plus
    one implicit, satisfied "parent completed" QUEUE group per parent without a QUEUE
    override) pick SKIP, CANCEL or "go on"; going on with sleep or user-event conditions
    means waiting for them in the match table (the sleep starts now, when the parents are
    done), otherwise the task is queued.

    A ``wait_for`` on a parent's output that is false can never become true (the parent is
    final), so the task is skipped rather than left waiting forever.
    """
    states: list[Satisfied] = []
    overridden = {
        c.parent for c in conditions if c.kind is ConditionKind.PARENT and c.action is Action.QUEUE
    }
    for parent in outputs:
        if parent not in overridden:
            states.append(Satisfied(Action.QUEUE, f"parent-completed:{parent}", True))
    for c in conditions:
        if c.kind is ConditionKind.PARENT:
            holds = parent_condition_holds(c, outputs.get(c.parent))
            states.append(Satisfied(c.action, c.or_group_id, holds))
    fired = fired_action(states)
    if fired is None:
        return ParentsDecision(Action.SKIP)
    if fired is not Action.QUEUE:
        return ParentsDecision(fired)
    pending = tuple(c for c in conditions if c.kind is not ConditionKind.PARENT)
    if not pending:
        return ParentsDecision(Action.QUEUE)
    return ParentsDecision(None, pending)
