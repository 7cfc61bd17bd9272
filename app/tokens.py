"""Signed impression tokens: an interaction can only be recorded against an impression that
pirloop served, before the token expires."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from app.errors import PirloopError

# The id columns a token's claims are looked up in: impressions.id is BIGINT, images.id is
# INTEGER on PostgreSQL. A claim outside them names nothing, and PostgreSQL would refuse the
# query: a 500 with a traceback, and its group commit redone one write at a time.
MAX_IMPRESSION_ID = 2**63 - 1
MAX_IMAGE_ID = 2**31 - 1


class TokenError(PirloopError):
    """The token is malformed, forged or expired; the message says which."""

    status_code = 401


@dataclass(frozen=True)
class ImpressionClaims:
    impression_id: int
    image_id: int
    expires_at: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: str) -> str:
    # hmac.digest: the one-shot C path, a third of hmac.new(...).digest()'s time per token.
    return _b64(
        hmac.digest(secret.encode(), b"pirloop-impression-v1." + payload.encode(), "sha256")
    )


def sign_impression(
    secret: str, *, impression_id: int, image_id: int, ttl_seconds: int, now: float | None = None
) -> tuple[str, int]:
    expires_at = int((now if now is not None else time.time()) + ttl_seconds)
    # The bytes json.dumps({"i": .., "m": .., "e": ..}, separators=(",", ":")) gives, written
    # out: three integers need no escaping, and this is on every impression's path.
    payload = _b64(b'{"i":%d,"m":%d,"e":%d}' % (impression_id, image_id, expires_at))
    return f"{payload}.{_signature(secret, payload)}", expires_at


def verify_impression(secret: str, token: str, *, now: float | None = None) -> ImpressionClaims:
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 512:
        raise TokenError("token is malformed")
    if not token.isascii():
        raise TokenError("token is malformed: it has characters outside ASCII")
    payload, signature = token.split(".")
    if not hmac.compare_digest(_signature(secret, payload), signature):
        raise TokenError("token signature is invalid")
    try:
        body = json.loads(_unb64(payload))
        claims = ImpressionClaims(int(body["i"]), int(body["m"]), int(body["e"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError("token payload is malformed") from exc
    if not (
        1 <= claims.impression_id <= MAX_IMPRESSION_ID and 1 <= claims.image_id <= MAX_IMAGE_ID
    ):
        raise TokenError("token payload is malformed: an id is out of range")
    if claims.expires_at < (now if now is not None else time.time()):
        raise TokenError("token has expired")
    return claims


def hash_visitor(secret: str, raw_visitor: str) -> str:
    """Salted hash: the raw id, IP or user agent is never stored."""
    return hashlib.sha256(
        b"pirloop-visitor." + secret.encode() + b"." + raw_visitor.encode()
    ).hexdigest()
