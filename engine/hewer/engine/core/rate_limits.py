"""Rate limits (no I/O): definitions, what a task consumes, and fixed-window buckets.

Semantics are Hatchet's: a bucket allows ``limit`` units per window and resets to the full
limit once the window has passed (a fixed window, not a trickle); a task takes all of its
limits' units or none. Unlike Hatchet, a window starts at its first debit rather than at the
previous refill, so a burst at the end of an idle window cannot be followed at once by a
second full burst. ``used`` is what the current window has consumed, which is also
what the REST API reports as a limit's ``value``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hewer.engine.core.cel import CelError, check, evaluate, evaluate_string

DURATIONS = ("SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")
MAX_KEY_LENGTH = 255


def check_rate_limit(key: str, limit: Any, duration: Any) -> tuple[str, int, str]:
    """Validated ``(key, limit, duration)``; raises ValueError with the reason."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"rate limit key must be 1-{MAX_KEY_LENGTH} characters")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("limit must be a non-negative integer")
    text = str(duration or "SECOND").upper()
    if text not in DURATIONS:
        raise ValueError(f"duration must be one of {', '.join(DURATIONS)}")
    return key, limit, text


# -- limits a task consumes ---------------------------------------------------------------

# A fixed window, as Hatchet's: the whole limit comes back once per window (no trickle).
WINDOW_SECONDS = {
    "SECOND": 1.0,
    "MINUTE": 60.0,
    "HOUR": 3600.0,
    "DAY": 86400.0,
    "WEEK": 7 * 86400.0,
    "MONTH": 30 * 86400.0,
    "YEAR": 365 * 86400.0,
}
_DURATION_NUMBERS = DURATIONS  # the proto enum's order


class InvalidRateLimit(ValueError):
    """A task rate limit the engine refuses at registration."""


class RateLimitEvaluationError(ValueError):
    """A task's rate limit could not be resolved for one run's input."""


@dataclass(frozen=True, slots=True)
class TaskRateLimit:
    """One rate limit of a task as registered: static parts or CEL expressions."""

    key: str
    key_expr: str | None
    units: int
    units_expr: str | None
    limit_expr: str | None  # None: a static limit (PutRateLimit/REST/RateLimit resource)
    duration: str


@dataclass(frozen=True, slots=True)
class ResolvedLimit:
    """What one run's task takes from one bucket (``limit`` set: a dynamic limit)."""

    key: str
    units: int
    limit: int | None
    duration: str

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "units": self.units, "limit": self.limit, "d": self.duration}

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> ResolvedLimit:
        limit = raw.get("limit")
        return ResolvedLimit(
            key=str(raw["key"]),
            units=int(raw["units"]),
            limit=None if limit is None else int(limit),
            duration=str(raw.get("d", "MINUTE")),
        )


def parse_task_rate_limits(raw: Any, *, where: str) -> tuple[TaskRateLimit, ...]:
    """Validated limits from a task's ``rate_limits`` (the proto as a dict)."""
    found: list[TaskRateLimit] = []
    for i, item in enumerate(raw or []):
        at = f"{where} rate_limits[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidRateLimit(f"{at}: expected an object")
        key = str(item.get("key", "") or "").strip()
        key_expr = _expr(item.get("key_expr"), at=at, what="key_expr")
        units_expr = _expr(item.get("units_expr"), at=at, what="units_expr")
        limit_expr = _expr(item.get("limit_values_expr"), at=at, what="limit_values_expr")
        if limit_expr is not None and limit_expr.strip() == "-1":
            limit_expr = None  # the SDK's "no limit given": the limit must exist already
        if not key and key_expr is None:
            raise InvalidRateLimit(f"{at}: key or key_expr is required")
        if key_expr is None and (not key or len(key) > MAX_KEY_LENGTH):
            raise InvalidRateLimit(f"{at}: key must be 1-{MAX_KEY_LENGTH} characters")
        units = item.get("units")
        units = 1 if units is None else units
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise InvalidRateLimit(f"{at}: units must be a positive integer, got {units!r}")
        if key_expr is not None and limit_expr is None:
            raise InvalidRateLimit(f"{at}: a dynamic key needs limit_values_expr")
        found.append(
            TaskRateLimit(
                key=key,
                key_expr=key_expr,
                units=units,
                units_expr=units_expr,
                limit_expr=limit_expr,
                duration=_duration(item.get("duration"), at=at),
            )
        )
    return tuple(found)


