"""What ``hewer dev`` and ``hewer serve`` announce once the engine serves: the client
settings of the default tenant, with a fresh token.

Apart from ``server.py`` so that the parent of ``--processes N`` (``processes.py``), which
announces the engine but runs none, does not import the whole engine (grpc, aiohttp, every
service): that parent stays at about a third of an engine process's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from hewer.engine.config import Settings
from hewer.engine.db.repository import Repository, create_pool
from hewer.engine.services.auth import Authenticator
from hewer.engine.services.metrics import METRICS

__all__ = ["ReadyInfo", "authenticator", "client_ready_info", "ready_info"]


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    tenant_id: str
    token: str
    grpc_address: str
    server_url: str
    dashboard_url: str


def ready_info(*, settings: Settings, tenant_id: str, token: str) -> ReadyInfo:
    return ReadyInfo(
        tenant_id=tenant_id,
        token=token,
        grpc_address=settings.public_grpc_address,
        server_url=settings.public_server_url,
        dashboard_url=settings.public_server_url.rstrip("/") + "/",
    )


async def authenticator(*, settings: Settings, repo: Repository) -> Authenticator:
    return await Authenticator.create(
        repo=repo,
        configured_secret=settings.signing_secret,
        server_url=settings.public_server_url,
        grpc_address=settings.public_grpc_address,
    )


async def client_ready_info(*, settings: Settings, dsn: str) -> ReadyInfo:
    """What ``on_ready`` of ``server.run_engine`` gets, for the parent of several engine
    processes: a fresh token of the default tenant, as a lone engine issues when ready."""
    pool = await create_pool(dsn, size=2)
    repo = Repository(pool, observer=METRICS)
    try:
        tenant_id = await repo.ensure_tenant(settings.default_tenant)
        auth = await authenticator(settings=settings, repo=repo)
        token = await auth.issue(tenant_id=tenant_id, name="dev")
        return ready_info(settings=settings, tenant_id=tenant_id, token=token)
    finally:
        await repo.close()
