"""A small aiohttp client for the engine's REST API, as the operator uses it.

Connection failures, timeouts and 5xx answers raise :class:`EngineUnavailable` (retry
later); 4xx answers raise :class:`EngineRejected` with the engine's message (the request
itself is wrong: retrying it unchanged does not help). Lookups answer None for a 404.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["EngineClient", "EngineError", "EngineRejected", "EngineUnavailable"]

_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


class EngineError(Exception):
    """Base of the engine client's errors."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached or failed (connection refused, timeout, 5xx)."""


class EngineRejected(EngineError):
    """The engine refused the request (4xx); ``str(exc)`` is the engine's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _message(status: int, text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300] or f"HTTP {status}"
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            descriptions = [str(e.get("description", "")) for e in errors if isinstance(e, dict)]
            joined = "; ".join(d for d in descriptions if d)
            if joined:
                return joined
        for key in ("message", "description", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return text.strip()[:300] or f"HTTP {status}"


def _p(segment: str) -> str:
    return quote(segment, safe="")


class EngineClient:
    def __init__(self, *, base_url: str, token: str, tenant_id: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant_id = tenant_id
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT, headers=self._headers)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        missing_ok: bool = False,
        total_seconds: float | None = None,
    ) -> Any:
        """The decoded JSON answer; None for a 404 when ``missing_ok``."""
        url = f"{self.base_url}{path}"
        try:
            async with self._get_session().request(
                method,
                url,
                json=json_body,
                params=params,
                timeout=(
                    _TIMEOUT
                    if total_seconds is None
                    else aiohttp.ClientTimeout(total=total_seconds)
                ),
            ) as response:
                text = await response.text()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise EngineUnavailable(
                f"cannot reach the engine at {self.base_url}: {type(exc).__name__}: {exc}"
            ) from None
        if status >= 500:
            raise EngineUnavailable(f"the engine answered {status}: {_message(status, text)}")
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise EngineRejected(status, _message(status, text))
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError:
            raise EngineUnavailable(f"the engine answered non-JSON for {method} {path}") from None

    # -- paths ----------------------------------------------------------------------------

    @property
    def _hewer(self) -> str:
        return f"/api/v1/hewer/tenants/{self.tenant_id}"

    @property
    def _tenant(self) -> str:
        return f"/api/v1/tenants/{self.tenant_id}"

    # -- declared workflows -----------------------------------------------------------------

    async def put_declared_workflow(
        self, name: str, *, resource: str, definition: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PUT",
            f"{self._hewer}/declared-workflows/{_p(name)}",
            json_body={"resource": resource, "definition": definition},
        )
        return result

    async def get_declared_workflow(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.request(
            "GET", f"{self._hewer}/declared-workflows/{_p(name)}", missing_ok=True
        )
        return result

    async def delete_declared_workflow(self, name: str, *, resource: str) -> bool:
        """True if the engine had it (and now does not)."""
        result = await self.request(
            "DELETE",
            f"{self._hewer}/declared-workflows/{_p(name)}",
            params={"resource": resource},
            missing_ok=True,
        )
        return result is not None

    async def find_workflow(self, name: str) -> dict[str, Any] | None:
        """The engine's workflow of exactly this name (REST ``Workflow`` model), if any."""
        body = await self.request(
            "GET", f"{self._tenant}/workflows", params={"name": name, "limit": "50"}
        )
        for row in (body or {}).get("rows") or []:
            if isinstance(row, dict) and row.get("name") == name:
                return row
        return None

    # -- crons ----------------------------------------------------------------------------

    async def list_crons(self, *, workflow_id: str, cron_name: str | None = None) -> list[Any]:
        params = [("workflow_id", workflow_id), ("limit", "500")]
        if cron_name:
            params.append(("cron_name", cron_name))
        body = await self.request("GET", f"{self._tenant}/workflows/crons", params=params)
        rows = (body or {}).get("rows") or []
        return [
            r for r in rows if isinstance(r, dict) and r.get("workflowId") in (None, workflow_id)
        ]

    async def create_cron(self, workflow_name: str, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"{self._tenant}/workflows/{_p(workflow_name)}/crons", json_body=request
        )
        return result

    async def delete_cron(self, cron_id: str) -> bool:
        result = await self.request(
            "DELETE", f"{self._tenant}/workflows/crons/{_p(cron_id)}", missing_ok=True
        )
        return result is not None

    async def latest_run(
        self, *, workflow_id: str, metadata: tuple[str, str], since: datetime
    ) -> dict[str, Any] | None:
        """The newest run of the workflow carrying the metadata pair, if any."""
        body = await self.request(
            "GET",
            f"/api/v1/stable/tenants/{self.tenant_id}/workflow-runs",
            params=[
                ("since", since.isoformat()),
                ("workflow_ids", workflow_id),
                ("additional_metadata", f"{metadata[0]}:{metadata[1]}"),
                ("limit", "1"),
                ("only_tasks", "false"),
                ("include_payloads", "false"),
            ],
        )
        rows = (body or {}).get("rows") or []
        return rows[0] if rows and isinstance(rows[0], dict) else None

    # -- rate limits --------------------------------------------------------------------------

    async def put_rate_limit(self, key: str, *, limit: int, duration: str) -> dict[str, Any]:
        result = await self.request(
            "PUT",
            f"{self._hewer}/rate-limits/{_p(key)}",
            json_body={"limit": limit, "duration": duration},
        )
        return result if isinstance(result, dict) else {}

    async def delete_rate_limit(self, key: str) -> bool:
        result = await self.request(
            "DELETE", f"{self._hewer}/rate-limits/{_p(key)}", missing_ok=True
        )
        return result is not None

    async def get_rate_limit(self, key: str) -> dict[str, Any] | None:
        """The engine's rate limit row (Hatchet's ``RateLimit`` model) of this key, if any."""
        body = await self.request(
            "GET", f"{self._tenant}/rate-limits", params={"search": key, "limit": "500"}
        )
        for row in (body or {}).get("rows") or []:
            if isinstance(row, dict) and row.get("key") == key:
                return row
        return None

    # -- tokens and ownership ---------------------------------------------------------------

    async def create_token(
        self, *, name: str, expires_in_days: int, resource: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST",
            f"{self._hewer}/tokens",
            json_body={"name": name, "expiresInDays": expires_in_days, "resource": resource},
        )
        return result

    async def revoke_token(self, token_id: str) -> bool:
        result = await self.request(
            "DELETE", f"{self._hewer}/tokens/{_p(token_id)}", missing_ok=True
        )
        return result is not None

    async def record_owned(self, *, kind: str, object_id: str, resource: str) -> None:
        await self.request(
            "PUT",
            f"{self._hewer}/owned/{_p(kind)}/{_p(object_id)}",
            json_body={"resource": resource},
        )

    async def forget_owned(self, *, kind: str, object_id: str) -> None:
        await self.request(
            "DELETE", f"{self._hewer}/owned/{_p(kind)}/{_p(object_id)}", missing_ok=True
        )

    async def owned(self, resource: str) -> list[dict[str, Any]]:
        body = await self.request("GET", f"{self._hewer}/owned", params={"resource": resource})
        return [r for r in (body or {}).get("rows") or [] if isinstance(r, dict)]

    # -- autoscaling ------------------------------------------------------------------------

    def _pool_params(self, workflows: list[str], **extra: str) -> list[tuple[str, str]]:
        return [*(("workflow", w) for w in workflows), *extra.items()]

    async def pool_stats(self, pool: str, *, workflows: list[str]) -> dict[str, Any]:
        """The pool's queued/running work and workers (see ``api/rest/task_stats.py``)."""
        result = await self.request(
            "GET",
            f"{self._hewer}/worker-pools/{_p(pool)}/stats",
            params=self._pool_params(workflows),
        )
        return _pool_answer(result)

    async def wait_pool(
        self, pool: str, *, workflows: list[str], known_queued: int, wait_seconds: int
    ) -> dict[str, Any]:
        """Like :meth:`pool_stats`, answered once more than ``known_queued`` tasks are
        queued or after ``wait_seconds`` (the engine's long-poll)."""
        result = await self.request(
            "GET",
            f"{self._hewer}/worker-pools/{_p(pool)}/wait",
            params=self._pool_params(
                workflows, queued=str(known_queued), timeoutSeconds=str(wait_seconds)
            ),
            total_seconds=wait_seconds + 15,
        )
        return _pool_answer(result)

    async def report_pool(self, pool: str, *, report: dict[str, Any]) -> None:
        """Tell the engine a pool's replicas (and the scale decision, if any) for its
        dashboard; ``report`` carries ``namespace`` (see ``api/rest/pool_reports.py``)."""
        await self.request("PUT", f"{self._hewer}/worker-pools/{_p(pool)}/report", json_body=report)

    async def forget_pool_report(self, pool: str, *, namespace: str) -> None:
        await self.request(
            "DELETE",
            f"{self._hewer}/worker-pools/{_p(pool)}/report",
            params={"namespace": namespace},
            missing_ok=True,
        )

    async def set_worker_paused(self, worker_id: str, *, paused: bool) -> bool:
        """Pause (no new work) or resume a worker; False if the engine no longer has it."""
        result = await self.request(
            "PATCH",
            f"/api/v1/workers/{_p(worker_id)}",
            json_body={"isPaused": paused},
            missing_ok=True,
        )
        return result is not None


def _pool_answer(result: Any) -> dict[str, Any]:
    """The pool aggregate, checked: garbage from the engine is an outage, not a metric."""
    ok = (
        isinstance(result, dict)
        and all(
            isinstance(result.get(k), int)
            and not isinstance(result.get(k), bool)
            and result[k] >= 0
            for k in ("queued", "running", "busyWorkers")
        )
        and isinstance(result.get("workers"), list)
        and all(isinstance(w, dict) and isinstance(w.get("id"), str) for w in result["workers"])
    )
    if not ok:
        raise EngineUnavailable(f"the engine's pool stats are malformed: {str(result)[:200]}")
    return dict(result)
