from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from hewer.engine.core.tokens import InvalidToken, TokenClaims, mint_token, verify_token

SECRET = b"0123456789abcdef0123456789abcdef"
# PyJWT checks expiry against the clock, so tokens are minted around the real time
NOW = datetime.now(UTC).replace(microsecond=0)


def _mint(**overrides: object) -> str:
    kwargs: dict[str, object] = {
        "secret": SECRET,
        "tenant_id": "707d0855-80ab-4e1f-a156-f1c4546cbf52",
        "token_id": "tok-1",
        "server_url": "http://localhost:8080",
        "grpc_address": "localhost:7077",
        "expires_at": NOW + timedelta(days=90),
        "issued_at": NOW,
    }
    kwargs.update(overrides)
    return mint_token(**kwargs)  # type: ignore[arg-type]


def _segments(token: str) -> list[dict[str, object]]:
    out = []
    for part in token.split(".")[:2]:
        out.append(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))
    return out


def _encode(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_round_trip() -> None:
    claims = verify_token(_mint(), secret=SECRET)
    assert claims == TokenClaims(
        tenant_id="707d0855-80ab-4e1f-a156-f1c4546cbf52",
        token_id="tok-1",
        expires_at=NOW + timedelta(days=90),
        server_url="http://localhost:8080",
        grpc_address="localhost:7077",
    )


def test_claims_and_header() -> None:
    header, claims = _segments(_mint())
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims["sub"] == "707d0855-80ab-4e1f-a156-f1c4546cbf52"
    assert claims["iss"] == claims["aud"] == claims["server_url"] == "http://localhost:8080"
    assert claims["grpc_broadcast_address"] == "localhost:7077"
    assert claims["iat"] == int(NOW.timestamp())
    assert claims["exp"] == int((NOW + timedelta(days=90)).timestamp())
    assert claims["token_id"] == "tok-1"


def test_no_padding_and_url_safe() -> None:
    token = _mint(tenant_id="?" * 50)
    assert "=" not in token and "+" not in token and "/" not in token


def test_expired() -> None:
    # against the clock now, not at import: the suite may reach this test minutes later
    verify_token(_mint(expires_at=datetime.now(UTC) + timedelta(seconds=60)), secret=SECRET)
    token = _mint(expires_at=NOW - timedelta(seconds=1), issued_at=NOW - timedelta(days=1))
    with pytest.raises(InvalidToken, match=r"^token expired$"):
        verify_token(token, secret=SECRET)


def test_expired_even_with_a_valid_signature_and_forged_longer_exp() -> None:
    header, _claims, sig = _mint(expires_at=NOW - timedelta(seconds=1)).split(".")
    payload = _segments(_mint())[1]
    with pytest.raises(InvalidToken, match=r"^bad signature$"):
        verify_token(f"{header}.{_encode(payload)}.{sig}", secret=SECRET)


def test_missing_required_claim() -> None:
    import jwt

    exp = int(datetime.now(UTC).timestamp()) + 60
    token = jwt.encode({"sub": "t", "exp": exp}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match=r"^malformed token$"):
        verify_token(token, secret=SECRET)


def test_same_token_bytes_as_the_hand_written_encoder() -> None:
    """Tokens keep their format: the header and the sorted, compact claims of before."""
    token = _mint()
    header_b64, claims_b64, _ = token.split(".")
    compact = json.dumps(_segments(token)[1], separators=(",", ":"), sort_keys=True).encode()
    assert (
        header_b64 == base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    )
    assert claims_b64 == base64.urlsafe_b64encode(compact).rstrip(b"=").decode()


def test_bad_signature_wrong_secret() -> None:
    with pytest.raises(InvalidToken, match=r"^bad signature$"):
        verify_token(_mint(), secret=b"another-secret-another-secret!!!")


def test_bad_signature_tampered_claims() -> None:
    header, _claims, sig = _mint().split(".")
    payload = _segments(_mint())[1]
    payload["sub"] = "someone-else"
    with pytest.raises(InvalidToken, match=r"^bad signature$"):
        verify_token(f"{header}.{_encode(payload)}.{sig}", secret=SECRET)


@pytest.mark.parametrize("alg", ["none", "HS512", "RS256", None])
def test_unsupported_alg(alg: str | None) -> None:
    _, claims, sig = _mint().split(".")
    header = _encode({"alg": alg, "typ": "JWT"})
    with pytest.raises(InvalidToken, match=r"^unsupported alg$"):
        verify_token(f"{header}.{claims}.{sig}", secret=SECRET)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!!.???.###", "eyJ.eyJ.sig", f"{_encode({'alg': 'HS256'})}.."],
)
def test_malformed(token: str) -> None:
    with pytest.raises(InvalidToken, match=r"^malformed token$"):
        verify_token(token, secret=SECRET)


def test_header_not_an_object() -> None:
    token = _mint()
    bad = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match=r"^malformed token$"):
        verify_token(bad + token[token.index(".") :], secret=SECRET)


def test_naive_datetimes_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _mint(expires_at=datetime(2030, 1, 1))


def test_invalid_token_message() -> None:
    exc = InvalidToken("bad signature")
    assert exc.message == str(exc) == "bad signature"


def test_hatchet_sdk_reads_minted_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from hatchet_sdk.config import ClientConfig
    from hatchet_sdk.token import extract_claims_from_jwt, get_tenant_id_from_jwt

    for var in ("HOST_PORT", "SERVER_URL", "TENANT_ID", "TOKEN", "NAMESPACE"):
        monkeypatch.delenv(f"HATCHET_CLIENT_{var}", raising=False)
    token = _mint()
    assert token.startswith("ey")
    assert get_tenant_id_from_jwt(token) == "707d0855-80ab-4e1f-a156-f1c4546cbf52"
    assert extract_claims_from_jwt(token).grpc_broadcast_address == "localhost:7077"
    config = ClientConfig(token=token)
    assert config.tenant_id == "707d0855-80ab-4e1f-a156-f1c4546cbf52"
    assert config.host_port == "localhost:7077"
    assert config.server_url == "http://localhost:8080"
    assert config.tls_config.server_name == "localhost"
