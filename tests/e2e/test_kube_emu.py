"""The emulated API server's watch keeps the promise kubectl and kopf rely on: a watch
from a list's resourceVersion sees every change after it, deletions included."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tests.kube_emu import EmuThread

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
def emu() -> Iterator[EmuThread]:
    with EmuThread() as thread:
        yield thread


def _call(emu: EmuThread, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(emu.url + path, data=data, method=method)
    request.add_header("Content-Type", ctype or "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _watch(emu: EmuThread, query: str) -> list[dict[str, Any]]:
    path = f"{CONFIGMAPS}?watch=true&timeoutSeconds=1&{query}"
    with urllib.request.urlopen(emu.url + path, timeout=10) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def _held_then_listed(emu: EmuThread) -> str:
    """A ConfigMap held by a finalizer, deleted, then listed as kubectl delete --wait does."""
    body = {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    _call(emu, "POST", CONFIGMAPS, body)
    _call(emu, "DELETE", f"{CONFIGMAPS}/held")
    listed = _call(emu, "GET", f"{CONFIGMAPS}?fieldSelector=metadata.name%3Dheld")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["held"]
    return str(listed["metadata"]["resourceVersion"])


def test_a_deletion_between_a_list_and_its_watch_reaches_the_watch(emu: EmuThread) -> None:
    since = _held_then_listed(emu)
    # the finalizer goes (as an operator's cleanup does) before the watch is opened
    _call(
        emu,
        "PATCH",
        f"{CONFIGMAPS}/held",
        {"metadata": {"finalizers": None}},
        ctype="application/merge-patch+json",
    )
    events = _watch(emu, f"fieldSelector=metadata.name%3Dheld&resourceVersion={since}")
    assert [e["type"] for e in events] == ["DELETED"], events
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > int(since)


def test_a_watch_replays_changes_in_order_and_only_those_after_its_version(
    emu: EmuThread,
) -> None:
    _call(emu, "POST", CONFIGMAPS, {"metadata": {"name": "one"}, "data": {"k": "1"}})
    since = str(_call(emu, "GET", CONFIGMAPS)["metadata"]["resourceVersion"])
    _call(emu, "POST", CONFIGMAPS, {"metadata": {"name": "two"}})
    patch = {"data": {"k": "2"}}
    _call(emu, "PATCH", f"{CONFIGMAPS}/one", patch, ctype="application/merge-patch+json")
    _call(emu, "DELETE", f"{CONFIGMAPS}/two")
    events = _watch(emu, f"resourceVersion={since}")
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "two"), ("MODIFIED", "one"), ("DELETED", "two")], seen
