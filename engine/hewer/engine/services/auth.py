"""Token issuing and checking, shared by the gRPC and REST surfaces."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hewer.engine.core.tokens import InvalidToken, mint_token, verify_token
from hewer.engine.db.repository import Repository
from hewer.engine.services.outage import is_database_unavailable

SIGNING_SECRET_NAME = "jwt-signing-key"
_REVOCATION_CACHE_SECONDS = 5.0


class AuthError(Exception):
    """The request carries no valid token; the message says why (never the secret)."""


@dataclass(frozen=True, slots=True)
class Identity:
    tenant_id: str
    token_id: str


class Authenticator:
    """Checks bearer tokens: signature and expiry, then that the token is known and unrevoked.

    The database check is cached for a few seconds per token so that a busy worker does not
    add a query to every call; a revocation takes effect within that window.
    """

    def __init__(
        self, *, repo: Repository, secret: bytes, server_url: str, grpc_address: str
    ) -> None:
        self._repo = repo
        self._secret = secret
        self.server_url = server_url
        self.grpc_address = grpc_address
        self._checked: dict[str, tuple[float, Identity | None, str]] = {}

    @classmethod
    async def create(
        cls,
        *,
        repo: Repository,
        configured_secret: str | None,
        server_url: str,
        grpc_address: str,
    ) -> Authenticator:
        if configured_secret:
            secret = configured_secret.encode()
        else:
            secret = await repo.ensure_secret(SIGNING_SECRET_NAME, secrets.token_bytes(32))
        return cls(repo=repo, secret=secret, server_url=server_url, grpc_address=grpc_address)

    async def issue(
        self, *, tenant_id: str, name: str = "", expires_in: timedelta = timedelta(days=90)
    ) -> str:
        token_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        expires_at = now + expires_in
        await self._repo.insert_api_token(
            token_id=token_id, tenant_id=tenant_id, name=name, expires_at=expires_at
        )
        return mint_token(
            secret=self._secret,
            tenant_id=tenant_id,
            token_id=token_id,
            server_url=self.server_url,
            grpc_address=self.grpc_address,
            expires_at=expires_at,
            issued_at=now,
        )

    async def authenticate(self, header_value: str | None) -> Identity:
        """Identity for an ``authorization`` value (``Bearer <jwt>``, any case)."""
        if not header_value:
            raise AuthError("missing authorization token")
        scheme, _, token = header_value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("authorization must be 'Bearer <token>'")
        token = token.strip()
        cached = self._checked.get(token)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _REVOCATION_CACHE_SECONDS:
            if cached[1] is None:
                raise AuthError(cached[2])
            return cached[1]
        try:
            identity = await self._check(token)
        except AuthError as exc:
            self._remember(token, (now, None, str(exc)))
            raise
        except Exception as exc:
            # The database is away: a token already found valid stays valid (its signature
            # and expiry were checked again in _check) until revocations can be read again.
            if is_database_unavailable(exc) and cached is not None and cached[1] is not None:
                return cached[1]
            raise
        self._remember(token, (now, identity, ""))
        return identity

    def _remember(self, token: str, entry: tuple[float, Identity | None, str]) -> None:
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[token] = entry

    async def _check(self, token: str) -> Identity:
        try:
            claims = verify_token(token, secret=self._secret)
        except InvalidToken as exc:
            raise AuthError(f"invalid auth token: {exc}") from None
        row = await self._repo.get_api_token(claims.token_id)
        if row is None:
            raise AuthError("invalid auth token: unknown token")
        if row["revoked_at"] is not None:
            raise AuthError("invalid auth token: token revoked")
        if row["expires_at"] <= datetime.now(UTC):
            raise AuthError("invalid auth token: token expired")
        if str(row["tenant_id"]) != claims.tenant_id:
            raise AuthError("invalid auth token: tenant mismatch")
        return Identity(tenant_id=claims.tenant_id, token_id=claims.token_id)
