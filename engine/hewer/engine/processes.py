"""``--processes N``: N engine processes serving one gRPC and one HTTP port, so that one
pod uses several cores.

The engine keeps no state a replica must share (see ``server.py``), so N processes on one
database are N replicas; the only new thing is that they listen on the same ports, with
SO_REUSEPORT, and the kernel spreads the incoming connections over them. This parent runs
no engine itself: it checks the ports are free, starts the children, announces the engine
once all of them serve, restarts a child that dies, and stops them all on SIGTERM/SIGINT.

The children are subprocesses of the same command (``python -m hewer.engine serve
--engine-process I``) rather than ``multiprocessing`` workers: each is a fresh interpreter
that inherits nothing of the parent's (grpcio is not fork-safe; the embedded PostgreSQL
stays the parent's), gets its settings the way any engine does (``HEWER_*`` variables), and
talks to the parent through two pipes: it prints one line on stdout once both ports serve,
and it stops when its stdin reaches end-of-file, which is also what happens when the parent
is killed with SIGKILL, so no orphan keeps serving the ports. ``multiprocessing``'s spawn
mode would also start fresh interpreters, but adds its resource tracker process, pickles
the target and offers no way to await a child's exit from the event loop.

A child that dies closes its listening sockets with it, so the kernel sends new connections
only to the survivors until the replacement serves: no port is ever half-served. Clients
connected to the dead child reconnect (the SDKs retry) and land on a live process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hewer.engine.config import Settings
from hewer.engine.errors import EngineStartError
from hewer.engine.ready import ReadyInfo, client_ready_info
from hewer.engine.services.metrics import MULTIPROC_DIR_VARIABLE

__all__ = [
    "READY_PREFIX",
    "RestartBackoff",
    "child_command",
    "ensure_port_unused",
    "parse_ready_line",
    "ready_line",
    "run_child",
    "run_engine_processes",
]

log = logging.getLogger("hewer.processes")
READY_PREFIX = "HEWER_ENGINE_READY "
# how long the children get to drain after SIGTERM before they are killed
STOP_GRACE_SECONDS = 30.0


def ready_line(engine_id: str) -> str:
    """What a child prints on stdout once it serves both ports."""
    return f"{READY_PREFIX}{engine_id}"


def parse_ready_line(line: str) -> str | None:
    """The engine id of a child's ready line; None for any other line."""
    if not line.startswith(READY_PREFIX):
        return None
    engine_id = line[len(READY_PREFIX) :].strip()
    return engine_id or None


def child_command(*, index: int) -> list[str]:
    """The command of child ``index``; its settings come from the environment."""
    return [sys.executable, "-m", "hewer.engine", "serve", "--engine-process", str(index)]


@dataclass(slots=True)
class RestartBackoff:
    """The wait before restarting a child: doubles while it keeps dying young (a database
    that is down, say), so a crash loop does not spin; back to ``first`` once a child has
    lived ``healthy_after`` seconds."""

    first: float = 1.0
    longest: float = 30.0
    healthy_after: float = 60.0
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._next = self.first

    def after_exit(self, *, lived_seconds: float) -> float:
        if lived_seconds >= self.healthy_after:
            self._next = self.first
        delay = self._next
        self._next = min(self.longest, self._next * 2)
        return delay


