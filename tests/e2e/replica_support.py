"""A second engine replica on the database of a running ``hewer dev`` engine.

``hewer serve`` with ``HEWER_DATABASE_URL`` set to the first engine's embedded PostgreSQL
(a unix socket in its data directory): two stateless engine processes on one database, as
a Kubernetes Deployment with two replicas runs them. Each replica schedules only the
workers whose streams it holds, so workers connected to both make the replicas compete
for the same queue, concurrency slots and rate-limit buckets.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from e2e_support import (
    Engine,
    _hewer_command,
    _read_client_env,
    _stop_process,
    free_port,
)

from hewer.engine.db.embedded import EmbeddedPostgres


def database_url(engine: Engine) -> str:
    """The DSN ``hewer dev`` uses for its embedded server (``<data dir>/pg``)."""
    return EmbeddedPostgres(data_dir=engine.data_dir / "pg").dsn


@contextlib.contextmanager
def start_replica(engine: Engine) -> Iterator[Engine]:
    """``hewer serve`` on ``engine``'s database and fresh ports; SIGTERM at the end.

    Same signing secret as ``engine`` (its tokens are valid on both). The replica never
    owns the database: stopping it leaves the first engine and its PostgreSQL running.
    """
    grpc_port, http_port = free_port(), free_port()
    while http_port == grpc_port:
        http_port = free_port()
    env = dict(engine.engine_env)
    env.update(
        {
            "HEWER_DATABASE_URL": database_url(engine),
            "HEWER_GRPC_PORT": str(grpc_port),
            "HEWER_HTTP_PORT": str(http_port),
        }
    )
    # beside the first engine's log: removed with its data directory
    log_path = engine.data_dir / f"replica-{grpc_port}.log"
    command = [
        *_hewer_command(),
        "serve",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,  # the HATCHET_CLIENT_* lines, as `hewer dev` prints them
            stderr=log_file,
            start_new_session=True,
        )
    try:
        client_env = _read_client_env(proc, log_path)
        yield Engine(
            data_dir=engine.data_dir,
            grpc_port=grpc_port,
            http_port=http_port,
            client_env=client_env,
            engine_env=env,
            proc=proc,
            log_path=log_path,
        )
    finally:
        _stop_process(proc, grace=20.0)
