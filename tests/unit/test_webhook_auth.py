"""Incoming webhook authentication, source presets and body parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from multidict import CIMultiDict

from hewer.engine.core import webhooks as hooks

BODY = b'{"type": "test", "message": "Hello, world!"}'
NOW = 1_700_000_000.0


def lookup(**headers: str) -> hooks.HeaderLookup:
    found = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return found.get


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


BASIC = hooks.WebhookAuth(
    source_name="GENERIC", auth_type="BASIC", secret="pw", basic_username="user"
)
API_KEY = hooks.WebhookAuth(
    source_name="GENERIC", auth_type="API_KEY", secret="k123", api_key_header_name="X-API-Key"
)


def hmac_auth(
    algorithm: str = "SHA256",
    encoding: str = "HEX",
    source: str = "GENERIC",
    header: str = "X-Signature",
) -> hooks.WebhookAuth:
    return hooks.WebhookAuth(
        source_name=source,
        auth_type="HMAC",
        secret="s3cret",
        hmac_algorithm=algorithm,
        hmac_encoding=encoding,
        hmac_signature_header=header,
    )


def test_basic_auth() -> None:
    hooks.verify(BASIC, body=BODY, header=lookup(Authorization=basic("user", "pw")), now=NOW)
    for value in (basic("user", "bad"), basic("bad", "pw"), basic("", ""), "Bearer x", "Basic !!"):
        with pytest.raises(hooks.WebhookAuthError):
            hooks.verify(BASIC, body=BODY, header=lookup(Authorization=value), now=NOW)
    with pytest.raises(hooks.WebhookAuthError):
        hooks.verify(BASIC, body=BODY, header=lookup(), now=NOW)


def test_api_key_auth_header_is_case_insensitive() -> None:
    hooks.verify(API_KEY, body=BODY, header=lookup(x_api_key="k123"), now=NOW)
    for value in ("k12", "", "k1234"):
        with pytest.raises(hooks.WebhookAuthError):
            hooks.verify(API_KEY, body=BODY, header=lookup(X_API_Key=value), now=NOW)
    with pytest.raises(hooks.WebhookAuthError):
        hooks.verify(API_KEY, body=BODY, header=lookup(), now=NOW)


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512", "MD5"])
@pytest.mark.parametrize("encoding", ["HEX", "BASE64", "BASE64URL"])
def test_hmac_variants(algorithm: str, encoding: str) -> None:
    digest = hmac.new(b"s3cret", BODY, getattr(hashlib, algorithm.lower())).digest()
    signature = {
        "HEX": digest.hex(),
        "BASE64": base64.b64encode(digest).decode(),
        "BASE64URL": base64.urlsafe_b64encode(digest).decode(),
    }[encoding]
    auth = hmac_auth(algorithm, encoding)
    hooks.verify(auth, body=BODY, header=lookup(X_Signature=signature), now=NOW)
    with pytest.raises(hooks.WebhookAuthError):
        hooks.verify(auth, body=BODY + b" ", header=lookup(X_Signature=signature), now=NOW)
    with pytest.raises(hooks.WebhookAuthError):
        hooks.verify(auth, body=BODY, header=lookup(), now=NOW)


def test_github_preset_prefix() -> None:
    auth = hmac_auth(source="GITHUB", header="X-Hub-Signature-256")
    sig = "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    hooks.verify(auth, body=BODY, header=lookup(X_Hub_Signature_256=sig), now=NOW)


def test_stripe_preset() -> None:
    auth = hmac_auth(source="STRIPE", header="Stripe-Signature")
    stamp = str(int(NOW))
    sig = hmac.new(b"s3cret", stamp.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    header = f"t={stamp},v1=deadbeef,v1={sig}"
    hooks.verify(auth, body=BODY, header=lookup(Stripe_Signature=header), now=NOW)
    with pytest.raises(hooks.WebhookAuthError, match="out of range"):
        hooks.verify(auth, body=BODY, header=lookup(Stripe_Signature=header), now=NOW + 3600)
    with pytest.raises(hooks.WebhookAuthError):
        hooks.verify(auth, body=BODY, header=lookup(Stripe_Signature=f"v1={sig}"), now=NOW)


def test_slack_preset_and_challenge() -> None:
    auth = hmac_auth(source="SLACK", header="X-Slack-Signature")
    stamp = str(int(NOW))
    sig = "v0=" + hmac.new(b"s3cret", f"v0:{stamp}:".encode() + BODY, hashlib.sha256).hexdigest()
    headers = {"X_Slack_Signature": sig, "X_Slack_Request_Timestamp": stamp}
    hooks.verify(auth, body=BODY, header=lookup(**headers), now=NOW)
    with pytest.raises(hooks.WebhookAuthError):
        hooks.verify(auth, body=BODY, header=lookup(X_Slack_Signature=sig), now=NOW)
    with pytest.raises(hooks.WebhookAuthError):
        hooks.verify(auth, body=BODY, header=lookup(**headers), now=time.time() + 10**6)
    assert hooks.slack_challenge("SLACK", b'{"type":"url_verification","challenge":"abc"}') == "abc"
    assert hooks.slack_challenge("GENERIC", b'{"challenge":"abc"}') is None
    assert hooks.slack_challenge("SLACK", b"not json") is None


def test_parse_body() -> None:
    form = "application/x-www-form-urlencoded"
    assert hooks.parse_body("GENERIC", "application/json", BODY)["type"] == "test"
    assert hooks.parse_body("GENERIC", "application/json", b"") == {}
    assert hooks.parse_body("GENERIC", form, b"a=1&b=x+y&a=2") == {"a": "1", "b": "x y"}
    assert hooks.parse_body("SLACK", form, b"command=%2Fdeploy&text=now") == {
        "command": "/deploy",
        "text": "now",
    }
    assert hooks.parse_body("SLACK", form, b"payload=%7B%22type%22%3A%22x%22%7D") == {"type": "x"}
    for source, ctype, body in [
        ("GENERIC", "text/plain", b"hello"),
        ("GENERIC", "application/json", b"[1, 2]"),
        ("STRIPE", form, b"a=1"),
        ("SLACK", form, b"payload=notjson"),
    ]:
        with pytest.raises(hooks.WebhookBodyError):
            hooks.parse_body(source, ctype, body)


def test_lowercase_headers_keep_first_value() -> None:
    assert hooks.lowercase_headers([("X-A", "1"), ("x-a", "2"), ("B", "3")]) == {
        "x-a": "1",
        "b": "3",
    }
