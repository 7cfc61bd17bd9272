from __future__ import annotations

import base64
import hmac
import json

import pytest

from app.tokens import TokenError, hash_visitor, sign_impression, verify_impression

SECRET = "k" * 32


def test_round_trip_and_tampering() -> None:
    token, expires = sign_impression(SECRET, impression_id=7, image_id=3, ttl_seconds=60, now=1000)
    claims = verify_impression(SECRET, token, now=1010)
    assert (claims.impression_id, claims.image_id, claims.expires_at) == (7, 3, expires)
    _payload, signature = token.split(".")
    other, _ = sign_impression(SECRET, impression_id=8, image_id=3, ttl_seconds=60, now=1000)
    with pytest.raises(TokenError, match="signature"):
        verify_impression(SECRET, other.split(".")[0] + "." + signature, now=1010)
    with pytest.raises(TokenError, match="expired"):
        verify_impression(SECRET, token, now=1061)
    with pytest.raises(TokenError, match="signature"):
        verify_impression("x" * 32, token, now=1010)


def test_visitor_hash_is_salted_and_stable() -> None:
    assert hash_visitor(SECRET, "ip:1.2.3.4") == hash_visitor(SECRET, "ip:1.2.3.4")
    assert hash_visitor(SECRET, "ip:1.2.3.4") != hash_visitor("y" * 32, "ip:1.2.3.4")
    assert "1.2.3.4" not in hash_visitor(SECRET, "ip:1.2.3.4")


def test_non_ascii_token_is_malformed_not_a_crash() -> None:
    with pytest.raises(TokenError, match="ASCII"):
        verify_impression(SECRET, ".\u0080")


def test_tokens_are_byte_for_byte_those_issued_before_the_fast_path() -> None:
    """Tokens already out there stay valid and new ones read the same: the payload is the
    compact JSON of the claims and the signature HMAC-SHA256 over the versioned payload,
    recomputed here the long way."""
    for impression_id, image_id in [(1, 1), (123456789012, 2**31 - 1)]:
        token, expires_at = sign_impression(
            SECRET, impression_id=impression_id, image_id=image_id, ttl_seconds=60, now=1000.0
        )
        claims = {"i": impression_id, "m": image_id, "e": expires_at}
        payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
        payload_text = payload.rstrip(b"=").decode()
        mac = hmac.new(SECRET.encode(), b"pirloop-impression-v1." + payload_text.encode(), "sha256")
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
        assert token == f"{payload_text}.{signature}"
