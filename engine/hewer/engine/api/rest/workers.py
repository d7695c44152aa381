"""Workers: list, get, and pause/resume (``PATCH {isPaused}``).

The Python SDK pauses its worker with ``PATCH {isPaused: true}`` on every graceful shutdown,
and the e2e tests read ``status``: INACTIVE once the last heartbeat is 5 s old (the SDK
beats every 4 s), else PAUSED if paused, else ACTIVE.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from hatchet_sdk.clients.rest.models.update_worker_request import UpdateWorkerRequest
from hatchet_sdk.clients.rest.models.worker import Worker
from hatchet_sdk.clients.rest.models.worker_label import WorkerLabel
from hatchet_sdk.clients.rest.models.worker_list import WorkerList
from hatchet_sdk.clients.rest.models.worker_runtime_info import WorkerRuntimeInfo
from hatchet_sdk.clients.rest.models.worker_slot_config import WorkerSlotConfig
from hatchet_sdk.clients.rest.models.worker_status import WorkerStatus
from hatchet_sdk.clients.rest.models.worker_type import WorkerType
from pydantic import ValidationError

from hewer.engine.api.rest.context import control, path_uuid, reads, respond, tenant_id
from hewer.engine.api.rest.convert import Row, as_object, meta, pagination
from hewer.engine.api.rest.errors import NotFound
from hewer.engine.api.rest.params import (
    Query,
    parse_enum_values,
    parse_kv_list,
    read_json,
    validate_body,
)

routes = web.RouteTableDef()

HEARTBEAT_STALE_AFTER = timedelta(seconds=5)
MAX_LIMIT = 1000
_LABEL_NAMESPACE = uuid.UUID("0b8f7c1e-3f4a-4c55-8f0e-6b7a9d2c4e10")
# runtime_info may be stored in the proto's JSON names or in snake case
_RUNTIME_KEYS = {
    "sdkVersion": "sdkVersion",
    "sdk_version": "sdkVersion",
    "language": "language",
    "languageVersion": "languageVersion",
    "language_version": "languageVersion",
    "os": "os",
    "extra": "runtimeExtra",
    "runtimeExtra": "runtimeExtra",
}


def worker_status(
    *, last_heartbeat_at: datetime | None, is_paused: bool, now: datetime
) -> WorkerStatus:
    if last_heartbeat_at is None or now - last_heartbeat_at >= HEARTBEAT_STALE_AFTER:
        return WorkerStatus.INACTIVE
    return WorkerStatus.PAUSED if is_paused else WorkerStatus.ACTIVE


def label_value(value: Any) -> str:
    """A label value as text; proto-shaped values (``{strValue|intValue}``) are unwrapped."""
    if isinstance(value, Mapping):
        for key in ("strValue", "str_value", "intValue", "int_value", "value"):
            if value.get(key) is not None:
                return str(value[key])
        return ""
    return "" if value is None else str(value)


def worker_labels(
    worker_id: str, labels: Mapping[str, Any], created_at: datetime
) -> list[WorkerLabel]:
    return [
        WorkerLabel(
            metadata=meta(uuid.uuid5(_LABEL_NAMESPACE, f"{worker_id}/{key}"), created_at),
            key=key,
            value=label_value(value),
        )
        for key, value in sorted(labels.items())
    ]


def runtime_info(raw: Mapping[str, Any]) -> WorkerRuntimeInfo | None:
    """Best effort: the SDK model is optional, so a shape it rejects is left out."""
    data = {_RUNTIME_KEYS[k]: v for k, v in raw.items() if k in _RUNTIME_KEYS and v is not None}
    if isinstance(data.get("language"), str):
        data["language"] = data["language"].upper()
    if not data:
        return None
    try:
        return WorkerRuntimeInfo.model_validate(data)
    except ValidationError:
        return None


def slot_config(limits: Mapping[str, Any], used: Mapping[str, int]) -> dict[str, WorkerSlotConfig]:
    out: dict[str, WorkerSlotConfig] = {}
    for slot_type, limit in limits.items():
        total = int(limit)
        out[str(slot_type)] = WorkerSlotConfig(
            limit=total, available=max(0, total - used.get(str(slot_type), 0))
        )
    return out


def worker_model(row: Row, *, used: Mapping[str, int]) -> Worker:
    worker_id = str(row["id"])
    created_at: datetime = row["created_at"]
    return Worker(
        metadata=meta(worker_id, created_at, row["last_heartbeat_at"]),
        name=row["name"],
        type=WorkerType.SELFHOSTED,
        lastHeartbeatAt=row["last_heartbeat_at"],
        lastListenerEstablished=row["last_listener_established"],
        actions=list(row["actions"] or ()),
        status=worker_status(
            last_heartbeat_at=row["last_heartbeat_at"],
            is_paused=bool(row["is_paused"]),
            now=row["db_now"],
        ),
        slotConfig=slot_config(as_object(row["slot_config"]), used),
        labels=worker_labels(worker_id, as_object(row["labels"]), created_at),
        runtimeInfo=runtime_info(as_object(row["runtime_info"])),
    )


def matches_labels(worker: Worker, wanted: Mapping[str, str]) -> bool:
    have = {label.key: label.value for label in worker.labels or ()}
    return all(have.get(k) == v for k, v in wanted.items())


async def _workers(request: web.Request, worker_id: str | None = None) -> list[Worker]:
    db, tenant = reads(request), tenant_id(request)
    rows = await db.rest_workers(tenant, worker_id=worker_id)
    used = await db.rest_worker_used_slots(tenant, [str(r["id"]) for r in rows])
    return [worker_model(r, used=used.get(str(r["id"]), {})) for r in rows]


async def _one_worker(request: web.Request, worker_id: str) -> Worker:
    found = await _workers(request, worker_id)
    if not found:
        raise NotFound(f"worker {worker_id} not found")
    return found[0]


@routes.get("/api/v1/tenants/{tenant}/worker")
async def list_workers(request: web.Request) -> web.Response:
    q = Query(request.query)
    statuses = q.many("statuses")
    wanted_status = (
        None if statuses is None else set(parse_enum_values(statuses, WorkerStatus, "statuses"))
    )
    labels = q.many("labels")
    wanted_labels = {} if labels is None else parse_kv_list(labels, "labels")
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=MAX_LIMIT, maximum=MAX_LIMIT)
    # Few workers per tenant: filter on the computed status in Python.
    workers: Sequence[Worker] = [
        w
        for w in await _workers(request)
        if (wanted_status is None or (w.status and w.status.value in wanted_status))
        and matches_labels(w, wanted_labels)
    ]
    return respond(
        WorkerList(
            rows=list(workers[offset : offset + limit]),
            pagination=pagination(total=len(workers), offset=offset, limit=limit),
        )
    )


@routes.get("/api/v1/workers/{worker}")
async def get_worker(request: web.Request) -> web.Response:
    return respond(await _one_worker(request, path_uuid(request, "worker")))


@routes.patch("/api/v1/workers/{worker}")
async def update_worker(request: web.Request) -> web.Response:
    worker_id = path_uuid(request, "worker")
    body = validate_body(UpdateWorkerRequest, await read_json(request))
    await _one_worker(request, worker_id)  # 404 before any change for another tenant's id
    if body.is_paused is not None:
        changed = await control(request).set_worker_paused(
            tenant_id=tenant_id(request), worker_id=worker_id, paused=body.is_paused
        )
        if not changed:
            raise NotFound(f"worker {worker_id} not found")
    return respond(await _one_worker(request, worker_id))
