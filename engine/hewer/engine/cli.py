"""The ``hewer`` command: ``dev``, ``env``, ``serve``, ``migrate``, ``token create`` and
``operator``.

stdout carries only what a caller may parse (the ``HATCHET_CLIENT_*`` lines of ``dev`` and
``env``, a token, migration names, the demo's result); logs go to stderr. Failures are one
line on stderr: exit status 2 for settings and flags, 1 for runtime failures (a database or
cluster that cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from hewer.engine.config import ConfigError, Settings
from hewer.engine.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from hewer.engine.dev_env import (
    DevEnvError,
    export_lines,
    read_client_env,
    remove_client_env,
    write_client_env,
)
from hewer.engine.errors import EngineStartError

if TYPE_CHECKING:
    from hewer.engine.ready import ReadyInfo

__all__ = ["client_env", "main"]

log = logging.getLogger("hewer")
# how long the demo worker gets to shut down on SIGTERM before it is killed
DEMO_STOP_SECONDS = 10.0


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


class RuntimeFailure(Exception):
    """Something the command needs is unreachable or broken: one line, exit status 1."""


# what a database that is down, unreachable or refusing us raises
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def client_env(info: ReadyInfo) -> dict[str, str]:
    """The environment an official SDK client needs to reach the engine."""
    return {
        "HATCHET_CLIENT_TOKEN": info.token,
        "HATCHET_CLIENT_TLS_STRATEGY": "none",
        "HATCHET_CLIENT_HOST_PORT": info.grpc_address,
        "HATCHET_CLIENT_SERVER_URL": info.server_url,
    }


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        os.environ,
        data_dir=getattr(args, "data_dir", None),
        grpc_port=getattr(args, "grpc_port", None),
        http_port=getattr(args, "http_port", None),
    )


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """HEWER_DATABASE_URL, or the embedded server in ``<data_dir>/pg``.

    The embedded server is stopped on exit only if this call started it, so a second
    command next to a running ``hewer dev`` leaves that engine's database alone.
    """
    if settings.database_url:
        yield settings.database_url
        return
    pg = EmbeddedPostgres(data_dir=settings.data_dir / "pg")
    started_here = not pg.is_running()
    log.info(
        "embedded PostgreSQL in %s (%s)",
        pg.data_dir,
        "starting" if started_here else "already running",
    )
    dsn = pg.start()
    try:
        yield dsn
    finally:
        if started_here:
            log.info("stopping embedded PostgreSQL")
            pg.stop()


async def _run_engine(
    *,
    settings: Settings,
    dsn: str,
    demo: bool,
    client_env_dir: Path | None = None,
    processes: int = 1,
) -> None:
    """``client_env_dir``: where ``hewer dev`` writes ``client.env`` (see dev_env.py).
    ``processes``: more than one runs that many engine processes (see processes.py); one
    runs the engine in this process."""
    from hewer.engine.db.migrate import apply_migrations

    for name in await apply_migrations(dsn):
        log.info("applied migration %s", name)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # a signal arrived
    # the engine stops once the demo worker, its client, has shut down against a live engine
    engine_stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    demo_process: list[asyncio.subprocess.Process] = []
    background: set[asyncio.Task[None]] = set()

    async def start_demo(env: dict[str, str]) -> None:
        log.info("starting the demo worker: %s -m hewer.engine.demo", sys.executable)
        # its own session: a Ctrl-C or a group-wide SIGTERM reaches only this process, which
        # then stops the worker with exactly one SIGTERM (a second one makes the SDK abort)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hewer.engine.demo",
            env={**os.environ, **env},
            start_new_session=True,
        )
        demo_process.append(proc)
        code = await proc.wait()
        if not stop.is_set():
            log.warning("the demo worker exited with status %s", code)

    async def stop_demo() -> None:
        for proc in demo_process:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=DEMO_STOP_SECONDS)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    async def stop_engine_after_demo() -> None:
        await stop.wait()
        try:
            await stop_demo()
        finally:
            engine_stop.set()

    def on_ready(info: ReadyInfo) -> None:
        env = client_env(info)
        for key, value in env.items():
            print(f"{key}={value}")
        # after the four client lines, which scripts read first
        print(f"HEWER_DASHBOARD_URL={info.dashboard_url}")
        sys.stdout.flush()
        if client_env_dir is not None:
            # with the tenant id, for REST paths (the SDK takes it from the token otherwise)
            written = write_client_env(
                data_dir=client_env_dir,
                env={**env, "HATCHET_CLIENT_TENANT_ID": info.tenant_id},
                pid=os.getpid(),
            )
            log.info("client settings in %s (print them with `hewer env`)", written)
        log.info("engine ready: gRPC %s, REST %s", info.grpc_address, info.server_url)
        if demo:
            task = loop.create_task(start_demo(env))
            background.add(task)
            task.add_done_callback(background.discard)

    stopper = loop.create_task(stop_engine_after_demo())
    try:
        if processes > 1:
            from hewer.engine.processes import run_engine_processes

            await run_engine_processes(
                settings=settings, dsn=dsn, count=processes, stop=engine_stop, on_ready=on_ready
            )
        else:
            from hewer.engine.server import run_engine

            await run_engine(settings=settings, dsn=dsn, stop=engine_stop, on_ready=on_ready)
    finally:
        stopper.cancel()
        if client_env_dir is not None:
            remove_client_env(data_dir=client_env_dir, pid=os.getpid())
        await stop_demo()  # the engine failed or stopped on its own: do not leave the worker
        for task in list(background):
            task.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _processes(args: argparse.Namespace) -> int:
    count: int = args.processes
    if count < 1:
        raise CliError("--processes must be at least 1")
    return count


def _cmd_dev(args: argparse.Namespace) -> int:
    settings = _settings(args)
    processes = _processes(args)
    if settings.database_url:
        log.info("using HEWER_DATABASE_URL instead of the embedded PostgreSQL")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _database(settings) as dsn:
        asyncio.run(
            _run_engine(
                settings=settings,
                dsn=dsn,
                demo=args.demo,
                client_env_dir=settings.data_dir,
                processes=processes,
            )
        )
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        env = read_client_env(data_dir=settings.data_dir, wait_seconds=args.wait)
    except DevEnvError as exc:
        raise RuntimeFailure(str(exc)) from None
    for line in export_lines(env):
        print(line)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.database_url:
        raise CliError("hewer serve needs HEWER_DATABASE_URL (use `hewer dev` for a local engine)")
    if args.engine_process is not None:
        from hewer.engine.processes import run_child

        asyncio.run(
            run_child(settings=settings, dsn=settings.database_url, index=args.engine_process)
        )
        return 0
    processes = _processes(args)
    asyncio.run(
        _run_engine(settings=settings, dsn=settings.database_url, demo=False, processes=processes)
    )
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from hewer.engine.db.migrate import apply_migrations

    settings = _settings(args)
    with _database(settings) as dsn:
        applied = asyncio.run(apply_migrations(dsn))
    for name in applied:
        print(name)
    if not applied:
        log.info("the database schema is up to date")
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    from hewer.engine.server import create_token

    settings = _settings(args)
    if args.expires_in_days <= 0:
        raise CliError("--expires-in-days must be positive")
    pg_dir = settings.data_dir / "pg"
    if not settings.database_url and not (pg_dir / "PG_VERSION").exists():
        # creating a cluster here would leave a database no engine uses
        raise CliError(
            f"no database in {pg_dir}: run `hewer dev --data-dir {settings.data_dir}` first "
            "(or set HEWER_DATABASE_URL)"
        )
    with _database(settings) as dsn:
        token = asyncio.run(
            create_token(
                settings=settings,
                dsn=dsn,
                tenant_name=args.tenant or settings.default_tenant,
                name=args.name,
                expires_in=timedelta(days=args.expires_in_days),
            )
        )
    print(token, flush=True)
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    import yaml
    from kubernetes.config import ConfigException

    from hewer.operator.config import ConfigError as OperatorConfigError
    from hewer.operator.main import run

    try:
        return run(
            namespaces=args.namespace or (),
            all_namespaces=args.all_namespaces,
            verbose=args.verbose,
        )
    except OperatorConfigError as exc:
        raise CliError(str(exc)) from None
    except (ConfigException, yaml.YAMLError) as exc:
        log.debug("Kubernetes configuration", exc_info=True)
        cause = " ".join(str(exc).split())
        raise RuntimeFailure(f"cannot load the Kubernetes configuration: {cause}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hewer", description="Hewer: a Hatchet-compatible durable task engine."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where the embedded PostgreSQL lives (<dir>/pg); "
            "default HEWER_DATA_DIR or the user data dir",
        )

    def ports(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--grpc-port",
            type=int,
            default=None,
            help="gRPC port (default HEWER_GRPC_PORT or 7077)",
        )
        p.add_argument(
            "--http-port",
            type=int,
            default=None,
            help="REST port (default HEWER_HTTP_PORT or 8080)",
        )
        p.add_argument(
            "--processes",
            type=int,
            default=1,
            metavar="N",
            help="run N engine processes sharing both ports with SO_REUSEPORT, to use N "
            "cores (default 1: the engine runs in this process)",
        )

    dev = sub.add_parser("dev", help="run the engine on an embedded PostgreSQL")
    data_dir(dev)
    ports(dev)
    dev.add_argument(
        "--demo", action="store_true", help="also run a demo worker and one demo workflow run"
    )
    dev.set_defaults(func=_cmd_dev)

    env = sub.add_parser(
        "env", help="print export lines for the client settings of the running hewer dev"
    )
    data_dir(env)
    env.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for hewer dev to become ready (default 0)",
    )
    env.set_defaults(func=_cmd_env)

    serve = sub.add_parser("serve", help="run the engine on HEWER_DATABASE_URL")
    ports(serve)
    # internal: one of the processes of --processes N, started by its parent (processes.py)
    serve.add_argument("--engine-process", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(func=_cmd_serve)

    migrate = sub.add_parser(
        "migrate", help="apply migrations to HEWER_DATABASE_URL (or the embedded database)"
    )
    data_dir(migrate)
    migrate.set_defaults(func=_cmd_migrate)

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = token_sub.add_parser("create", help="create an API token and print it")
    create.add_argument(
        "--tenant", default=None, help="tenant name (default HEWER_DEFAULT_TENANT or 'default')"
    )
    data_dir(create)
    create.add_argument("--name", default="cli", help="a label for the token (default 'cli')")
    create.add_argument(
        "--expires-in-days", type=int, default=90, help="validity in days (default 90)"
    )
    create.set_defaults(func=_cmd_token_create)

    operator = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (HEWER_ENGINE_URL, HEWER_ENGINE_TOKEN[_FILE])",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch this namespace (repeatable; default 'default')",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    operator.add_argument("--verbose", action="store_true", help="kopf's debug logging")
    operator.set_defaults(func=_cmd_operator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        _setup_logging(settings.log_level)
        code: int = args.func(args)
    except (CliError, ConfigError, EmbeddedPostgresError, EngineStartError) as exc:
        print(f"hewer: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
        print(f"hewer: error: {exc}", file=sys.stderr)
        return 1
    except _DATABASE_ERRORS as exc:
        log.debug("database failure", exc_info=True)  # the traceback, for HEWER_LOG_LEVEL=DEBUG
        print(f"hewer: error: the database failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