def _expr(raw: Any, *, at: str, what: str) -> str | None:
    if raw is None or str(raw).strip() == "":
        return None
    text = str(raw)
    try:
        check(text)
    except CelError as exc:
        raise InvalidRateLimit(f"{at}: {what} {text!r}: {exc}") from None
    return text


def _duration(raw: Any, *, at: str) -> str:
    if raw is None or raw == "":
        return "SECOND"  # the proto enum's zero value
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(_DURATION_NUMBERS):
        return _DURATION_NUMBERS[raw]
    text = str(raw).upper()
    if text not in DURATIONS:
        raise InvalidRateLimit(f"{at}: duration must be one of {', '.join(DURATIONS)}")
    return text


def resolve(limit: TaskRateLimit, variables: Mapping[str, Any]) -> ResolvedLimit:
    """The bucket, units and (dynamic) limit of ``limit`` for one run."""
    try:
        key = limit.key if limit.key_expr is None else evaluate_string(limit.key_expr, variables)
        units = limit.units if limit.units_expr is None else _int(limit.units_expr, variables)
        value = None if limit.limit_expr is None else _int(limit.limit_expr, variables)
    except CelError as exc:
        raise RateLimitEvaluationError(
            f"rate limit {limit.key_expr or limit.key!r}: {exc}"
        ) from None
    if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise RateLimitEvaluationError(
            f"rate limit key {key!r} must be 1-{MAX_KEY_LENGTH} characters"
        )
    if units < 1:
        raise RateLimitEvaluationError(f"rate limit {key!r}: units must be positive, got {units}")
    if value is not None and value < 0:
        value = None  # "-1": no limit value supplied
    if value is not None and units > value:
        raise RateLimitEvaluationError(
            f"rate limit {key!r}: a task takes {units} units but the limit is {value}"
        )
    return ResolvedLimit(key=key, units=units, limit=value, duration=limit.duration)


def _int(expression: str, variables: Mapping[str, Any]) -> int:
    value = evaluate(expression, variables)
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise CelError(f"expression {expression!r} did not evaluate to an integer")
    return int(value)


# -- the buckets --------------------------------------------------------------------------


@dataclass(slots=True)
class Bucket:
    limit: int
    used: int
    window_started: float  # epoch seconds
    window: float  # seconds

    def refill(self, now: float) -> None:
        if now - self.window_started >= self.window:
            self.used = 0
            self.window_started = now


@dataclass(frozen=True, slots=True)
class Refusal:
    key: str
    retry_at: float | None  # None: cannot pass as things stand (unknown key, units > limit)
    reason: str


class Ledger:
    """All-or-nothing debits against a tenant's buckets, in the order items are offered."""

    def __init__(self, buckets: Mapping[str, Bucket], *, now: float) -> None:
        self.buckets = dict(buckets)
        self.now = now
        self.touched: set[str] = set()

    def take(self, needs: Sequence[ResolvedLimit]) -> Refusal | None:
        for need in needs:
            bucket = self.buckets.get(need.key)
            if bucket is None:
                return Refusal(need.key, None, f"rate limit {need.key!r} does not exist")
            bucket.refill(self.now)
            if need.units > bucket.limit:
                return Refusal(
                    need.key,
                    None,
                    f"rate limit {need.key!r}: a task takes {need.units} units "
                    f"but the limit is {bucket.limit}",
                )
            if bucket.used + need.units > bucket.limit:
                return Refusal(
                    need.key,
                    bucket.window_started + bucket.window,
                    f"rate limit {need.key!r} exhausted ({bucket.used}/{bucket.limit} "
                    f"per {_window_name(bucket.window)})",
                )
        for need in needs:
            bucket = self.buckets[need.key]
            if bucket.used == 0:
                # a window starts with its first debit, so the limit's units are never split
                # across a boundary that began before anyone used them
                bucket.window_started = self.now
            bucket.used += need.units
            self.touched.add(need.key)
        return None


def _window_name(seconds: float) -> str:
    for name, value in WINDOW_SECONDS.items():
        if value == seconds:
            return name.lower()
    return f"{seconds:g}s"
