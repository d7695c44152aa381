"""The ``hewer`` command against a real embedded PostgreSQL, with a fake engine.

The fake ``hewer.engine.server`` keeps these tests about the CLI's own duties: the
``HATCHET_CLIENT_*`` lines, signals, and starting/stopping the embedded server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from hewer.engine.cli import main
from hewer.engine.db.embedded import EmbeddedPostgres
from hewer.engine.db.migrate import migration_files

FAKE_SERVER = textwrap.dedent(
    """
    import asyncio, sys, types
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ReadyInfo:
        tenant_id: str
        token: str
        grpc_address: str
        server_url: str
        dashboard_url: str

    async def run_engine(*, settings, dsn, stop, on_ready=None):
        import asyncpg
        conn = await asyncpg.connect(dsn)
        await conn.close()
        on_ready(ReadyInfo("t1", "eyFAKE." + settings.default_tenant,
                           settings.public_grpc_address, settings.public_server_url,
                           settings.public_server_url + "/"))
        await stop.wait()

    async def create_token(*, settings, dsn, tenant_name, name, expires_in):
        import asyncpg
        conn = await asyncpg.connect(dsn)
        await conn.close()
        return f"eyTOKEN.{tenant_name}.{name}.{expires_in.days}"

    module = types.ModuleType("hewer.engine.server")
    module.__dict__.update(ReadyInfo=ReadyInfo, run_engine=run_engine,
                           create_token=create_token)
    sys.modules["hewer.engine.server"] = module
    from hewer.engine.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: /tmp/pytest-of-root is 0700, and the server may run as nobody.
    base = Path(tempfile.mkdtemp(prefix="hewer-cli-test-"))
    base.chmod(0o755)
    yield base
    pg = EmbeddedPostgres(data_dir=base / "pg")
    if pg.is_running():
        pg.stop()
    shutil.rmtree(base, ignore_errors=True)


def _hewer(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEWER_")}
    return subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_dev_prints_client_env_and_stops_on_sigterm(data_dir: Path) -> None:
    proc = _hewer("dev", "--data-dir", str(data_dir), "--grpc-port", "7177")
    assert proc.stdout is not None
    lines = [proc.stdout.readline().rstrip("\n") for _ in range(4)]
    assert lines == [
        "HATCHET_CLIENT_TOKEN=eyFAKE.default",
        "HATCHET_CLIENT_TLS_STRATEGY=none",
        "HATCHET_CLIENT_HOST_PORT=localhost:7177",
        "HATCHET_CLIENT_SERVER_URL=http://localhost:8080",
    ]
    # the dashboard's address comes after the four lines scripts read
    assert proc.stdout.readline() == "HEWER_DASHBOARD_URL=http://localhost:8080/\n"
    assert EmbeddedPostgres(data_dir=data_dir / "pg").is_running()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == ""
    assert not EmbeddedPostgres(data_dir=data_dir / "pg").is_running()


def test_token_create_leaves_a_running_server_running(data_dir: Path) -> None:
    proc = _hewer("migrate", "--data-dir", str(data_dir))  # creates the cluster, stops it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    proc = _hewer("token", "create", "--data-dir", str(data_dir), "--tenant", "acme")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "eyTOKEN.acme.cli.90\n"
    pg = EmbeddedPostgres(data_dir=data_dir / "pg")
    assert not pg.is_running()  # started for the command, stopped after it
    pg.start()
    proc = _hewer("token", "create", "--data-dir", str(data_dir), "--expires-in-days", "7")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "eyTOKEN.default.cli.7\n"
    assert pg.is_running()  # not ours to stop


def test_serve_requires_database_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HEWER_DATABASE_URL", raising=False)
    assert main(["serve"]) == 2
    assert "HEWER_DATABASE_URL" in capsys.readouterr().err


def test_bad_setting_is_a_clean_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEWER_GRPC_PORT", "nope")
    assert main(["migrate"]) == 2
    assert "HEWER_GRPC_PORT must be an integer" in capsys.readouterr().err


async def test_migrate_database_url(empty_database: Callable[[], Awaitable[str]]) -> None:
    dsn = await empty_database()
    env = {**os.environ, "HEWER_DATABASE_URL": dsn}

    async def migrate() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hewer.engine",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    assert (await migrate()).split() == [name for _, name, _ in migration_files()]
    assert await migrate() == ""


def test_token_create_refuses_a_data_dir_without_database(data_dir: Path) -> None:
    proc = _hewer("token", "create", "--data-dir", str(data_dir))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    assert err.startswith("hewer: error: no database in ") and err.count("\n") == 1, err
    assert list(data_dir.iterdir()) == []  # no stray cluster


async def test_dev_uses_database_url_and_writes_client_env(
    data_dir: Path, empty_database: Callable[[], Awaitable[str]]
) -> None:
    """``hewer dev`` with HEWER_DATABASE_URL uses that server (no embedded cluster), and
    ``hewer env`` prints the running engine's settings as export lines, until it stops."""
    dsn = await empty_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEWER_")}
    env["HEWER_DATABASE_URL"] = dsn
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FAKE_SERVER,
        *("dev", "--data-dir", str(data_dir), "--grpc-port", "7178"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = [(await proc.stdout.readline()).decode().rstrip("\n") for _ in range(4)]
    assert lines[2] == "HATCHET_CLIENT_HOST_PORT=localhost:7178"
    assert not (data_dir / "pg").exists()  # the embedded server was not used

    async def hewer_env() -> tuple[int, str, str]:
        shown = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hewer.engine",
            *("env", "--data-dir", str(data_dir), "--wait", "10"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await shown.communicate()
        assert shown.returncode is not None
        return shown.returncode, out.decode(), err.decode()

    code, out, err = await hewer_env()
    assert code == 0, err
    assert out.splitlines() == [
        *(f"export {line}" for line in lines),
        "export HATCHET_CLIENT_TENANT_ID=t1",
    ]
    assert oct((data_dir / "client.env").stat().st_mode & 0o777) == "0o600"
    # the lines work with eval, as the README says
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f'eval "$({sys.executable} -m hewer.engine env --data-dir {data_dir})"; '
        'echo "$HATCHET_CLIENT_HOST_PORT"',
        stdout=asyncio.subprocess.PIPE,
    )
    shell_out, _ = await shell.communicate()
    assert shell_out.decode().strip() == "localhost:7178"

    proc.send_signal(signal.SIGTERM)
    _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert not (data_dir / "client.env").exists()
    code, out, err = await hewer_env()
    assert (code, out) == (1, "")
    assert "no hewer dev is running" in err


def test_serve_with_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEWER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hewer: error: the database failed: ConnectionRefusedError"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_operator_with_bad_kubeconfig_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    kubeconfig = data_dir / "kubeconfig"
    kubeconfig.write_text("garbage: [\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("HEWER_ENGINE_URL", "http://localhost:1")
    monkeypatch.setenv("HEWER_ENGINE_TOKEN", _any_token())
    assert main(["operator"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hewer: error: cannot load the Kubernetes configuration"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def _any_token() -> str:
    from datetime import UTC, datetime, timedelta

    from hewer.engine.core.tokens import mint_token

    now = datetime.now(UTC)
    return mint_token(
        secret=b"s" * 32,
        tenant_id="t",
        token_id="i",
        server_url="http://localhost:1",
        grpc_address="localhost:2",
        expires_at=now + timedelta(days=1),
        issued_at=now,
    )
