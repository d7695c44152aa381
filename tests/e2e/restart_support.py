"""An engine that can be killed hard and started again on the same database.

``hewer dev`` owns its embedded PostgreSQL. Here the test starts an embedded server itself
and runs ``hewer serve`` on it with fixed ports, so a ``kill -9`` takes only the engine
process and the next ``serve`` finds the database, and the addresses workers and clients
know, as they were: what a crashed engine pod and its replacement look like.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from e2e_support import (
    SIGNING_SECRET,
    Engine,
    _clean_environ,
    _hewer_command,
    _read_client_env,
    _stop_process,
    free_port,
    start_embedded_postgres,
    stop_embedded_postgres,
)


@dataclass
class OwnDatabase:
    """A database with fixed engine ports; ``serve()`` starts one engine process on it."""

    base_dir: Path
    env: dict[str, str]
    engines: list[Engine] = field(default_factory=list)

    def serve(self) -> Engine:
        log_path = self.base_dir / f"engine-{len(self.engines) + 1}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [*_hewer_command(), "serve"],
                env=self.env,
                stdout=subprocess.PIPE,  # the HATCHET_CLIENT_* lines, as `hewer dev` prints
                stderr=log_file,
                start_new_session=True,
            )
        engine = Engine(
            data_dir=self.base_dir,
            grpc_port=int(self.env["HEWER_GRPC_PORT"]),
            http_port=int(self.env["HEWER_HTTP_PORT"]),
            client_env={},
            engine_env=self.env,
            proc=proc,
            log_path=log_path,
        )
        self.engines.append(engine)  # stopped at the end even if it never became ready
        engine.client_env = _read_client_env(proc, log_path)
        return engine


def kill_engine_hard(engine: Engine) -> None:
    """``kill -9`` of the engine process; its database keeps running."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(engine.proc.pid, signal.SIGKILL)
    engine.proc.wait(timeout=10)


@contextlib.contextmanager
def own_database(extra_env: Mapping[str, str] | None = None) -> Iterator[OwnDatabase]:
    """An embedded PostgreSQL of its own and fixed free ports; engines and server stop at
    the end."""
    # mkdtemp is 0700: the embedded server runs as `nobody` when we are root
    base_dir = Path(tempfile.mkdtemp(prefix="hewer-e2e-own-"))
    base_dir.chmod(0o755)
    grpc_port, http_port = free_port(), free_port()
    while http_port == grpc_port:
        http_port = free_port()
    database = OwnDatabase(base_dir=base_dir, env={})
    try:
        dsn = start_embedded_postgres(base_dir / "pg")
        database.env = _clean_environ()
        database.env.update(
            {
                "HEWER_DATABASE_URL": dsn,
                "HEWER_SIGNING_SECRET": SIGNING_SECRET,  # tokens survive a restart
                "HEWER_GRPC_PORT": str(grpc_port),
                "HEWER_HTTP_PORT": str(http_port),
                "HEWER_LOG_LEVEL": "INFO",
                **(extra_env or {}),
            }
        )
        yield database
    finally:
        for engine in database.engines:
            _stop_process(engine.proc, grace=20.0)
        stop_embedded_postgres(base_dir / "pg")
        shutil.rmtree(base_dir, ignore_errors=True)
