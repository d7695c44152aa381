"""Helpers of the e2e tests: a whole engine process, SDK worker processes, polling.

``conftest.py`` puts this directory (and ``workers/``) on ``sys.path``, so test modules
import it as ``e2e_support``. Nothing here mutates ``os.environ``: the engine and the workers
get an explicit environment, and the test process builds its ``Hatchet`` clients from an
explicit ``ClientConfig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import requests
from hatchet_sdk import ClientConfig, Hatchet
from hatchet_sdk.config import ClientTLSConfig

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "workers" / "worker.py"
SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"
ENGINE_READY_TIMEOUT = 90.0
WORKER_READY_TIMEOUT = 60.0
_ENV_KEYS = (
    "HATCHET_CLIENT_TOKEN",
    "HATCHET_CLIENT_TLS_STRATEGY",
    "HATCHET_CLIENT_HOST_PORT",
    "HATCHET_CLIENT_SERVER_URL",
)

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _clean_environ() -> dict[str, str]:
    """The test process's environment without any Hatchet client or Hewer setting."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HATCHET_CLIENT_", "HEWER_", "E2E_"))
    }


def _hewer_command() -> list[str]:
    script = Path(sys.executable).parent / "hewer"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "hewer.engine"]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the engine ----------------------------------------------------------------------------


