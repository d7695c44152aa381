"""The README's main command, ``hewer dev --demo``: the demo DAG's result is printed, and a
signal to the whole process group (Ctrl-C in a terminal; SIGTERM from ``timeout``, systemd or
a container runtime) stops the worker and then the engine cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from tests.e2e.e2e_support import (
    _clean_environ,
    _hewer_command,
    free_port,
    stop_embedded_postgres,
)

RESULT_WITHIN_SECONDS = 90.0
STOP_WITHIN_SECONDS = 40.0


def _demo_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if "hewer.engine.demo" in line]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_demo_prints_its_result_and_a_group_signal_stops_everything(signum: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="hewer-e2e-demo-"))
    data_dir.chmod(0o755)  # the embedded server runs as `nobody` when we are root
    before = _demo_processes()
    proc = subprocess.Popen(
        [
            *_hewer_command(),
            "dev",
            "--demo",
            *("--data-dir", str(data_dir)),
            *("--grpc-port", str(free_port())),
            *("--http-port", str(free_port())),
        ],
        env=_clean_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group, which the test signals like a terminal
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        result = None
        deadline = time.monotonic() + RESULT_WITHIN_SECONDS
        buffer = b""
        while result is None and time.monotonic() < deadline and proc.poll() is None:
            chunk = proc.stdout.read() or b""
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines += [c.decode(errors="replace") for c in complete]
            result = next((json.loads(x) for x in lines if x.startswith('{"result"')), None)
            if not chunk:
                time.sleep(0.1)
        assert result is not None, "\n".join(lines[-40:])
        assert set(result["result"]) == {"fetch", "transform", "summarize"}

        os.killpg(proc.pid, signum)
        os.set_blocking(proc.stdout.fileno(), True)
        rest, _ = proc.communicate(timeout=STOP_WITHIN_SECONDS)
        lines += rest.decode(errors="replace").splitlines()
        output = "\n".join(lines)
        assert proc.returncode == 0, output[-4000:]
        assert "Traceback" not in output, output[-4000:]
        # the worker got one signal (a second one makes the SDK abort) and shut down while
        # the engine was still up to hear it
        assert output.count("received signal") == 1, output[-4000:]
        assert "failed to send heartbeat" not in output, output[-4000:]
        assert "stopping embedded PostgreSQL" in output
        assert _demo_processes() == before
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            stop_embedded_postgres(data_dir / "pg")
        shutil.rmtree(data_dir, ignore_errors=True)


def _demo_run_on_the_dashboard(url: str, *, token: str) -> None:
    """Log in to the dashboard with the printed token: the demo's run is listed, and its
    page draws the three tasks completed and a timeline of their attempts."""
    with requests.Session() as browser:
        login = browser.get(url + "login", timeout=10)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', login.text)
        assert csrf is not None, login.text[:500]
        runs = browser.post(url + "login", data={"csrf": csrf[1], "token": token}, timeout=10)
        assert runs.status_code == 200 and runs.url.endswith("/runs"), runs.text[:500]
        link = re.search(r'<a href="(/runs/[0-9a-f-]{36})">', runs.text)
        assert link is not None and "hewer-demo" in runs.text, runs.text[:2000]
        page = browser.get(url.rstrip("/") + link[1], timeout=10).text
        for task in ("fetch", "transform", "summarize"):
            assert f'class="node node-COMPLETED" data-task="{task}"' in page, page[:3000]
        assert page.count('<g class="attempt">') == 3


def test_demo_stdout_holds_only_the_client_lines_and_the_result() -> None:
    """The README: ``hewer dev --demo`` prints the four client lines, the dashboard's address
    (where the demo's run shows with its DAG and timeline), then the result; logs
    (the engine's, the SDK worker's) go to stderr. ``hewer env`` prints the same settings
    while it runs."""
    data_dir = Path(tempfile.mkdtemp(prefix="hewer-e2e-demo-"))
    data_dir.chmod(0o755)
    stderr_path = data_dir / "stderr.log"
    with stderr_path.open("wb") as stderr_file:
        proc = subprocess.Popen(
            [
                *_hewer_command(),
                "dev",
                "--demo",
                *("--data-dir", str(data_dir)),
                *("--grpc-port", str(free_port())),
                *("--http-port", str(free_port())),
            ],
            env=_clean_environ(),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + RESULT_WITHIN_SECONDS
        while time.monotonic() < deadline and not any(x.startswith("{") for x in lines):
            line = proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        assert [x.split("=", 1)[0] for x in lines[:4]] == [
            "HATCHET_CLIENT_TOKEN",
            "HATCHET_CLIENT_TLS_STRATEGY",
            "HATCHET_CLIENT_HOST_PORT",
            "HATCHET_CLIENT_SERVER_URL",
        ], lines
        # then the dashboard's address, then the result: nothing else
        assert len(lines) == 6, lines
        key, _, dashboard = lines[4].partition("=")
        assert key == "HEWER_DASHBOARD_URL"
        assert dashboard == lines[3].split("=", 1)[1] + "/"
        assert json.loads(lines[5])["workflow"] == "hewer-demo"
        _demo_run_on_the_dashboard(dashboard, token=lines[0].split("=", 1)[1])

        shown = subprocess.run(
            [*_hewer_command(), "env", "--data-dir", str(data_dir)],
            env=_clean_environ(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[:4] == [f"export {x}" for x in lines[:4]]
        assert shown.stdout.splitlines()[4].startswith("export HATCHET_CLIENT_TENANT_ID=")

        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=STOP_WITHIN_SECONDS)
        assert proc.returncode == 0, stderr_path.read_text()[-4000:]
        assert rest == b"", rest  # the worker's shutdown logs went to stderr too
        assert "worker" in stderr_path.read_text()  # the SDK did log, to stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            stop_embedded_postgres(data_dir / "pg")
        shutil.rmtree(data_dir, ignore_errors=True)
