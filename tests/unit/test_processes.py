"""The pure parts of ``--processes N``: the ready line, the restart backoff, the child's
command, the flag's check, and the metrics that a multi-process scrape must not sum."""

from __future__ import annotations

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hewer.engine.cli import main
from hewer.engine.processes import (
    READY_PREFIX,
    RestartBackoff,
    child_command,
    parse_ready_line,
    ready_line,
)
from hewer.engine.services.metrics import EngineMetrics


def test_ready_line_round_trip() -> None:
    line = ready_line("engine-1234")
    assert line.startswith(READY_PREFIX)
    assert parse_ready_line(line + "\n") == "engine-1234"


@pytest.mark.parametrize("line", ["", "HATCHET_CLIENT_TOKEN=x", READY_PREFIX, "engine-1"])
def test_other_lines_are_not_ready_lines(line: str) -> None:
    assert parse_ready_line(line) is None


def test_backoff_doubles_while_children_die_young_and_resets_after_a_long_life() -> None:
    backoff = RestartBackoff(first=1.0, longest=8.0, healthy_after=60.0)
    delays = [backoff.after_exit(lived_seconds=2.0) for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.after_exit(lived_seconds=600.0) == 1.0
    assert backoff.after_exit(lived_seconds=1.0) == 2.0


def test_child_is_this_interpreter_running_serve() -> None:
    command = child_command(index=3)
    assert command[0] == sys.executable
    assert command[1:] == ["-m", "hewer.engine", "serve", "--engine-process", "3"]


@pytest.mark.parametrize("value", ["0", "-2"])
def test_processes_below_one_is_a_flag_error(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEWER_DATABASE_URL", "postgresql://nowhere.invalid/db")
    assert main(["serve", "--processes", value]) == 2
    assert "--processes must be at least 1" in capsys.readouterr().err


def test_database_state_gauges_show_the_last_rows_read() -> None:
    metrics = EngineMetrics()
    metrics.set_worker_slots([{"tenant_id": "t1", "total": 10, "used": 4}])
    metrics.set_queue_depths([{"tenant_id": "t1", "action_id": "a:b", "n": 7}])
    metrics.set_queue_depths([{"tenant_id": "t1", "action_id": "c:d", "n": 2}])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    tenant = (("tenant_id", "t1"),)
    assert samples[("hatchet_tenant_worker_slots", tenant)] == 10
    assert samples[("hatchet_tenant_used_worker_slots", tenant)] == 4
    assert samples[("hatchet_tenant_available_worker_slots", tenant)] == 6
    depths = {k: v for k, v in samples.items() if k[0] == "hewer_queue_depth"}
    # the previous read's queue is gone, as the gauge's clear() did before
    assert depths == {("hewer_queue_depth", (("action_id", "c:d"), ("tenant_id", "t1"))): 2}