@dataclass
class Engine:
    data_dir: Path
    grpc_port: int
    http_port: int
    client_env: dict[str, str]
    engine_env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def token(self) -> str:
        return self.client_env["HATCHET_CLIENT_TOKEN"]

    @property
    def host_port(self) -> str:
        return self.client_env["HATCHET_CLIENT_HOST_PORT"]

    @property
    def server_url(self) -> str:
        return self.client_env["HATCHET_CLIENT_SERVER_URL"]

    def config(self, token: str | None = None) -> ClientConfig:
        return ClientConfig(
            token=token or self.token,
            host_port=self.host_port,
            server_url=self.server_url,
            namespace="",
            tls_config=ClientTLSConfig(strategy="none"),
        )

    def client(self, token: str | None = None) -> Hatchet:
        return Hatchet(config=self.config(token))

    def tenant_of(self, token: str | None = None) -> str:
        return self.config(token).tenant_id

    def create_token(self, tenant: str) -> str:
        """``hewer token create --tenant NAME`` against this engine's embedded database."""
        out = subprocess.run(
            [
                *_hewer_command(),
                "token",
                "create",
                "--tenant",
                tenant,
                "--data-dir",
                str(self.data_dir),
            ],
            env=self.engine_env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"hewer token create failed: {out.stderr.decode()}")
        return out.stdout.decode().strip().splitlines()[-1]

    def log(self) -> str:
        return _tail(self.log_path)

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"the engine exited:\n{self.log()}"

    def grpc_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.host_port)

    def rest(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        auth: bool = True,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"} if auth else {}
        return requests.request(
            method, f"{self.server_url}{path}", headers=headers, json=json, timeout=30
        )


@contextlib.contextmanager
def start_engine(
    extra_env: Mapping[str, str] | None = None, extra_args: Sequence[str] = ()
) -> Iterator[Engine]:
    """``hewer dev`` on a fresh embedded PostgreSQL and free ports; SIGTERM at the end.

    ``extra_args``: more flags of ``hewer dev`` (``--processes 2``, say)."""
    # mkdtemp is 0700: the embedded server runs as `nobody` when we are root
    data_dir = Path(tempfile.mkdtemp(prefix="hewer-e2e-"))
    data_dir.chmod(0o755)
    grpc_port, http_port = free_port(), free_port()
    while http_port == grpc_port:
        http_port = free_port()
    env = _clean_environ()
    env.update(
        {
            "HEWER_SIGNING_SECRET": SIGNING_SECRET,
            "HEWER_GRPC_PORT": str(grpc_port),
            "HEWER_HTTP_PORT": str(http_port),
            "HEWER_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra_env or {})
    log_path = data_dir / "engine.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    *_hewer_command(),
                    "dev",
                    "--data-dir",
                    str(data_dir),
                    "--grpc-port",
                    str(grpc_port),
                    "--http-port",
                    str(http_port),
                    *extra_args,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        client_env = _read_client_env(proc, log_path)
        engine = Engine(
            data_dir=data_dir,
            grpc_port=grpc_port,
            http_port=http_port,
            client_env=client_env,
            engine_env=env,
            proc=proc,
            log_path=log_path,
        )
        yield engine
    finally:
        if proc is not None:
            _stop_process(proc, grace=20.0)
        if proc is None or proc.returncode != 0:
            stop_embedded_postgres(data_dir / "pg")
        shutil.rmtree(data_dir, ignore_errors=True)


def start_embedded_postgres(pg_dir: Path) -> str:
    """Create (if missing) and start an embedded server in ``pg_dir``; returns its DSN.

    In a fresh interpreter, for the reason given in ``stop_embedded_postgres``.
    """
    code = (
        "import sys; from pathlib import Path; "
        "from hewer.engine.db.embedded import EmbeddedPostgres; "
        "print(EmbeddedPostgres(data_dir=Path(sys.argv[1])).start())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pg_dir)],
        env=_clean_environ(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(f"embedded PostgreSQL did not start: {out.stderr.decode()}")
    return out.stdout.decode().strip().splitlines()[-1]


def stop_embedded_postgres(pg_dir: Path) -> None:
    """Stop a server the engine left running (it was killed, or failed to start).

    In a fresh interpreter: ``EmbeddedPostgres`` runs ``pg_ctl`` as another user, which
    needs a plain ``fork()``, and forking this process while grpc threads run can crash
    the child.
    """
    code = (
        "import sys; from pathlib import Path; "
        "from hewer.engine.db.embedded import EmbeddedPostgres; "
        "EmbeddedPostgres(data_dir=Path(sys.argv[1])).stop()"
    )
    with contextlib.suppress(Exception):
        subprocess.run(
            [sys.executable, "-c", code, str(pg_dir)],
            env=_clean_environ(),
            capture_output=True,
            timeout=60,
            check=False,
        )


def _read_client_env(proc: subprocess.Popen[bytes], log_path: Path) -> dict[str, str]:
    """The HATCHET_CLIENT_* lines ``hewer dev`` prints once it is ready."""
    found: dict[str, str] = {}
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            key, sep, value = raw.decode(errors="replace").strip().partition("=")
            if sep and key in _ENV_KEYS:
                found[key] = value
                if all(k in found for k in _ENV_KEYS):
                    done.set()
        done.set()  # EOF: the engine exited

    threading.Thread(target=reader, daemon=True, name="engine-stdout").start()
    if not done.wait(ENGINE_READY_TIMEOUT) or not all(k in found for k in _ENV_KEYS):
        raise AssertionError(
            f"the engine did not become ready (exit status {proc.poll()}):\n{_tail(log_path)}"
        )
    return found


def _stop_process(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # whatever is left in the group (the SDK's listener child, for one)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# -- SDK worker processes ----------------------------------------------------------------


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    health_port: int
    log_path: Path
    stopped: bool = field(default=False)

    def kill_hard(self) -> None:
        """``kill -9`` of the whole worker (the SDK runs its listener in a child process)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stopped = True

    def stop(self) -> None:
        if not self.stopped:
            _stop_process(self.proc, grace=10.0)
            self.stopped = True

    def log(self) -> str:
        return _tail(self.log_path)

    def wait_healthy(self) -> None:
        _wait_healthy(self)


@contextlib.contextmanager
def start_worker(
    engine: Engine,
    *,
    name: str,
    workflows: Sequence[str],
    mark_dir: Path,
    slots: int = 10,
    durable_slots: int | None = None,
    token: str | None = None,
    wait: bool = True,
    labels: Mapping[str, str | int] | None = None,
    script: Path = WORKER_SCRIPT,
) -> Iterator[WorkerProc]:
    """Run ``workers/worker.py`` (or another worker ``script`` taking its arguments) in
    its own process group; ready when ``/health`` is 200.

    ``token`` (default: the engine's) picks the tenant the worker belongs to. With
    ``wait=False`` the caller calls ``wait_healthy()`` (to start several at once).
    """
    health_port = free_port()
    env = _clean_environ()
    env.update(engine.client_env)
    if token is not None:
        env["HATCHET_CLIENT_TOKEN"] = token
    env.update(
        {
            "HATCHET_CLIENT_WORKER_HEALTHCHECK_ENABLED": "True",
            "HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT": str(health_port),
            "E2E_MARK_DIR": str(mark_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = mark_dir / f"worker-{name}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--name",
                name,
                "--workflows",
                ",".join(workflows),
                "--slots",
                str(slots),
                *([] if durable_slots is None else ["--durable-slots", str(durable_slots)]),
                *[f"--label={k}={v}" for k, v in (labels or {}).items()],
            ],
            env=env,
            cwd=mark_dir,  # the SDK reads .env files from its working directory
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProc(name=name, proc=proc, health_port=health_port, log_path=log_path)
    try:
        if wait:
            _wait_healthy(worker)
        yield worker
    finally:
        worker.stop()


def _wait_healthy(worker: WorkerProc) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise AssertionError(
                f"worker {worker.name} exited with {worker.proc.returncode}:\n{worker.log()}"
            )
        with contextlib.suppress(requests.RequestException):
            r = requests.get(f"http://localhost:{worker.health_port}/health", timeout=2)
            if r.status_code == 200:
                return
        time.sleep(0.25)
    raise AssertionError(f"worker {worker.name} never became healthy:\n{worker.log()}")


# -- waiting -------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    interval: float = 0.25,
    what: str,
) -> T:
    """Poll ``probe`` until it returns something other than None/False, for ``within`` s."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = await probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def marks(mark_dir: Path, run_id: str, event: str) -> dict[int, str]:
    """``{attempt: worker name}`` of the ``<run>.<attempt>.<event>`` files a task left."""
    out: dict[int, str] = {}
    for path in mark_dir.glob(f"{run_id}.*.{event}"):
        attempt = path.name.split(".")[1]
        if attempt.isdigit():
            out[int(attempt)] = path.read_text()
    return out


def mark_names(mark_dir: Path, run_id: str) -> list[str]:
    """Every mark a run's tasks left, for failure messages."""
    return sorted(p.name for p in mark_dir.glob(f"{run_id}.*"))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"bearer {token}"),)
