"""`hewer dev` on a port that is already taken: one clear line and exit status 2."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("taken", ["grpc", "http"])
def test_a_busy_port_is_a_clear_error(taken: str) -> None:
    data = Path(tempfile.mkdtemp(prefix="hewer-port-"))
    data.chmod(0o755)  # the embedded server runs as nobody when we are root
    grpc_port, http_port = _free_port(), _free_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("0.0.0.0", grpc_port if taken == "grpc" else http_port))
    blocker.listen()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "hewer.engine",
                "dev",
                "--data-dir",
                str(data / "d"),
                "--grpc-port",
                str(grpc_port),
                "--http-port",
                str(http_port),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            env={k: v for k, v in os.environ.items() if not k.startswith("HEWER_")},
            check=False,
        )
    finally:
        blocker.close()
        shutil.rmtree(data, ignore_errors=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hewer: error: cannot listen for "), last
    assert ("gRPC" if taken == "grpc" else "HTTP") in last
    assert "Traceback" not in proc.stderr
    assert "HATCHET_CLIENT_TOKEN" not in proc.stdout
