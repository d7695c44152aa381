"""The few Kubernetes calls the operator makes itself (kopf makes the rest).

The ``kubernetes`` client is synchronous, so every call runs in a thread. Objects go in and
come out as plain dicts. The configuration is loaded when the operator starts, from
``$KUBECONFIG`` as it is *then* (the library reads it at import time otherwise), or the
in-cluster service account.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import kubernetes

__all__ = ["Kube", "KubeError", "load_config"]


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def retriable(self) -> bool:
        return self.status == 0 or self.status == 409 or self.status == 429 or self.status >= 500


def load_config() -> kubernetes.client.ApiClient:
    path = os.environ.get("KUBECONFIG")
    configuration = kubernetes.client.Configuration()
    if path or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration
        )
    else:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


def _call(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    try:
        response = fn(*args, _preload_content=False, **kwargs)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise KubeError(int(exc.status or 0), f"{exc.status} {exc.reason}: {exc.body}") from None
    except Exception as exc:  # urllib3 connection errors and the like
        raise KubeError(0, f"{type(exc).__name__}: {exc}") from None
    data = response.data
    result: dict[str, Any] = json.loads(data) if data else {}
    return result


class Kube:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self._core = kubernetes.client.CoreV1Api(api)
        self._apps = kubernetes.client.AppsV1Api(api)
        self._custom = kubernetes.client.CustomObjectsApi(api)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(_call, self._core.read_namespaced_secret, name, namespace)

    async def create_secret(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return await asyncio.to_thread(
            _call, self._core.create_namespaced_secret, body["metadata"]["namespace"], body
        )

    async def replace_secret(self, body: dict[str, Any]) -> dict[str, Any] | None:
        meta = body["metadata"]
        return await asyncio.to_thread(
            _call, self._core.replace_namespaced_secret, meta["name"], meta["namespace"], body
        )

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(
            _call, self._apps.read_namespaced_deployment, name, namespace
        )

    async def create_deployment(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return await asyncio.to_thread(
            _call, self._apps.create_namespaced_deployment, body["metadata"]["namespace"], body
        )

    async def replace_deployment(self, body: dict[str, Any]) -> dict[str, Any] | None:
        meta = body["metadata"]
        return await asyncio.to_thread(
            _call, self._apps.replace_namespaced_deployment, meta["name"], meta["namespace"], body
        )

    # -- the autoscaler's calls ---------------------------------------------------------------

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Write replicas through the scale subresource, as the HPA does."""
        await asyncio.to_thread(
            _call,
            self._apps.patch_namespaced_deployment_scale,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
        )

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(
            _call, self._core.list_namespaced_pod, namespace, label_selector=selector
        )
        return list((found or {}).get("items") or [])

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, Any]) -> None:
        """Set (a value) or remove (None) annotations of a Pod; a Pod already gone is fine."""
        await asyncio.to_thread(
            _call,
            self._core.patch_namespaced_pod,
            name,
            namespace,
            {"metadata": {"annotations": annotations}},
        )

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Any
    ) -> None:
        await asyncio.to_thread(
            _call,
            self._custom.patch_namespaced_custom_object_status,
            group,
            version,
            namespace,
            plural,
            name,
            {"status": status},
        )
