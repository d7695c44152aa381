"""Cron expressions: validation and next-tick math, in UTC (no I/O).

Accepted forms, as Hatchet documents them:

* 5 fields: ``minute hour day-of-month month day-of-week``;
* 6 fields: a leading ``second`` field, then the five above;
* the aliases ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``) and ``@hourly``.

Fields take values, ``*``, ranges, lists and steps (``*/15``). Every time is UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import CroniterError, croniter

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class InvalidCron(ValueError):
    """An expression that is not a valid 5- or 6-field cron expression or alias."""


def normalize(expression: str) -> str:
    """The expression with surrounding and repeated blanks removed; raises InvalidCron."""
    text = " ".join(expression.split())
    if not text:
        raise InvalidCron("cron expression is required")
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise InvalidCron(
                f"unknown cron alias {text!r}: use one of {', '.join(sorted(ALIASES))}"
            )
        return text.lower()
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise InvalidCron(
            f"cron expression {text!r} must have 5 fields (minute hour day month weekday) "
            f"or 6 (with a leading second), got {len(fields)}"
        )
    try:
        _iter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidCron(f"invalid cron expression {text!r}: {exc}") from None
    return text


def _iter(expression: str, start: datetime) -> croniter:
    text = ALIASES.get(expression, expression)
    six = len(text.split(" ")) == 6
    return croniter(text, start, second_at_beginning=six)


def next_tick(expression: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (an aware datetime), in UTC."""
    start = after.astimezone(UTC)
    value = _iter(normalize(expression), start).get_next(datetime)
    assert isinstance(value, datetime)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value <= start:  # croniter rounds sub-second starts down; never return a past tick
        value = next_tick(expression, start + timedelta(seconds=1) - timedelta(microseconds=1))
    return value


def should_fire(due_at: datetime, now: datetime, *, grace_seconds: float) -> bool:
    """Whether a tick due at ``due_at`` still fires at ``now``.

    Ticks missed by more than the grace (the engine was down or stalled) are skipped, not
    back-filled: the cron just moves on to its next tick after ``now``.
    """
    return (now - due_at).total_seconds() <= grace_seconds


def code_crons(definition: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The ``cron_triggers`` of a registration (normalized, de-duplicated) and the input
    their runs get (``cron_input``, a JSON object sent as text). Raises InvalidCron."""
    expressions: list[str] = []
    for raw in definition.get("cron_triggers") or ():
        text = normalize(str(raw))
        if text not in expressions:
            expressions.append(text)
    raw_input = definition.get("cron_input")
    cron_input: dict[str, Any] = {}
    if isinstance(raw_input, str) and raw_input.strip():
        try:
            parsed = json.loads(raw_input)
        except ValueError:
            raise InvalidCron("cron_input is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise InvalidCron("cron_input must be a JSON object")
        cron_input = parsed
    elif isinstance(raw_input, dict):
        cron_input = raw_input
    return expressions, cron_input
