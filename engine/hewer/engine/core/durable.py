"""The durable event log, decided purely: what a node asked for, which branch holds a node,
and what a satisfied node hands back to the task.

A durable task's log is an ordered list of nodes per invocation (node ids restart at 1 each
time the task is assigned). A node records what the task asked for (its idempotency key)
and, once satisfied, the result. On replay the task walks the log again: a node that exists
must be asked for with the same key, otherwise the run is not deterministic and the task is
told so (the SDK raises ``NonDeterminismError``).

Branches (``BranchDurableTask``): branch ``b`` starts at node ``first_node_id`` of its parent
branch; nodes before that are read from the parent, so a reset from node 2 keeps node 1's
result and re-executes the rest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from hewer.engine.core.conditions import Condition, ConditionKind
from hewer.engine.core.dag import decode_output

ROOT_BRANCH = 1
# The pre-eviction API (``RegisterDurableEvent``, SDKs for engines before v0.80) names its
# waits by signal key; they are logged on this branch, which no invocation reads.
SIGNAL_BRANCH = 0
# Hatchet's message for a cancelled child, which the SDK raises in the parent
CHILD_CANCELLED = "task was cancelled"


class EntryKind(StrEnum):
    WAIT_FOR = "WAIT_FOR"
    MEMO = "MEMO"
    RUN = "RUN"


class NonDeterminism(ValueError):
    """A replay asked for something other than what the log recorded at this node."""

    def __init__(self, *, node_id: int, recorded: EntryKind, asked: EntryKind) -> None:
        what = (
            f"a different {asked.value.lower()}"
            if recorded is asked
            else f"{asked.value} where the log recorded {recorded.value}"
        )
        super().__init__(
            f"non-determinism detected at node {node_id}: the replay asked for {what}; "
            "a durable task must issue the same waits, memos and spawns in the same order "
            "on every replay"
        )
        self.node_id = node_id


@dataclass(frozen=True, slots=True)
class Branch:
    branch_id: int
    parent_branch_id: int
    first_node_id: int


def branch_holding(branches: Mapping[int, Branch], *, current: int, node_id: int) -> int:
    """The branch whose log holds ``node_id`` when reading from ``current``."""
    branch = current
    seen: set[int] = set()
    while branch in branches and node_id < branches[branch].first_node_id:
        if branch in seen:  # a cycle cannot be created through the API; never loop forever
            break
        seen.add(branch)
        branch = branches[branch].parent_branch_id
    return branch


def is_visible(
    node: tuple[int, int],
    branches: Mapping[int, Branch],
    *,
    current: int,
    logged: Container[tuple[int, int]],
) -> bool:
    """Whether the log read from branch ``current`` holds ``(branch, node id)``: the branch
    that holds the node id, or the current branch when that one never reached the node
    (``services/durable.py`` writes it there). Other entries belong to abandoned branches."""
    branch_id, node_id = node
    holder = branch_holding(branches, current=current, node_id=node_id)
    return branch_id == holder or (branch_id == current and (holder, node_id) not in logged)


@dataclass(frozen=True, slots=True)
class LoggedNode:
    """An entry of the log as delivery sees it."""

    branch_id: int
    node_id: int
    kind: EntryKind
    satisfied_order: int | None  # None while not satisfied


def deliverable(
    nodes: Iterable[LoggedNode],
    branches: Mapping[int, Branch],
    *,
    current: int,
    reached: int,
) -> list[LoggedNode]:
    """The satisfied waits and child runs the current invocation may be handed, in the order
    they were satisfied.

    A replay re-asks for its nodes one by one; results of nodes it waits on concurrently
    (``asyncio.gather`` over two children) must resolve in the order they first did, or the
    task continues down a different path and meets non-determinism. So delivery stops at the
    first satisfied node the invocation has not reached yet (``node_id > reached``): the
    nodes satisfied after it wait until the replay asks for it. A node the invocation adds
    comes after every recorded one, so only a replay that diverges can hold it back.
    """
    by_key = {(n.branch_id, n.node_id): n for n in nodes}
    seen = [
        node
        for key, node in by_key.items()
        if node.kind is not EntryKind.MEMO
        and node.satisfied_order is not None
        and is_visible(key, branches, current=current, logged=by_key)
    ]
    seen.sort(key=lambda n: n.satisfied_order or 0)
    ready: list[LoggedNode] = []
    for node in seen:
        if node.node_id > reached:
            break
        ready.append(node)
    return ready


class WaitedNode(Protocol):
    """A node a worker says it waits for (``worker_status``)."""

    @property
    def task_id(self) -> str: ...
    @property
    def invocation(self) -> int: ...
    @property
    def branch_id(self) -> int: ...
    @property
    def node_id(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PollAnswer:
    # (task, invocation) pairs that are no longer their task's current one: dropped
    stale: list[tuple[str, int]]
    # task -> the (branch, node)s it waits for, for the tasks with a waited node satisfied:
    # what is deliverable goes out again (a completion may have been lost with a stream)
    resend: dict[str, frozenset[tuple[int, int]]]


def answer_poll(
    waiting: Iterable[WaitedNode],
    *,
    current: Mapping[str, int],
    satisfied: AbstractSet[tuple[str, int, int]],
) -> PollAnswer:
    """A worker's poll, from each task's current invocation (``current``; a task missing
    from it is unknown and ignored) and the waited ``(task, branch, node)``s satisfied. Only
    tasks with a satisfied waited node are handed anything: reading every waiting task's log
    on every poll (each second) made the poll cost grow with the runs a worker holds."""
    stale: set[tuple[str, int]] = set()
    asked: dict[str, set[tuple[int, int]]] = {}
    due: set[str] = set()
    for w in waiting:
        invocation = current.get(w.task_id)
        if invocation is None:
            continue
        if w.invocation < invocation:
            stale.add((w.task_id, w.invocation))
            continue
        asked.setdefault(w.task_id, set()).add((w.branch_id, w.node_id))
        if (w.task_id, w.branch_id, w.node_id) in satisfied:
            due.add(w.task_id)
    return PollAnswer(stale=sorted(stale), resend={t: frozenset(asked[t]) for t in sorted(due)})


def _digest(parts: Iterable[str]) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.digest()


def wait_key(conditions: Sequence[Condition]) -> bytes:
    """What a wait asked for, independent of the or-group ids (random per call in the SDK)
    and of the order conditions were listed in."""
    groups: dict[str, list[str]] = {}
    for c in conditions:
        described = json.dumps(
            [c.kind.value, c.sleep_seconds, c.event_key, c.event_scope, c.expression]
        )
        groups.setdefault(c.or_group_id, []).append(described)
    normalized = sorted(json.dumps(sorted(members)) for members in groups.values())
    return _digest(["WAIT_FOR", *normalized])


def run_key(*, workflow_name: str, input_json: str, child_key: str | None) -> bytes:
    """What a child spawn asked for. An explicit child key names the child by itself."""
    if child_key:
        return _digest(["RUN", workflow_name, "key", child_key])
    return _digest(["RUN", workflow_name, input_json])


def memo_key(key: bytes) -> bytes:
    return hashlib.sha256(b"MEMO\x00" + key).digest()


def check_entry(
    *, node_id: int, recorded_kind: str, recorded_key: bytes, kind: EntryKind, key: bytes
) -> None:
    """Raise :class:`NonDeterminism` unless the recorded node is what is asked for now."""
    recorded = EntryKind(recorded_kind)
    if recorded is not kind or bytes(recorded_key) != key:
        raise NonDeterminism(node_id=node_id, recorded=recorded, asked=kind)


def wait_result(satisfied: Iterable[tuple[str, Any]]) -> bytes:
    """What a satisfied wait hands back: ``{"CREATE": {readable_data_key: [data, ...]}}``
    for the conditions that were met (the SDK reads the first key and its first item)."""
    by_key: dict[str, list[Any]] = {}
    for readable_data_key, data in satisfied:
        by_key.setdefault(readable_data_key, []).append(data)
    return json.dumps({"CREATE": by_key}).encode()


def sleep_data(sleep_for: str) -> dict[str, str]:
    return {"sleep_duration": sleep_for}


@dataclass(frozen=True, slots=True)
class ChildTask:
    readable_id: str
    status: str
    output: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    result: bytes | None
    is_failure: bool
    error_message: str | None


def child_outcome(tasks: Sequence[ChildTask]) -> ChildOutcome:
    """A finished child run as its parent sees it: a single task's output as is, a DAG's as
    ``{task: output}``; a failed or cancelled child is an error the SDK raises."""
    for task in tasks:
        if task.status == "FAILED":
            return ChildOutcome(None, True, task.error or "child task failed")
    for task in tasks:
        if task.status == "CANCELLED":
            return ChildOutcome(None, True, CHILD_CANCELLED)
    outputs = {t.readable_id: decode_output(t.output) for t in tasks}
    if len(tasks) == 1:
        return ChildOutcome(json.dumps(outputs[tasks[0].readable_id]).encode(), False, None)
    return ChildOutcome(json.dumps(outputs).encode(), False, None)


def durable_conditions(conditions: Sequence[Condition]) -> None:
    """Refuse a wait the engine could never satisfy: no conditions at all."""
    if not conditions:
        raise ValueError("a durable wait needs at least one sleep or user-event condition")
    for c in conditions:
        if c.kind not in (ConditionKind.SLEEP, ConditionKind.USER_EVENT):
            raise ValueError(f"a durable wait cannot wait for a {c.kind.value} condition")
