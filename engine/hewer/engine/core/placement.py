"""Placement: which workers may take a queued task, and which of them it prefers.

Pure decisions, fed by the scheduler: desired worker labels (from the step's registration or
the trigger), the workflow's sticky strategy with the task's desired worker, and the labels
each worker registered or upserted. Semantics follow Hatchet's scheduler:

* a desired label is met when the worker has the key and ``worker value <comparator> desired
  value`` holds; a met label adds its ``weight`` (default 100) to the worker's score, an unmet
  ``required`` label excludes the worker;
* ``GREATER_THAN`` and the other ordering comparators compare integers only; ``EQUAL`` and
  ``NOT_EQUAL`` compare values of the same type (an int and a string label meet neither);
* ``HARD`` sticky: only the desired worker may take the task (it waits for it); ``SOFT``: the
  desired worker ranks first, anyone else may take it when it has no room. A desired worker
  without a sticky strategy (a child spawned with ``sticky=True`` whose workflow has none) is
  a soft preference.

Unlike Hatchet, labels still count for sticky tasks (Hatchet ignores them once sticky is
set): a required label is never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hewer.engine.core.model import TaskSnapshot, WorkflowVersionDef

DEFAULT_WEIGHT = 100
STICKY_STRATEGIES = ("SOFT", "HARD")


class InvalidLabel(ValueError):
    """A desired worker label the engine refuses; the message names the label."""


class Comparator(StrEnum):
    EQUAL = "EQUAL"
    NOT_EQUAL = "NOT_EQUAL"
    GREATER_THAN = "GREATER_THAN"
    GREATER_THAN_OR_EQUAL = "GREATER_THAN_OR_EQUAL"
    LESS_THAN = "LESS_THAN"
    LESS_THAN_OR_EQUAL = "LESS_THAN_OR_EQUAL"


# the proto enum's numbers, for callers that send the comparator as an int
_BY_NUMBER = dict(enumerate(Comparator))
_ORDERING = frozenset(
    {
        Comparator.GREATER_THAN,
        Comparator.GREATER_THAN_OR_EQUAL,
        Comparator.LESS_THAN,
        Comparator.LESS_THAN_OR_EQUAL,
    }
)


@dataclass(frozen=True, slots=True)
class DesiredLabel:
    key: str
    value: str | int
    comparator: Comparator = Comparator.EQUAL
    weight: int = DEFAULT_WEIGHT
    required: bool = False


def parse_desired_labels(raw: Mapping[str, Any] | None, *, where: str) -> tuple[DesiredLabel, ...]:
    """Labels in the proto's dict form (``{key: {str_value|int_value, comparator, ...}}``).

    Raises :class:`InvalidLabel` for a label without a value, an unknown comparator or an
    ordering comparator on a string value.
    """
    labels: list[DesiredLabel] = []
    for key, spec in sorted(dict(raw or {}).items()):
        what = f"{where}: desired worker label {key!r}"
        if not isinstance(spec, Mapping):
            raise InvalidLabel(f"{what} must be an object")
        value: str | int
        if spec.get("int_value") is not None:
            value = _as_int(spec["int_value"], what)
        elif spec.get("str_value") is not None:
            value = str(spec["str_value"])
        else:
            raise InvalidLabel(f"{what} has no value (set str_value or int_value)")
        comparator = _comparator(spec.get("comparator"), what)
        if comparator in _ORDERING and not isinstance(value, int):
            raise InvalidLabel(
                f"{what}: comparator {comparator.value} compares integers, "
                f"got the string value {value!r}"
            )
        weight = spec.get("weight")
        labels.append(
            DesiredLabel(
                key=str(key),
                value=value,
                comparator=comparator,
                weight=DEFAULT_WEIGHT if weight is None else _as_int(weight, what),
                required=bool(spec.get("required", False)),
            )
        )
    return tuple(labels)


def _as_int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidLabel(f"{what}: {value!r} is not an integer") from None


def _comparator(raw: Any, what: str) -> Comparator:
    if raw is None or raw == "":
        return Comparator.EQUAL
    if isinstance(raw, int) and not isinstance(raw, bool):
        found = _BY_NUMBER.get(raw)
    else:
        found = Comparator.__members__.get(str(raw))
    if found is None:
        raise InvalidLabel(f"{what}: unknown comparator {raw!r}")
    return found


def labels_to_json(labels: Sequence[DesiredLabel]) -> str | None:
    """The stored form (a JSON object by key); None when there are no labels."""
    if not labels:
        return None
    return json.dumps(
        {
            label.key: {
                "value": label.value,
                "comparator": label.comparator.value,
                "weight": label.weight,
                "required": label.required,
            }
            for label in labels
        }
    )


def labels_from_json(stored: Any) -> tuple[DesiredLabel, ...]:
    """Back from the stored form (text or an already decoded object)."""
    if stored is None:
        return ()
    data = json.loads(stored) if isinstance(stored, str | bytes) else stored
    return tuple(
        DesiredLabel(
            key=str(key),
            value=spec["value"],
            comparator=Comparator(spec.get("comparator", "EQUAL")),
            weight=int(spec.get("weight", DEFAULT_WEIGHT)),
            required=bool(spec.get("required", False)),
        )
        for key, spec in dict(data).items()
    )


def _met(have: str | int, label: DesiredLabel) -> bool:
    want = label.value
    if label.comparator in _ORDERING:
        if not (_is_int(have) and _is_int(want)):
            return False
        assert isinstance(have, int) and isinstance(want, int)
        if label.comparator is Comparator.GREATER_THAN:
            return have > want
        if label.comparator is Comparator.GREATER_THAN_OR_EQUAL:
            return have >= want
        if label.comparator is Comparator.LESS_THAN:
            return have < want
        return have <= want
    if _is_int(have) != _is_int(want):
        return False  # an int and a string label are neither equal nor unequal
    return (have == want) == (label.comparator is Comparator.EQUAL)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def label_score(
    desired: Sequence[DesiredLabel], worker_labels: Mapping[str, str | int]
) -> int | None:
    """The sum of the weights of the met labels; None when a required label is not met."""
    score = 0
    for label in desired:
        have = worker_labels.get(label.key)
        if have is not None and _met(have, label):
            score += label.weight
        elif label.required:
            return None
    return score


def rank(
    *,
    worker_id: str,
    worker_labels: Mapping[str, str | int],
    desired_worker_id: str | None,
    sticky: str | None,
    labels: Sequence[DesiredLabel],
) -> tuple[int, int] | None:
    """How much a task wants this worker (higher is better); None: the worker may not take it.

    The desired worker comes first, then the label score.
    """
    score = label_score(labels, worker_labels)
    if score is None:
        return None
    if desired_worker_id is None:
        return (0, score)
    if worker_id == desired_worker_id:
        return (1, score)
    if sticky == "HARD":
        return None
    return (0, score)


def inherited_worker(
    *,
    readable_id: str,
    parents: Mapping[str, Sequence[str]],
    ran_on: Mapping[str, str | None],
) -> str | None:
    """The worker a sticky DAG task should go to: the one that ran its first parent.

    ``parents`` maps each step to its parents in declaration order, ``ran_on`` each created
    task to the worker that ran it (None for a skipped task, which passes on what it would
    have inherited).
    """
    seen: set[str] = set()
    chain = parents.get(readable_id, ())
    while chain:
        first = chain[0]
        if first in seen:
            return None
        seen.add(first)
        worker = ran_on.get(first)
        if worker is not None:
            return worker
        chain = parents.get(first, ())
    return None


def desired_worker(
    *,
    version: WorkflowVersionDef,
    tasks: Sequence[TaskSnapshot],
    readable_id: str,
    run_desired: str | None,
) -> str | None:
    """The desired worker of a task being queued: in a sticky workflow the worker its first
    parent ran on, else (a root, or no sticky strategy) the run's own (a sticky child spawn's
    parent worker)."""
    if version.sticky:
        inherited = inherited_worker(
            readable_id=readable_id,
            parents={s.readable_id: s.parents for s in version.steps},
            ran_on={t.readable_id: t.worker_id for t in tasks},
        )
        if inherited is not None:
            return inherited
    return run_desired
