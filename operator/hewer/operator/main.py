"""``hewer operator``: run the kopf operator against the cluster of ``$KUBECONFIG`` (or the
pod's service account) and the engine of ``HEWER_ENGINE_URL``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import kopf

from hewer.operator.config import OperatorConfig
from hewer.operator.engine_client import EngineClient
from hewer.operator.handler_common import State
from hewer.operator.kube import Kube, load_config
from hewer.operator.metrics import METRICS
from hewer.operator.registry import build_registry

__all__ = ["run"]

log = logging.getLogger("hewer.operator")


def run(
    *,
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    env: Mapping[str, str] | None = None,
    verbose: bool = False,
) -> int:
    """Run until SIGINT/SIGTERM. Raises ConfigError for bad settings."""
    config = OperatorConfig.from_env(os.environ if env is None else env)
    if not namespaces and not all_namespaces:
        namespaces = ["default"]
    if not logging.getLogger().handlers:
        kopf.configure(verbose=verbose)
    elif verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    state = State(
        config=config,
        engine=EngineClient(
            base_url=config.engine_url, token=config.token, tenant_id=config.tenant_id
        ),
        kube=Kube(load_config()),
    )
    if config.metrics_port:
        try:
            METRICS.serve(config.metrics_port)
        except OSError as exc:  # a busy port costs the metrics, not the operator
            log.warning("operator metrics not served on port %s: %s", config.metrics_port, exc)
    log.info(
        "hewer operator: engine %s (tenant %s), %s, resync every %ss",
        config.engine_url,
        config.tenant_id,
        "all namespaces" if all_namespaces else f"namespaces {', '.join(namespaces)}",
        config.resync_seconds,
    )
    kopf.run(
        registry=build_registry(config),
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=() if all_namespaces else tuple(namespaces),
        memo=kopf.Memo(state=state),
    )
    return 0
