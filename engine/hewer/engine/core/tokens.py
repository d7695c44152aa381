"""API tokens: HS256 JSON Web Tokens, minted and verified with PyJWT.

The Hatchet SDK reads three claims from the token without verifying it (``hatchet_sdk.token``):
``sub`` (the tenant id), ``server_url`` and ``grpc_broadcast_address``; it uses them as the
default REST and gRPC addresses. Everything else is for us: ``token_id`` lets the engine
revoke a token (the database keeps one row per id), ``exp`` bounds its life.

Only HS256 is accepted, whatever the header says, so ``alg: none`` and key-confusion tricks
fail with "unsupported alg" before any signature work. ``exp`` and our own claims are
required; ``iss``, ``aud`` and ``iat`` are written for other tools and not checked (the server
URL may change without invalidating tokens), as before the switch to PyJWT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

__all__ = ["InvalidToken", "TokenClaims", "mint_token", "verify_token"]

_ALGORITHM = "HS256"
_REQUIRED = ["exp", "sub", "token_id", "server_url", "grpc_broadcast_address"]
_OPTIONS: Any = {
    "require": _REQUIRED,
    "verify_signature": True,
    "verify_exp": True,
    "verify_aud": False,
    "verify_iss": False,
    "verify_iat": False,
}


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
        "aud": server_url,
        "exp": _timestamp(expires_at),
        "grpc_broadcast_address": grpc_address,
        "iat": _timestamp(issued_at),
        "iss": server_url,
        "server_url": server_url,
        "sub": tenant_id,
        "token_id": token_id,
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def _str_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken("malformed token")
    return value


def verify_token(token: str, *, secret: bytes) -> TokenClaims:
    """Check the algorithm, signature, required claims and expiry (against the clock) of
    ``token``; raise ``InvalidToken`` otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("malformed token")
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=[_ALGORITHM], options=_OPTIONS)
    except jwt.InvalidAlgorithmError:
        raise InvalidToken("unsupported alg") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad signature") from None
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("malformed token") from None
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise InvalidToken("malformed token")
    try:
        expires_at = datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken("malformed token") from None
    return TokenClaims(
        tenant_id=_str_claim(claims, "sub"),
        token_id=_str_claim(claims, "token_id"),
        expires_at=expires_at,
        server_url=_str_claim(claims, "server_url"),
        grpc_address=_str_claim(claims, "grpc_broadcast_address"),
    )
