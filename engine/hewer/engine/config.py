"""Engine settings, read once at start-up from ``HEWER_*`` environment variables.

===============================  ============================  ===================================
Variable                         Default                       Meaning
===============================  ============================  ===================================
HEWER_DATABASE_URL               unset: embedded PostgreSQL    ``postgresql://`` DSN
HEWER_DATA_DIR                   see below                     embedded PG lives in ``<dir>/pg``
HEWER_GRPC_PORT                  7077                          gRPC listen port
HEWER_HTTP_PORT                  8080                          REST listen port
HEWER_BIND_HOST                  0.0.0.0                       listen address of both
HEWER_PUBLIC_GRPC_ADDRESS        localhost:<grpc port>         gRPC ``host:port`` put in tokens
HEWER_PUBLIC_SERVER_URL          http://localhost:<http port>  REST base URL put in tokens
HEWER_DEFAULT_TENANT             default                       tenant created at first start
HEWER_SIGNING_SECRET             unset: generated, in the DB   HS256 key for API tokens (>= 16)
HEWER_ENCRYPTION_KEY             unset: generated, in the DB   key for secrets at rest (>= 16)
HEWER_LOG_LEVEL                  INFO                          DEBUG, INFO, WARNING, ERROR
HEWER_HEARTBEAT_TIMEOUT_SECONDS  30                            a silent worker is dead after it
HEWER_DB_POOL_SIZE               20                            asyncpg pool max size
HEWER_MAX_PAYLOAD_BYTES          4194304 (4 MiB)               largest input/output accepted
HEWER_RETENTION_HOURS            720 (30 days)                 final runs and events older go
HEWER_RETENTION_CHECK_SECONDS    3600                          how often retention runs
HEWER_DASHBOARD_AUTH             token                         ``none``: dashboard without login
===============================  ============================  ===================================

``HEWER_DATA_DIR`` defaults to platformdirs' ``user_data_dir("hewer")``
(``~/.local/share/hewer`` on Linux), or ``/var/lib/hewer`` as root, because the embedded
server then runs as ``nobody``, which cannot enter ``/root``.

Other variables read elsewhere: ``HEWER_PG_BINDIR`` (PostgreSQL binaries for the embedded
server) and ``HEWER_TEST_DATABASE_URL`` (tests against an external server).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

__all__ = ["ConfigError", "Settings", "default_data_dir"]

_T = TypeVar("_T")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
_HOST_PORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")
_MIN_SECRET_LEN = 16


def default_data_dir() -> Path:
    """``platformdirs.user_data_dir("hewer")``; ``/var/lib/hewer`` when running as root.

    As root the embedded server runs as ``nobody``, which cannot enter ``/root`` (0700).
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/hewer")
    return Path(platformdirs.user_data_dir("hewer"))


