"""Parsing of path, query and body values, as the Hatchet SDKs send them.

Conventions (openapi-generator clients): arrays are repeated keys (``?statuses=A&statuses=B``),
booleans are ``true``/``false``, datetimes are ISO 8601 with a ``Z``, an offset or (from the
Python client, which formats with ``%z``) ``+0000``. Anything unparsable is a 400 that names
the parameter, never a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiMapping
from pydantic import BaseModel, ValidationError

from hewer.engine.api.rest.errors import BadRequest
from hewer.engine.core.json_input import JsonInputError, decode_json
from hewer.engine.services.reads import RunFilter

E = TypeVar("E", bound=Enum)
M = TypeVar("M", bound=BaseModel)

TASK_STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "CANCELLED", "FAILED")
# Bulk listings (external ids, bulk cancel/replay by filter) are capped so that one request
# cannot pull an unbounded id list into memory.
MAX_BULK_IDS = 50_000


def parse_uuid(value: str | None, what: str) -> str:
    """The canonical lower-case form of a UUID, or 400."""
    if value is None or value == "":
        raise BadRequest(f"{what} is required")
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise BadRequest(f"{what} must be a UUID") from None


def aware(value: datetime) -> datetime:
    """``value`` with UTC assumed when it carries no offset."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_datetime(value: str, what: str) -> datetime:
    """An aware datetime; a value without an offset is taken as UTC."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{what} must be an ISO 8601 date-time") from None
    return aware(parsed)


def parse_bool(value: str | None, what: str, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"{what} must be true or false")


def parse_int(
    value: str | None,
    what: str,
    *,
    default: int | None,
    minimum: int = 0,
    maximum: int | None = None,
) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{what} must be an integer") from None
    if number < minimum or (maximum is not None and number > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise BadRequest(f"{what} must be at least {minimum}{upper}")
    return number


def parse_enum_values(values: Iterable[str], enum: type[E], what: str) -> list[str]:
    allowed = {str(member.value) for member in enum}
    out: list[str] = []
    for value in values:
        if value not in allowed:
            raise BadRequest(f"{what}: unknown value {value!r}")
        out.append(value)
    return out


def parse_statuses(values: Iterable[str], what: str = "statuses") -> list[str]:
    out: list[str] = []
    for value in values:
        if value not in TASK_STATUSES:
            raise BadRequest(f"{what}: unknown status {value!r}")
        out.append(value)
    return out


def parse_kv_pairs(values: Iterable[str], what: str) -> list[tuple[str, str]]:
    """``["k:v", ...]`` (split at the first colon) into pairs; a key may repeat."""
    out: list[tuple[str, str]] = []
    for item in values:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise BadRequest(f"{what}: expected 'key:value', got {item!r}")
        out.append((key, value))
    return out


def parse_kv_list(values: Iterable[str], what: str) -> dict[str, str]:
    """``["k:v", ...]`` into a dict (a repeated key keeps its last value)."""
    return dict(parse_kv_pairs(values, what))


class Query:
    """Typed access to a query string; arrays accept both ``k=a&k=b`` and ``k[]=a``."""

    def __init__(self, params: MultiMapping[str]) -> None:
        self._params = params

    def one(self, name: str) -> str | None:
        value = self._params.get(name)
        return None if value is None else str(value)

    def many(self, *names: str) -> list[str] | None:
        """Every value given for any of ``names``; None when the parameter is absent."""
        values: list[str] = []
        present = False
        for name in names:
            for key in (name, f"{name}[]"):
                if key in self._params:
                    present = True
                    values.extend(str(v) for v in self._params.getall(key))
        # openapi-generator sends an empty list as nothing, but a bare "k=" is still "empty"
        values = [v for v in values if v != ""]
        return values if present else None

    def timestamp(self, name: str, *, required: bool = False) -> datetime | None:
        value = self.one(name)
        if value is None or value == "":
            if required:
                raise BadRequest(f"{name} is required")
            return None
        return parse_datetime(value, name)

    def id_value(self, name: str) -> str | None:
        value = self.one(name)
        return None if value is None or value == "" else parse_uuid(value, name)

    def id_values(self, *names: str) -> list[str] | None:
        values = self.many(*names)
        return None if values is None else [parse_uuid(v, names[0]) for v in values]

    def flag(self, name: str, *, default: bool) -> bool:
        return parse_bool(self.one(name), name, default=default)

    def integer(
        self, name: str, *, default: int, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = parse_int(self.one(name), name, default=default, minimum=minimum, maximum=maximum)
        assert value is not None
        return value

    def opt_integer(self, name: str, *, minimum: int = 0) -> int | None:
        return parse_int(self.one(name), name, default=None, minimum=minimum)


def run_filter_from_query(q: Query, *, metadata_default_any: bool = True) -> RunFilter:
    """The filters of ``GET .../workflow-runs`` (and of ``.../external-ids``).

    Several ``additional_metadata`` pairs are OR'ed unless ``additional_metadata_operator``
    is AND, as in Hatchet (with one pair both readings agree).
    """
    since = q.timestamp("since", required=True)
    assert since is not None
    statuses = q.many("statuses")
    metadata = q.many("additional_metadata")
    operator = q.one("additional_metadata_operator")
    if operator not in (None, "", "OR", "AND"):
        raise BadRequest("additional_metadata_operator must be OR or AND")
    metadata_any = metadata_default_any if operator in (None, "") else operator == "OR"
    return RunFilter(
        since=since,
        until=q.timestamp("until"),
        statuses=None if statuses is None else parse_statuses(statuses),
        workflow_ids=q.id_values("workflow_ids"),
        additional_metadata=(
            None if metadata is None else parse_kv_pairs(metadata, "additional_metadata")
        ),
        metadata_any=metadata_any,
        worker_id=q.id_value("worker_id"),
        parent_id=q.id_value("parent_task_external_id"),
        triggering_event_id=q.id_value("triggering_event_external_id"),
    )


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or 400 (an empty body counts as invalid)."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("request body is required")
    try:
        return decode_json(raw, what="request body")
    except JsonInputError as exc:
        raise BadRequest(str(exc)) from None


def validate_body(model: type[M], body: Any) -> M:
    """Validate a decoded body with an SDK request model; 400 with the first problem."""
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise BadRequest(f"invalid request body: {where}: {first.get('msg', 'invalid')}") from None