def ensure_port_unused(*, host: str, port: int, what: str) -> None:
    """Fail clearly if something already listens on ``port``.

    The children bind with SO_REUSEPORT, and Linux lets a socket with it join a port that
    sockets of the same user with it already serve: another ``hewer --processes`` on the
    same port would silently share its connections instead of failing. A probe bound
    without SO_REUSEPORT fails against any listener. (A program that starts between this
    check and the children's bind can still join them; nothing short of holding the port
    closes that window.)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as the servers do: a port left in TIME_WAIT by a previous engine is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EngineStartError(
                f"cannot listen for {what} on {host}:{port}: {exc.strerror} "
                "(another program serves it)"
            ) from None


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


@dataclass
class _Supervisor:
    env: Mapping[str, str]
    stopping: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    children: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *child_command(index=index),
            env=dict(self.env),
            stdin=asyncio.subprocess.PIPE,  # its end-of-file tells the child to stop
            stdout=asyncio.subprocess.PIPE,  # the ready line
            # stderr: the parent's, so all logs go where `hewer` logs go
        )
        self.children[index] = proc
        return proc

    async def _engine_id(self, proc: asyncio.subprocess.Process) -> str | None:
        """Read the child's stdout up to its ready line; None: it exited first."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            engine_id = parse_ready_line(line.decode(errors="replace"))
            if engine_id is not None:
                return engine_id
        return None

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        """Read stdout to end-of-file (the child exited), so it never blocks writing."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            log.info("engine process %d: %s", proc.pid, line.decode(errors="replace").rstrip())

    async def keep(self, index: int, first_ready: asyncio.Future[str]) -> None:
        """Run child ``index``, restarting it whenever it dies, until stopping."""
        backoff = RestartBackoff()
        while not self.stopping:
            started = time.monotonic()
            proc = await self._spawn(index)
            engine_id = await self._engine_id(proc)
            if engine_id is not None:
                log.info("engine process %d (pid %d) serves as %s", index, proc.pid, engine_id)
                if not first_ready.done():
                    first_ready.set_result(engine_id)
                await self._drain(proc)
            code = await proc.wait()
            if self.stopping:
                return
            if not first_ready.done():
                first_ready.set_exception(
                    EngineStartError(
                        f"engine process {index} stopped before it served "
                        f"({_exit_description(code)}); its error is logged above"
                    )
                )
                return
            _forget_metrics_of(proc.pid)
            delay = backoff.after_exit(lived_seconds=time.monotonic() - started)
            log.warning(
                "engine process %d (pid %d) stopped unexpectedly (%s); restarting it in %.0f s",
                index,
                proc.pid,
                _exit_description(code),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)

    async def stop(self) -> None:
        """SIGTERM every child, SIGKILL those still running after the grace period."""
        self.stopping = True
        self.wake.set()
        live = [p for p in self.children.values() if p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in live:
            try:
                await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE_SECONDS)
            except TimeoutError:
                log.warning("engine process %d did not stop in time; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _forget_metrics_of(pid: int) -> None:
    """Drop a dead process's live-only gauges (its counters keep counting in the sum)."""
    if os.environ.get(MULTIPROC_DIR_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _stop_at_end_of_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A child of ``--processes`` stops when its parent closes its stdin or dies."""

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop.set)

    # a daemon thread: a blocked read must not hold up the interpreter's exit
    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()


async def run_child(*, settings: Settings, dsn: str, index: int) -> None:
    """One of ``--processes N`` (see processes.py): the parent applied the migrations and
    announces the engine; this one serves and prints its ready line."""
    from hewer.engine.server import run_engine  # the whole engine: only in the children

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        log.info("engine process %d received %s, stopping", index, signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    _stop_at_end_of_stdin(loop, stop)

    def on_serving(engine_id: str) -> None:
        print(ready_line(engine_id), flush=True)

    await run_engine(settings=settings, dsn=dsn, stop=stop, on_serving=on_serving, reuse_port=True)


async def run_engine_processes(
    *,
    settings: Settings,
    dsn: str,
    count: int,
    stop: asyncio.Event,
    on_ready: Callable[[ReadyInfo], None] | None = None,
) -> None:
    """Serve with ``count`` engine processes until ``stop`` is set; ``on_ready`` once all
    serve, with the same information a lone engine gives (see ``server.run_engine``)."""
    ensure_port_unused(host=settings.bind_host, port=settings.grpc_port, what="gRPC")
    ensure_port_unused(host=settings.bind_host, port=settings.http_port, what="HTTP")
    metrics_dir = tempfile.mkdtemp(prefix="hewer-metrics-")
    # the parent reads the directory too, when it forgets a dead child's gauges
    os.environ[MULTIPROC_DIR_VARIABLE] = metrics_dir
    env = {
        **os.environ,
        "HEWER_DATABASE_URL": dsn,
        # the flags of this command win over the variables, as they do for a lone engine
        "HEWER_GRPC_PORT": str(settings.grpc_port),
        "HEWER_HTTP_PORT": str(settings.http_port),
    }
    supervisor = _Supervisor(env=env)
    loop = asyncio.get_running_loop()
    ready: list[asyncio.Future[str]] = [loop.create_future() for _ in range(count)]
    keepers = [loop.create_task(supervisor.keep(i, ready[i])) for i in range(count)]
    started: asyncio.Future[list[str]] = asyncio.gather(*ready)
    stopped: asyncio.Future[Any] = loop.create_task(stop.wait())
    try:
        await asyncio.wait([started, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            return  # stopped while starting
        engine_ids = started.result()  # raises the EngineStartError of a child that failed
        log.info("%d engine processes serve: %s", count, ", ".join(engine_ids))
        if on_ready is not None:
            on_ready(await client_ready_info(settings=settings, dsn=dsn))
        await stop.wait()
    finally:
        stopped.cancel()
        started.cancel()
        for future in ready:  # a second failure is logged above, not left unretrieved
            if future.done() and not future.cancelled():
                future.exception()
        log.info("stopping %d engine processes", count)
        await supervisor.stop()
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        del os.environ[MULTIPROC_DIR_VARIABLE]
        shutil.rmtree(metrics_dir, ignore_errors=True)
