"""The demo DAG's task bodies, run without an engine via the SDK's ``mock_run``."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest

from hewer.engine.core.tokens import mint_token


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    now = datetime.now(UTC)
    token = mint_token(
        secret=b"x" * 32,
        tenant_id="00000000-0000-0000-0000-000000000000",
        token_id="t",
        server_url="http://localhost:8080",
        grpc_address="localhost:7077",
        expires_at=now + timedelta(days=1),
        issued_at=now,
    )
    monkeypatch.setenv("HATCHET_CLIENT_TOKEN", token)
    monkeypatch.setenv("HATCHET_CLIENT_TLS_STRATEGY", "none")
    return importlib.import_module("hewer.engine.demo")


def test_demo_dag(demo: ModuleType) -> None:
    inp = demo.DemoInput()
    fetched = demo.fetch.mock_run(input=inp)
    transformed = demo.transform.mock_run(input=inp, parent_outputs={"fetch": fetched.model_dump()})
    summary = demo.summarize.mock_run(
        input=inp,
        parent_outputs={"fetch": fetched.model_dump(), "transform": transformed.model_dump()},
    )
    assert summary.source == inp.source
    assert summary.word_count == len(transformed.words) > 0
    assert len(summary.top_words) == inp.top
    assert summary.headline.startswith(inp.source)
    assert demo.demo_workflow.name == "hewer-demo"
    assert [t.name for t in demo.demo_workflow.tasks] == ["fetch", "transform", "summarize"]
