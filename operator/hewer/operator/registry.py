"""The kopf registry: every kind's handlers, wired to one explicit registry.

``main`` passes this registry to ``kopf.run``, so handlers are registered by calling
:func:`build_registry`, not by importing modules for their decorators' side effects; every
kind's module is imported here, and ``_KINDS`` lists each one's reconcile and cleanup.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from hewer.operator.config import OperatorConfig
from hewer.operator.cron_handlers import delete_cron, reconcile_cron
from hewer.operator.handler_common import Reconciler, State, run_cleanup, run_reconcile
from hewer.operator.pool_autoscaler import run_daemon
from hewer.operator.pool_handlers import delete_pool, reconcile_pool
from hewer.operator.ratelimit_handlers import delete_rate_limit, reconcile_rate_limit
from hewer.operator.spec_common import GROUP, VERSION
from hewer.operator.workflow_handlers import delete_workflow, reconcile_workflow

__all__ = ["build_registry", "configure_settings"]

FINALIZER = "hewer.dev/finalizer"
# a pool's readiness comes from its Deployment: look at it at least this often
POOL_STATUS_SECONDS = 10.0
# a stopping autoscaler may be in a long-poll: cancel it after this long
AUTOSCALER_STOP_SECONDS = 1.0
# how long a deletion waits at once for a running resync pass, then how often it looks again
TIMER_EXIT_WAIT_SECONDS = 0.5
TIMER_EXIT_POLL_SECONDS = 1.0

_KINDS: dict[str, tuple[Reconciler, Any]] = {
    "workflows": (reconcile_workflow, delete_workflow),
    "crontriggers": (reconcile_cron, delete_cron),
    "ratelimits": (reconcile_rate_limit, delete_rate_limit),
    "workerpools": (reconcile_pool, delete_pool),
}


def build_registry(config: OperatorConfig) -> Any:
    """A kopf registry with every handler; intervals come from ``config``."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        # the kubernetes library captures $KUBECONFIG at import; read it at call time
        import os

        if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: Any, **_: Any) -> None:
        configure_settings(settings)

    @kopf.on.cleanup(registry=registry)
    async def close(memo: Any, **_: Any) -> None:
        state: State = memo["state"]
        await state.engine.close()

    for plural, (reconcile, cleanup) in _KINDS.items():
        interval = config.resync_seconds
        if plural == "workerpools":
            interval = min(interval, POOL_STATUS_SECONDS)
        _register_kind(registry, plural, reconcile, cleanup, interval)
    kopf.daemon(
        GROUP,
        VERSION,
        "workerpools",
        registry=registry,
        id="autoscaler",
        cancellation_timeout=AUTOSCALER_STOP_SECONDS,
    )(run_daemon)
    return registry


def configure_settings(settings: Any) -> None:
    """The kopf settings the operator runs with (a ``kopf.OperatorSettings``)."""
    settings.peering.standalone = True
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    # A resource's deletion waits for its resync timer to finish the pass it is in. kopf
    # re-checks an exiting timer only every 60 s by default, which held a WorkerPool's
    # finalizer for a minute whenever the delete landed mid-pass: look every second.
    settings.background.instant_exit_timeout = TIMER_EXIT_WAIT_SECONDS
    settings.background.cancellation_polling = TIMER_EXIT_POLL_SECONDS


def _register_kind(
    registry: Any, plural: str, reconcile: Reconciler, cleanup: Any, interval: float
) -> None:
    async def on_change(
        body: Any, spec: Any, status: Any, patch: Any, memo: Any, retry: int, **_: Any
    ) -> None:
        await run_reconcile(
            reconcile,
            body=body,
            spec=spec,
            status=status,
            patch=patch,
            memo=memo,
            retry=retry,
            from_timer=False,
        )

    async def on_timer(body: Any, spec: Any, status: Any, patch: Any, memo: Any, **_: Any) -> None:
        await run_reconcile(
            reconcile,
            body=body,
            spec=spec,
            status=status,
            patch=patch,
            memo=memo,
            retry=0,
            from_timer=True,
        )

    async def on_delete(
        body: Any, spec: Any, status: Any, patch: Any, memo: Any, retry: int, **_: Any
    ) -> None:
        await run_cleanup(
            cleanup, body=body, spec=spec, status=status, patch=patch, memo=memo, retry=retry
        )

    kind = (GROUP, VERSION, plural)
    kopf.on.create(*kind, registry=registry, id="create")(on_change)
    kopf.on.update(*kind, registry=registry, id="update")(on_change)
    kopf.on.resume(*kind, registry=registry, id="resume")(on_change)
    kopf.timer(*kind, registry=registry, id="resync", interval=interval, initial_delay=interval)(
        on_timer
    )
    kopf.on.delete(*kind, registry=registry, id="cleanup")(on_delete)
