"""Encryption of secrets at rest (webhook passwords, API keys, HMAC signing secrets).

Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography`` package) is a well-kept,
authenticated scheme: a tampered or foreign ciphertext fails to decrypt rather than yielding
garbage. Its key is derived with HKDF-SHA256 from ``HEWER_ENCRYPTION_KEY`` when set, else
from a random engine secret generated once and kept in ``engine_secrets`` (shared by every
replica through the database).
"""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hewer.engine.db.repository import Repository

ENCRYPTION_SECRET_NAME = "secrets-encryption-key"
_INFO = b"hewer secrets at rest v1"


class SecretError(Exception):
    """A stored secret that cannot be decrypted (wrong key, or damaged)."""


class SecretBox:
    def __init__(self, key_material: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            key_material
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    @classmethod
    async def create(cls, *, repo: Repository, configured_key: str | None) -> SecretBox:
        if configured_key:
            return cls(configured_key.encode())
        return cls(await repo.ensure_secret(ENCRYPTION_SECRET_NAME, secrets.token_bytes(32)))

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(ciphertext)).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError):
            raise SecretError("a stored secret could not be decrypted") from None
