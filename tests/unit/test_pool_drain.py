"""Victim choice and the worker labels of autoscaled pools (``pool_drain``, ``pool_specs``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hewer.operator import pool_specs
from hewer.operator.pool_drain import choose_victims, pod_views
from hewer.operator.spec_common import InvalidSpec


def pod(name: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    phase = "Running" if ready else "Pending"
    return {"metadata": meta, "status": {"phase": phase}}


def worker(pod_name: str, running: int = 0, paused: bool = False) -> dict[str, Any]:
    return {"id": f"w-{pod_name}", "pod": pod_name, "running": running, "paused": paused}


def test_victims_run_nothing_unregistered_first() -> None:
    views = pod_views(
        [pod("a"), pod("b"), pod("c"), pod("d", ready=False), pod("e", terminating=True)],
        [worker("a", running=2), worker("b"), worker("c", paused=True)],
    )
    assert [v.name for v in views] == ["a", "b", "c", "d"]  # the terminating Pod is gone
    assert [v.name for v in choose_victims(views, 3)] == ["d", "c", "b"]
    assert [v.name for v in choose_victims(views, 9)] == ["d", "c", "b"]  # never busy "a"
    assert choose_victims(views, 0) == []
    # running tasks no registered worker holds: a ready Pod without a worker may run them
    unknown = pod_views([pod("x"), pod("y", ready=False)], [])
    assert [v.name for v in choose_victims(unknown, 2, unaccounted_running=1)] == ["y"]
    assert [v.name for v in choose_victims(unknown, 2)] == ["x", "y"]


def test_worker_labels_reach_the_sdk() -> None:
    body = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {
            "workflows": ["w"],
            "autoscaling": {"maxReplicas": 3},
            "template": {
                "image": "img",
                "env": [{"name": pool_specs.PRESET_LABELS_ENV, "value": '{"zone": "a"}'}],
            },
        },
    }
    dep = pool_specs.deployment(
        body,
        engine=pool_specs.EngineEndpoints(grpc_address="e:1", server_url="http://e"),
        secret_name="s",
        replicas=0,
    )
    assert dep["spec"]["replicas"] == 0
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.index(pool_specs.POD_NAME_ENV) < names.index(pool_specs.PRESET_LABELS_ENV)
    labels = json.loads(next(e["value"] for e in env if e["name"] == pool_specs.PRESET_LABELS_ENV))
    assert labels == {
        "zone": "a",
        "hewer.dev/worker-pool": "p",
        "hewer.dev/pod": "$(HEWER_POD_NAME)",
    }
    # replicas are not part of the hash: the autoscaler changes them without a rewrite
    again = pool_specs.deployment(
        body,
        engine=pool_specs.EngineEndpoints(grpc_address="e:1", server_url="http://e"),
        secret_name="s",
        replicas=5,
    )
    assert not pool_specs.deployment_needs_update(again, dep, autoscaled=True)
    assert pool_specs.deployment_needs_update(again, dep, autoscaled=False)


def test_autoscaled_pool_must_serve_something() -> None:
    with pytest.raises(InvalidSpec) as exc:
        pool_specs.pool_spec({"template": {"image": "i"}, "autoscaling": {}})
    assert exc.value.reason == "ServesNothing"
