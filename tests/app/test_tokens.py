from __future__ import annotations

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
