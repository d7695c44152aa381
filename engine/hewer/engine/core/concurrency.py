"""Concurrency control as pure decisions: strategies, keys and who is admitted.

A task (or, for a DAG's workflow-level strategies, a whole run) is a *holder* of a chain of
concurrency slots, one per strategy it is subject to, in a fixed order. Each slot sits in a
*group*: a strategy and the key its CEL expression gave for this holder. A holder is
admitted to the queue when every slot of its chain is admitted; slots are admitted one
position after another, as Hatchet does, so a holder never takes a later slot while it
waits for an earlier one.

The services feed :func:`decide` with the groups that have waiting slots and apply what it
returns in one transaction; nothing here does I/O.

Strategies (Hatchet's names and semantics):

* ``GROUP_ROUND_ROBIN``: each key has its own quota of ``max_runs``; waiting slots are
  admitted by priority, then arrival. Keys never wait for each other, so with keys A x 10
  and B x 1 at ``max_runs=1``, B is admitted beside the first A, not after the tenth.
* ``CANCEL_IN_PROGRESS``: the newest ``max_runs`` of a key win; older ones, running or
  not, are cancelled.
* ``CANCEL_NEWEST``: the oldest ``max_runs`` keep running; whatever arrives while the key
  is full is cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hewer.engine.core.cel import CelError, check, evaluate_string


class Strategy(StrEnum):
    GROUP_ROUND_ROBIN = "GROUP_ROUND_ROBIN"
    CANCEL_IN_PROGRESS = "CANCEL_IN_PROGRESS"
    CANCEL_NEWEST = "CANCEL_NEWEST"


# Deprecated proto names that older SDKs may still send, and what they mean today.
_ALIASES = {"QUEUE_NEWEST": Strategy.GROUP_ROUND_ROBIN, "DROP_NEWEST": Strategy.CANCEL_NEWEST}
# Hatchet's default when a registration names no strategy (the proto's zero value).
DEFAULT_STRATEGY = Strategy.CANCEL_IN_PROGRESS
MAX_KEY_LENGTH = 255


class InvalidConcurrency(ValueError):
    """A concurrency setting the engine refuses at registration."""


class KeyEvaluationError(ValueError):
    """A key expression that failed for one holder's input (the task cannot be admitted)."""


@dataclass(frozen=True, slots=True)
class ConcurrencySpec:
    expression: str
    max_runs: int
    strategy: Strategy


def parse_specs(raw: Any, *, where: str) -> tuple[ConcurrencySpec, ...]:
    """Validated specs from a registration's ``concurrency`` value (one, a list, or none)."""
    if raw is None or raw == {} or raw == []:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    return tuple(
        _parse_one(item, where=f"{where} concurrency[{i}]") for i, item in enumerate(items)
    )


def _parse_one(raw: Any, *, where: str) -> ConcurrencySpec:
    if not isinstance(raw, Mapping):
        raise InvalidConcurrency(f"{where}: expected an object, got {type(raw).__name__}")
    expression = str(raw.get("expression", "")).strip()
    if not expression:
        raise InvalidConcurrency(f"{where}: expression is required")
    try:
        check(expression)
    except CelError as exc:
        raise InvalidConcurrency(f"{where}: expression {expression!r}: {exc}") from None
    max_runs_raw = raw.get("max_runs", 1)
    try:
        max_runs = int(max_runs_raw if max_runs_raw is not None else 1)
    except (TypeError, ValueError):
        raise InvalidConcurrency(f"{where}: max_runs must be an integer") from None
    if max_runs < 1:
        raise InvalidConcurrency(f"{where}: max_runs must be at least 1, got {max_runs}")
    return ConcurrencySpec(
        expression=expression,
        max_runs=max_runs,
        strategy=parse_strategy(raw.get("limit_strategy"), where=where),
    )


# the proto enum's numbers, for callers that send them rather than names
_NUMBERS = (
    "CANCEL_IN_PROGRESS",
    "DROP_NEWEST",
    "QUEUE_NEWEST",
    "GROUP_ROUND_ROBIN",
    "CANCEL_NEWEST",
)


def parse_strategy(raw: Any, *, where: str) -> Strategy:
    if raw is None or raw == "":
        return DEFAULT_STRATEGY
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(_NUMBERS):
        raw = _NUMBERS[raw]
    text = str(raw).upper()
    if text in _ALIASES:
        return _ALIASES[text]
    try:
        return Strategy(text)
    except ValueError:
        names = ", ".join(s.value for s in Strategy)
        raise InvalidConcurrency(
            f"{where}: unknown limit_strategy {raw!r} (expected one of {names})"
        ) from None


def key_variables(
    *,
    input: Mapping[str, Any],
    additional_metadata: Mapping[str, Any],
    workflow_run_id: str,
    parents: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The CEL variables of a concurrency or rate-limit expression, as Hatchet names them."""
    return {
        "input": dict(input),
        "additional_metadata": dict(additional_metadata),
        "workflow_run_id": workflow_run_id,
        "parents": dict(parents or {}),
    }


def evaluate_key(spec: ConcurrencySpec, variables: Mapping[str, Any]) -> str:
    """The group key of ``spec`` for one holder; raises :class:`KeyEvaluationError`."""
    try:
        key = evaluate_string(spec.expression, variables)
    except CelError as exc:
        raise KeyEvaluationError(f"concurrency key {spec.expression!r}: {exc}") from None
    if len(key) > MAX_KEY_LENGTH:
        raise KeyEvaluationError(
            f"concurrency key {spec.expression!r} is longer than {MAX_KEY_LENGTH} characters"
        )
    if "\x00" in key:
        raise KeyEvaluationError(f"concurrency key {spec.expression!r} contains a NUL character")
    return key


# -- admission ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot of a group, as the admission pass sees it."""

    id: int  # arrival order
    priority: int
    admitted: bool


@dataclass(frozen=True, slots=True)
class Group:
    strategy: Strategy
    max_runs: int
    slots: Sequence[Slot]


@dataclass(slots=True)
class Decision:
    admit: list[int] = field(default_factory=list)
    # slots whose holders lost to the strategy (CANCEL_IN_PROGRESS, CANCEL_NEWEST)
    cancel: list[int] = field(default_factory=list)


def decide(groups: Sequence[Group]) -> Decision:
    """Which waiting slots to admit and which slots' holders to cancel, for every group."""
    decision = Decision()
    for group in groups:
        _decide_group(group, decision)
    return decision


def _decide_group(group: Group, decision: Decision) -> None:
    waiting = [s for s in group.slots if not s.admitted]
    admitted = [s for s in group.slots if s.admitted]
    if group.strategy is Strategy.CANCEL_IN_PROGRESS:
        # the newest win (higher priority first), whether they run already or not
        ranked = sorted([*admitted, *waiting], key=lambda s: (-s.priority, -s.id))
        keep = ranked[: group.max_runs]
        decision.admit += sorted(s.id for s in keep if not s.admitted)
        decision.cancel += sorted(s.id for s in ranked[group.max_runs :])
        return
    free = max(0, group.max_runs - len(admitted))
    ordered = sorted(waiting, key=lambda s: (-s.priority, s.id))
    decision.admit += [s.id for s in ordered[:free]]
    if group.strategy is Strategy.CANCEL_NEWEST:
        decision.cancel += [s.id for s in ordered[free:]]