class ConfigError(ValueError):
    """A setting has a value the engine cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = dataclasses.field(default_factory=lambda: default_data_dir())
    grpc_port: int = 7077
    http_port: int = 8080
    bind_host: str = "0.0.0.0"
    public_grpc_address: str = "localhost:7077"
    public_server_url: str = "http://localhost:8080"
    default_tenant: str = "default"
    signing_secret: str | None = None
    encryption_key: str | None = None
    log_level: str = "INFO"
    heartbeat_timeout_seconds: float = 30.0
    db_pool_size: int = 20
    max_payload_bytes: int = 4 * 1024 * 1024
    retention_hours: int = 720
    retention_interval_seconds: float = 3600.0
    # the web dashboard's login: "token" (an API token, like the REST API) or "none"
    # (every tenant without login, for a trusted local setup)
    dashboard_auth: str = "token"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Settings from ``HEWER_*`` variables; ``overrides`` (field names) win over them.

        An override of ``None`` means "not given" (handy for optional CLI flags). The public
        addresses default to ``localhost`` and the final ports.
        """
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        given = {k: v for k, v in overrides.items() if v is not None}

        def get(field: str, var: str, parse: Callable[[str, str], _T], default: _T) -> _T:
            if field in given:
                value: _T = given[field]
                return value
            raw = environ.get(var)
            if raw is None or raw.strip() == "":
                return default
            return parse(var, raw.strip())

        grpc_port = get("grpc_port", "HEWER_GRPC_PORT", _port, 7077)
        http_port = get("http_port", "HEWER_HTTP_PORT", _port, 8080)
        settings = cls(
            database_url=get("database_url", "HEWER_DATABASE_URL", _str, None),
            data_dir=get("data_dir", "HEWER_DATA_DIR", _path, default_data_dir()),
            grpc_port=grpc_port,
            http_port=http_port,
            bind_host=get("bind_host", "HEWER_BIND_HOST", _str, "0.0.0.0"),
            public_grpc_address=get(
                "public_grpc_address", "HEWER_PUBLIC_GRPC_ADDRESS", _str, f"localhost:{grpc_port}"
            ),
            public_server_url=get(
                "public_server_url",
                "HEWER_PUBLIC_SERVER_URL",
                _str,
                f"http://localhost:{http_port}",
            ),
            default_tenant=get("default_tenant", "HEWER_DEFAULT_TENANT", _str, "default"),
            signing_secret=get("signing_secret", "HEWER_SIGNING_SECRET", _str, None),
            encryption_key=get("encryption_key", "HEWER_ENCRYPTION_KEY", _str, None),
            log_level=get("log_level", "HEWER_LOG_LEVEL", _str, "INFO").upper(),
            heartbeat_timeout_seconds=get(
                "heartbeat_timeout_seconds", "HEWER_HEARTBEAT_TIMEOUT_SECONDS", _float, 30.0
            ),
            db_pool_size=get("db_pool_size", "HEWER_DB_POOL_SIZE", _int, 20),
            max_payload_bytes=get(
                "max_payload_bytes", "HEWER_MAX_PAYLOAD_BYTES", _int, 4 * 1024 * 1024
            ),
            retention_hours=get("retention_hours", "HEWER_RETENTION_HOURS", _int, 720),
            retention_interval_seconds=get(
                "retention_interval_seconds", "HEWER_RETENTION_CHECK_SECONDS", _float, 3600.0
            ),
            dashboard_auth=get("dashboard_auth", "HEWER_DASHBOARD_AUTH", _str, "token").lower(),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first variable with an unusable value."""
        if self.database_url is not None and not self.database_url.startswith(
            ("postgres://", "postgresql://")
        ):
            raise ConfigError(
                "HEWER_DATABASE_URL must be a postgresql:// URL, got "
                f"{self.database_url.split('://')[0]!r}://..."
            )
        for var, port in (("HEWER_GRPC_PORT", self.grpc_port), ("HEWER_HTTP_PORT", self.http_port)):
            _port(var, str(port))
        if self.grpc_port == self.http_port:
            raise ConfigError(
                f"HEWER_GRPC_PORT and HEWER_HTTP_PORT must differ (both are {self.grpc_port})"
            )
        if not self.bind_host:
            raise ConfigError("HEWER_BIND_HOST must not be empty")
        match = _HOST_PORT_RE.match(self.public_grpc_address)
        if match is None or not 0 < int(match[2]) < 65536:
            raise ConfigError(
                f"HEWER_PUBLIC_GRPC_ADDRESS must be host:port, got {self.public_grpc_address!r}"
            )
        if not self.public_server_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"HEWER_PUBLIC_SERVER_URL must start with http:// or https://, got "
                f"{self.public_server_url!r}"
            )
        if not _TENANT_RE.match(self.default_tenant):
            raise ConfigError(
                "HEWER_DEFAULT_TENANT must be 1-63 letters, digits, '_', '-' or '.', got "
                f"{self.default_tenant!r}"
            )
        if self.signing_secret is not None and len(self.signing_secret) < _MIN_SECRET_LEN:
            raise ConfigError(
                f"HEWER_SIGNING_SECRET must be at least {_MIN_SECRET_LEN} characters long"
            )
        if self.encryption_key is not None and len(self.encryption_key) < _MIN_SECRET_LEN:
            raise ConfigError(
                f"HEWER_ENCRYPTION_KEY must be at least {_MIN_SECRET_LEN} characters long"
            )
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(
                f"HEWER_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}"
            )
        if not self.heartbeat_timeout_seconds > 0:
            raise ConfigError("HEWER_HEARTBEAT_TIMEOUT_SECONDS must be greater than 0")
        if self.db_pool_size < 1:
            raise ConfigError("HEWER_DB_POOL_SIZE must be at least 1")
        if self.max_payload_bytes < 1024:
            raise ConfigError("HEWER_MAX_PAYLOAD_BYTES must be at least 1024")
        if self.retention_hours < 1:
            raise ConfigError("HEWER_RETENTION_HOURS must be at least 1")
        if self.retention_interval_seconds <= 0:
            raise ConfigError("HEWER_RETENTION_CHECK_SECONDS must be greater than 0")
        if self.dashboard_auth not in ("token", "none"):
            raise ConfigError(
                f"HEWER_DASHBOARD_AUTH must be 'token' or 'none', got {self.dashboard_auth!r}"
            )

    @property
    def signing_secret_bytes(self) -> bytes | None:
        return None if self.signing_secret is None else self.signing_secret.encode()


def _str(var: str, raw: str) -> str:
    return raw


def _path(var: str, raw: str) -> Path:
    return Path(raw).expanduser()


def _int(var: str, raw: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{var} must be an integer, got {raw!r}") from None


def _float(var: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{var} must be a number, got {raw!r}") from None


def _port(var: str, raw: str) -> int:
    port = _int(var, raw)
    if not 0 < port < 65536:
        raise ConfigError(f"{var} must be a port number between 1 and 65535, got {raw}")
    return port
