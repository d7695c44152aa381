"""``<data-dir>/client.env``: the client settings of the running ``hewer dev``.

``hewer dev`` writes the file once the engine is ready and removes it when it stops;
``hewer env`` prints it as ``export`` lines for ``eval``, so a shell can pick up the settings
without reading ``hewer dev``'s stdout (a pipe from it would only end when the engine does).
The file names the engine's process id, so a file left by a killed engine is recognised.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CLIENT_ENV_FILE",
    "DevEnvError",
    "export_lines",
    "read_client_env",
    "remove_client_env",
    "write_client_env",
]

CLIENT_ENV_FILE = "client.env"
_PID_LINE = re.compile(r"^# hewer dev pid (\d+)$")


class DevEnvError(Exception):
    """No running ``hewer dev`` for the data directory; ``str(exc)`` says what to do."""


def write_client_env(*, data_dir: Path, env: Mapping[str, str], pid: int) -> Path:
    """Write the file (mode 0600: it holds a token) atomically; returns its path."""
    path = data_dir / CLIENT_ENV_FILE
    lines = [f"# hewer dev pid {pid}", *(f"{k}={v}" for k, v in env.items())]
    temporary = path.with_name(f".{CLIENT_ENV_FILE}.{pid}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    temporary.replace(path)
    return path


def remove_client_env(*, data_dir: Path, pid: int) -> None:
    """Remove the file if this process wrote it (a newer engine may have replaced it)."""
    path = data_dir / CLIENT_ENV_FILE
    with contextlib.suppress(OSError):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        if first == [f"# hewer dev pid {pid}"]:
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _parse(path: Path) -> tuple[int | None, dict[str, str]]:
    pid: int | None = None
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PID_LINE.match(line)
        if match:
            pid = int(match.group(1))
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return pid, env


def read_client_env(*, data_dir: Path, wait_seconds: float = 0.0) -> dict[str, str]:
    """The settings of the ``hewer dev`` running on ``data_dir``, waiting up to
    ``wait_seconds`` for it to become ready."""
    path = data_dir / CLIENT_ENV_FILE
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            pid, env = _parse(path)
        except FileNotFoundError:
            pid, env = None, {}
        if env and pid is not None and _alive(pid):
            return env
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if env and pid is not None:
        raise DevEnvError(
            f"{path} was written by hewer dev (pid {pid}), which is no longer running; "
            f"start it again: hewer dev --data-dir {data_dir}"
        )
    raise DevEnvError(
        f"no hewer dev is running on {data_dir} (no {CLIENT_ENV_FILE}); "
        f"start one: hewer dev --data-dir {data_dir}"
    )


def export_lines(env: Mapping[str, str]) -> list[str]:
    """``export KEY=value`` lines, quoted for POSIX shells."""
    return [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
