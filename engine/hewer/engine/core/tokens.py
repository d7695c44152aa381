"""API tokens: HS256 JSON Web Tokens, minted and verified with the standard library only.

The Hatchet SDK reads three claims from the token without verifying it (``hatchet_sdk.token``):
``sub`` (the tenant id), ``server_url`` and ``grpc_broadcast_address``; it uses them as the
default REST and gRPC addresses. Everything else is for us: ``token_id`` lets the engine
revoke a token (the database keeps one row per id), ``exp`` bounds its life.

Only HS256 is accepted, whatever the header says, so ``alg: none`` and key-confusion tricks
fail with "unsupported alg" before any signature work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["InvalidToken", "TokenClaims", "mint_token", "verify_token"]

_HEADER = {"alg": "HS256", "typ": "JWT"}


class InvalidToken(Exception):
    """The token is not one we issued, or no longer valid. ``str(exc)`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TokenClaims:
    tenant_id: str
    token_id: str
    expires_at: datetime
    server_url: str
    grpc_address: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or any(c in text for c in "=+/ \n"):
        raise InvalidToken("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None


def _json_segment(value: dict[str, Any]) -> str:
    return _b64encode(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def _sign(signing_input: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def _timestamp(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("token times must be timezone-aware")
    return int(moment.timestamp())


def mint_token(
    *,
    secret: bytes,
    tenant_id: str,
    token_id: str,
    server_url: str,
    grpc_address: str,
    expires_at: datetime,
    issued_at: datetime,
) -> str:
    """A signed token for ``tenant_id`` that the official SDK accepts as-is."""
    if not secret:
        raise ValueError("empty signing secret")
    claims = {
        "sub": tenant_id,
        "iss": server_url,
        "aud": server_url,
        "iat": _timestamp(issued_at),
        "exp": _timestamp(expires_at),
        "token_id": token_id,
        "server_url": server_url,
        "grpc_broadcast_address": grpc_address,
    }
    signing_input = f"{_json_segment(_HEADER)}.{_json_segment(claims)}"
    signature = _sign(signing_input.encode("ascii"), secret)
    return f"{signing_input}.{_b64encode(signature)}"


def _decode_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(segment))
    except (UnicodeDecodeError, ValueError):
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _str_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken("malformed token")
    return value


def verify_token(token: str, *, secret: bytes, now: datetime) -> TokenClaims:
    """Check the signature and expiry of ``token``; raise ``InvalidToken`` otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token")
    header_b64, claims_b64, signature_b64 = parts
    header = _decode_object(header_b64)
    if header.get("alg") != "HS256":
        raise InvalidToken("unsupported alg")
    signature = _b64decode(signature_b64)
    expected = _sign(f"{header_b64}.{claims_b64}".encode("ascii", "replace"), secret)
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("bad signature")
    claims = _decode_object(claims_b64)
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise InvalidToken("malformed token")
    try:
        expires_at = datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken("malformed token") from None
    if _timestamp(now) >= exp:
        raise InvalidToken("token expired")
    return TokenClaims(
        tenant_id=_str_claim(claims, "sub"),
        token_id=_str_claim(claims, "token_id"),
        expires_at=expires_at,
        server_url=_str_claim(claims, "server_url"),
        grpc_address=_str_claim(claims, "grpc_broadcast_address"),
    )
