from __future__ import annotations

from pathlib import Path

import pytest

from hewer.engine.config import ConfigError, Settings, default_data_dir


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.data_dir == default_data_dir()
    assert (s.grpc_port, s.http_port, s.bind_host) == (7077, 8080, "0.0.0.0")
    assert s.public_grpc_address == "localhost:7077"
    assert s.public_server_url == "http://localhost:8080"
    assert s.default_tenant == "default"
    assert s.signing_secret is None and s.signing_secret_bytes is None
    assert s.log_level == "INFO"
    assert s.heartbeat_timeout_seconds == 30
    assert s.db_pool_size == 20
    assert s.max_payload_bytes == 4 * 1024 * 1024
    assert s == Settings(data_dir=s.data_dir)


def test_all_variables() -> None:
    env = {
        "HEWER_DATABASE_URL": "postgresql://u:p@db:5432/hewer",
        "HEWER_DATA_DIR": "/srv/hewer",
        "HEWER_GRPC_PORT": "9000",
        "HEWER_HTTP_PORT": "9001",
        "HEWER_BIND_HOST": "127.0.0.1",
        "HEWER_PUBLIC_GRPC_ADDRESS": "engine.example.com:443",
        "HEWER_PUBLIC_SERVER_URL": "https://engine.example.com",
        "HEWER_DEFAULT_TENANT": "acme",
        "HEWER_SIGNING_SECRET": "s" * 32,
        "HEWER_LOG_LEVEL": "debug",
        "HEWER_HEARTBEAT_TIMEOUT_SECONDS": "2.5",
        "HEWER_DB_POOL_SIZE": "5",
        "HEWER_MAX_PAYLOAD_BYTES": "1_048_576",
    }
    s = Settings.from_env(env)
    assert s.database_url == "postgresql://u:p@db:5432/hewer"
    assert s.data_dir == Path("/srv/hewer")
    assert (s.grpc_port, s.http_port, s.bind_host) == (9000, 9001, "127.0.0.1")
    assert s.public_grpc_address == "engine.example.com:443"
    assert s.public_server_url == "https://engine.example.com"
    assert s.default_tenant == "acme"
    assert s.signing_secret_bytes == b"s" * 32
    assert s.log_level == "DEBUG"
    assert s.heartbeat_timeout_seconds == 2.5
    assert s.db_pool_size == 5
    assert s.max_payload_bytes == 1024 * 1024


def test_public_addresses_follow_ports() -> None:
    s = Settings.from_env({"HEWER_GRPC_PORT": "7100"}, http_port=8100)
    assert s.public_grpc_address == "localhost:7100"
    assert s.public_server_url == "http://localhost:8100"


def test_overrides_win_and_none_means_not_given() -> None:
    env = {"HEWER_GRPC_PORT": "7100", "HEWER_DATABASE_URL": "postgres://x/y"}
    s = Settings.from_env(env, grpc_port=7200, database_url=None, data_dir=Path("/d"))
    assert s.grpc_port == 7200
    assert s.database_url == "postgres://x/y"
    assert s.data_dir == Path("/d")


def test_blank_variables_are_unset() -> None:
    assert Settings.from_env({"HEWER_DATABASE_URL": "", "HEWER_GRPC_PORT": " "}).grpc_port == 7077


def test_unknown_override() -> None:
    with pytest.raises(TypeError, match="grpc_prot"):
        Settings.from_env({}, grpc_prot=1)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("HEWER_GRPC_PORT", "abc", "HEWER_GRPC_PORT must be an integer"),
        ("HEWER_GRPC_PORT", "0", "HEWER_GRPC_PORT must be a port number"),
        ("HEWER_HTTP_PORT", "70000", "HEWER_HTTP_PORT must be a port number"),
        ("HEWER_HTTP_PORT", "7077", "must differ"),
        ("HEWER_DATABASE_URL", "mysql://x", "HEWER_DATABASE_URL must be a postgresql://"),
        ("HEWER_PUBLIC_GRPC_ADDRESS", "localhost", "HEWER_PUBLIC_GRPC_ADDRESS must be host:port"),
        ("HEWER_PUBLIC_GRPC_ADDRESS", "h:99999", "HEWER_PUBLIC_GRPC_ADDRESS must be host:port"),
        ("HEWER_PUBLIC_SERVER_URL", "localhost:8080", "HEWER_PUBLIC_SERVER_URL must start"),
        ("HEWER_DEFAULT_TENANT", "a b", "HEWER_DEFAULT_TENANT must be"),
        ("HEWER_SIGNING_SECRET", "short", "HEWER_SIGNING_SECRET must be at least 16"),
        ("HEWER_LOG_LEVEL", "LOUD", "HEWER_LOG_LEVEL must be one of"),
        ("HEWER_HEARTBEAT_TIMEOUT_SECONDS", "0", "HEWER_HEARTBEAT_TIMEOUT_SECONDS must be"),
        ("HEWER_HEARTBEAT_TIMEOUT_SECONDS", "x", "HEWER_HEARTBEAT_TIMEOUT_SECONDS must be a"),
        ("HEWER_DB_POOL_SIZE", "0", "HEWER_DB_POOL_SIZE must be at least 1"),
        ("HEWER_MAX_PAYLOAD_BYTES", "10", "HEWER_MAX_PAYLOAD_BYTES must be at least"),
    ],
)
def test_bad_values(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({var: value})


def test_ipv6_public_address() -> None:
    assert Settings.from_env({"HEWER_PUBLIC_GRPC_ADDRESS": "[::1]:7077"}).public_grpc_address
