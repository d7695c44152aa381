"""Incoming webhooks: request authentication, source presets and body parsing (pure; no I/O).

Authentication follows the webhook's auth type (basic, API key header, HMAC of the raw body
with sha1/sha256/sha512/md5, encoded hex/base64/base64url). Two sources sign differently
when they use HMAC, as their senders do:

* Stripe: ``Stripe-Signature: t=<unix>,v1=<sig>[,v1=...]`` over ``"<t>.<body>"``, with a
  freshness window;
* Slack: ``X-Slack-Signature: v0=<sig>`` over ``"v0:<ts>:<body>"`` with the timestamp in
  ``X-Slack-Request-Timestamp``; Slack's URL-verification ``challenge`` is answered as is.

GitHub (``X-Hub-Signature-256: sha256=<hex>``) is a plain HMAC: ``sha256=``-style prefixes
are ignored on both sides. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

SOURCES = ("GENERIC", "GITHUB", "STRIPE", "SLACK", "LINEAR", "SVIX")
AUTH_TYPES = ("BASIC", "API_KEY", "HMAC")
ALGORITHMS: dict[str, Callable[[], Any]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
    "MD5": hashlib.md5,
}
ENCODINGS = ("HEX", "BASE64", "BASE64URL")
STRIPE_TOLERANCE_SECONDS = 10 * 60
SLACK_TOLERANCE_SECONDS = 5 * 60
SLACK_TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
_PREFIXES = ("sha1=", "sha256=", "sha512=", "md5=")

# headers(name) -> value or None, case-insensitive (aiohttp's CIMultiDict.get does this)
HeaderLookup = Callable[[str], str | None]


class WebhookAuthError(Exception):
    """The request is not authentic (answered 403; no event is stored)."""


class WebhookBodyError(ValueError):
    """The body is neither a JSON object nor a form this source accepts (answered 400)."""


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    source_name: str
    auth_type: str
    secret: str  # basic password, API key or HMAC signing secret, decrypted
    basic_username: str | None = None
    api_key_header_name: str | None = None
    hmac_algorithm: str | None = None
    hmac_encoding: str | None = None
    hmac_signature_header: str | None = None


def hmac_signature(payload: bytes, secret: bytes, algorithm: str, encoding: str) -> str:
    digest_of = ALGORITHMS.get(algorithm)
    if digest_of is None:
        raise ValueError(f"unsupported HMAC algorithm {algorithm!r}")
    digest = hmac.new(secret, payload, digest_of).digest()
    if encoding == "HEX":
        return digest.hex()
    if encoding == "BASE64":
        return base64.b64encode(digest).decode()
    if encoding == "BASE64URL":
        return base64.urlsafe_b64encode(digest).decode()
    raise ValueError(f"unsupported HMAC encoding {encoding!r}")


def _same(provided: str, expected: str) -> bool:
    def bare(signature: str) -> str:
        signature = signature.strip()
        for prefix in _PREFIXES:
            if signature.startswith(prefix):
                return signature[len(prefix) :]
        return signature

    return hmac.compare_digest(bare(provided).encode(), bare(expected).encode())


def verify(auth: WebhookAuth, *, body: bytes, header: HeaderLookup, now: float) -> None:
    """Raise :class:`WebhookAuthError` unless the request is authentic."""
    if auth.auth_type == "BASIC":
        _verify_basic(auth, header("Authorization"))
    elif auth.auth_type == "API_KEY":
        name = auth.api_key_header_name or ""
        provided = header(name) if name else None
        if not provided:
            raise WebhookAuthError(f"missing api key header {name!r}")
        if not hmac.compare_digest(provided.encode(), auth.secret.encode()):
            raise WebhookAuthError("invalid api key")
    elif auth.auth_type == "HMAC":
        _verify_hmac(auth, body=body, header=header, now=now)
    else:
        raise WebhookAuthError(f"unsupported auth type {auth.auth_type!r}")


def _verify_basic(auth: WebhookAuth, value: str | None) -> None:
    scheme, _, encoded = (value or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise WebhookAuthError("missing or invalid basic authorization header")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise WebhookAuthError("missing or invalid basic authorization header") from None
    username, sep, password = decoded.partition(":")
    ok_user = hmac.compare_digest(username.encode(), (auth.basic_username or "").encode())
    ok_password = hmac.compare_digest(password.encode(), auth.secret.encode())
    if not sep or not (ok_user and ok_password):
        raise WebhookAuthError("invalid basic auth credentials")


def _verify_hmac(auth: WebhookAuth, *, body: bytes, header: HeaderLookup, now: float) -> None:
    header_name = auth.hmac_signature_header or ""
    provided = header(header_name) if header_name else None
    if not provided:
        raise WebhookAuthError(f"missing signature header {header_name!r}")
    algorithm, encoding = auth.hmac_algorithm or "SHA256", auth.hmac_encoding or "HEX"
    secret = auth.secret.encode()
    if auth.source_name == "STRIPE":
        parts: dict[str, list[str]] = {}
        for item in provided.split(","):
            k, sep, v = item.partition("=")
            if sep:
                parts.setdefault(k.strip(), []).append(v.strip())
        stamp = (parts.get("t") or [""])[0]
        signatures = parts.get("v1") or []
        if not stamp.isdigit() or not signatures:
            raise WebhookAuthError(f"malformed signature header {header_name!r}")
        if abs(now - int(stamp)) > STRIPE_TOLERANCE_SECONDS:
            raise WebhookAuthError("signature timestamp is out of range")
        expected = hmac_signature(stamp.encode() + b"." + body, secret, algorithm, encoding)
        if not any(_same(s, expected) for s in signatures):
            raise WebhookAuthError("invalid HMAC signature")
        return
    if auth.source_name == "SLACK":
        stamp = (header(SLACK_TIMESTAMP_HEADER) or "").strip()
        if not stamp.isdigit():
            raise WebhookAuthError(f"missing or invalid {SLACK_TIMESTAMP_HEADER} header")
        if abs(now - int(stamp)) > SLACK_TOLERANCE_SECONDS:
            raise WebhookAuthError("signature timestamp is out of range")
        base = b"v0:" + stamp.encode() + b":" + body
        expected = "v0=" + hmac_signature(base, secret, algorithm, encoding)
        if not hmac.compare_digest(provided.strip().encode(), expected.encode()):
            raise WebhookAuthError("invalid HMAC signature")
        return
    if not _same(provided, hmac_signature(body, secret, algorithm, encoding)):
        raise WebhookAuthError("invalid HMAC signature")


def slack_challenge(source_name: str, body: bytes) -> str | None:
    """The ``challenge`` of a Slack URL-verification request, else None."""
    if source_name != "SLACK":
        return None
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    if isinstance(decoded, dict):
        challenge = decoded.get("challenge")
        if isinstance(challenge, str) and challenge:
            return challenge
    return None


def parse_body(source_name: str, content_type: str, body: bytes) -> dict[str, Any]:
    """The event payload of a request body: a JSON object, or form fields (first values)."""
    if "application/x-www-form-urlencoded" in content_type.lower():
        if source_name not in ("GENERIC", "SLACK"):
            raise WebhookBodyError(f"form-encoded bodies are not accepted from {source_name}")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise WebhookBodyError("the form body is not UTF-8") from None
        # Slack interactions send their JSON in a "payload" field; slash commands send fields
        if source_name == "SLACK" and form.get("payload"):
            return _json_object(form["payload"][0].encode(), what="the payload form field")
        return {k: v[0] for k, v in form.items() if v}
    if not body.strip():
        return {}
    return _json_object(body, what="the request body")


def _json_object(raw: bytes, *, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise WebhookBodyError(f"{what} is neither JSON nor a form") from None
    if not isinstance(value, dict):
        raise WebhookBodyError(f"{what} must be a JSON object")
    return value


def lowercase_headers(items: Mapping[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased, first value of each kept (the CEL ``headers`` map)."""
    pairs = list(items.items()) if isinstance(items, Mapping) else items
    found: dict[str, str] = {}
    for name, value in pairs:
        found.setdefault(name.lower(), value)
    return found
