"""The operator's settings, read from the environment.

* ``HEWER_ENGINE_URL``: the engine's REST base URL (required), e.g. ``http://hewer:8080``.
* ``HEWER_ENGINE_TOKEN`` or ``HEWER_ENGINE_TOKEN_FILE`` (a mounted Secret): an API token.
* ``HEWER_TENANT``: the tenant id; default the token's ``sub`` claim.
* ``HEWER_ENGINE_GRPC_ADDRESS``: the gRPC ``host:port`` worker pods dial; default the token's
  ``grpc_broadcast_address`` claim.
* ``HEWER_ENGINE_PUBLIC_URL``: the REST URL worker pods use; default the token's
  ``server_url`` claim, else ``HEWER_ENGINE_URL``.
* ``HEWER_OPERATOR_RESYNC_SECONDS`` (default 60): how often every resource is re-applied
  to the engine, which repairs drift.
* ``HEWER_OPERATOR_RETRY_SECONDS`` / ``HEWER_OPERATOR_RETRY_MAX_SECONDS`` (default 2 / 60):
  the exponential backoff while the engine is unreachable.
* ``HEWER_OPERATOR_AUTOSCALE_POLL_SECONDS`` (default 10): the longest an autoscaled pool
  waits between two looks at the engine (an enqueue wakes it at once: it long-polls).
* ``HEWER_OPERATOR_METRICS_PORT`` (default 9090; 0: off): the operator's Prometheus port.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "OperatorConfig", "token_claims"]


class ConfigError(ValueError):
    """Missing or malformed operator settings; the message names the variable."""


def token_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT; the engine verifies it on every call."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ConfigError("the engine token is not a JWT")
    segment = parts[1]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ConfigError("the engine token's claims cannot be decoded") from None
    if not isinstance(claims, dict):
        raise ConfigError("the engine token's claims are not an object")
    return claims


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name} must be a port number (0 turns it off), got {raw!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    engine_url: str
    token: str
    tenant_id: str
    grpc_address: str
    public_url: str
    resync_seconds: float = 60.0
    retry_seconds: float = 2.0
    retry_max_seconds: float = 60.0
    autoscale_poll_seconds: float = 10.0
    metrics_port: int = 9090

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        url = env.get("HEWER_ENGINE_URL", "").strip().rstrip("/")
        if not url:
            raise ConfigError("HEWER_ENGINE_URL is required (the engine's REST URL)")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"HEWER_ENGINE_URL must be an http(s) URL, got {url!r}")
        token = env.get("HEWER_ENGINE_TOKEN", "").strip()
        token_file = env.get("HEWER_ENGINE_TOKEN_FILE", "").strip()
        if not token and token_file:
            try:
                token = Path(token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"HEWER_ENGINE_TOKEN_FILE: cannot read {token_file}: {exc}"
                ) from None
        if not token:
            raise ConfigError("HEWER_ENGINE_TOKEN or HEWER_ENGINE_TOKEN_FILE is required")
        claims = token_claims(token)
        tenant = env.get("HEWER_TENANT", "").strip() or str(claims.get("sub") or "")
        if not tenant:
            raise ConfigError("HEWER_TENANT is not set and the token has no 'sub' claim")
        grpc_address = env.get("HEWER_ENGINE_GRPC_ADDRESS", "").strip() or str(
            claims.get("grpc_broadcast_address") or ""
        )
        if not grpc_address:
            raise ConfigError(
                "HEWER_ENGINE_GRPC_ADDRESS is not set and the token names no gRPC address"
            )
        public_url = (
            env.get("HEWER_ENGINE_PUBLIC_URL", "").strip()
            or str(claims.get("server_url") or "")
            or url
        ).rstrip("/")
        return cls(
            engine_url=url,
            token=token,
            tenant_id=tenant,
            grpc_address=grpc_address,
            public_url=public_url,
            resync_seconds=_positive(env, "HEWER_OPERATOR_RESYNC_SECONDS", 60.0),
            retry_seconds=_positive(env, "HEWER_OPERATOR_RETRY_SECONDS", 2.0),
            retry_max_seconds=_positive(env, "HEWER_OPERATOR_RETRY_MAX_SECONDS", 60.0),
            autoscale_poll_seconds=_positive(env, "HEWER_OPERATOR_AUTOSCALE_POLL_SECONDS", 10.0),
            metrics_port=_port(env, "HEWER_OPERATOR_METRICS_PORT", 9090),
        )

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based): doubling, capped."""
        return float(min(self.retry_max_seconds, self.retry_seconds * (2 ** min(retry, 30))))
