"""Admin sign-in: server-side dashboard sessions, and the throttle on failed admin credentials.

A session cookie holds a random id. The database keeps only the id's SHA-256, when the session
was made, when it expires, when it was revoked, and a fingerprint (an HMAC) of the admin token
it was made with: signing out ends it, and rotating PIRLOOP_ADMIN_TOKEN ends every session made
with the old token. A copy of the table gives no cookie that works.

The throttle counts failed admin credentials per client address in one-minute windows, shared
through Redis when it is configured, else per process. While an address is over its limit,
every admin credential from it is refused, the right one too: if a 429 only meant "wrong",
guessing would go on at full speed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from datetime import timedelta
from typing import Protocol

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from app.models import AdminSession, utcnow
from app.settings import Settings

log = logging.getLogger(__name__)

# How long a dashboard sign-in lasts (the cookie's max-age too).
SESSION_SECONDS = 12 * 3600
# The throttle's window: an address's failures are counted from its first failure for this long.
WINDOW_SECONDS = 60
# token_urlsafe(32) is 43 characters; anything much longer is not one of ours.
MAX_SESSION_ID_LENGTH = 128


def _id_hash(session_id: str) -> str:
    # The id is 256 random bits: a plain hash is enough, no salt or stretching needed.
    return hashlib.sha256(session_id.encode()).hexdigest()


def token_fingerprint(settings: Settings) -> str:
    """Which admin token a session was made with, without storing the token: keyed with the
    secret key, so the table alone gives nothing to test guesses against."""
    message = b"pirloop admin session\0" + settings.admin_token.encode()
    return hmac.new(settings.secret_key.encode(), message, hashlib.sha256).hexdigest()


def start_session(session: Session, settings: Settings) -> str:
    """A new dashboard session; returns the cookie value, the only copy of the id. Sessions
    past their expiry are deleted on the way (revoked ones stay until they expire)."""
    now = utcnow()
    session.execute(delete(AdminSession).where(AdminSession.expires_at < now))
    session_id = secrets.token_urlsafe(32)
    session.add(
        AdminSession(
            id_hash=_id_hash(session_id),
            token_fingerprint=token_fingerprint(settings),
            created_at=now,
            expires_at=now + timedelta(seconds=SESSION_SECONDS),
        )
    )
    return session_id


def session_is_valid(session: Session, settings: Settings, session_id: str) -> bool:
    """A live session: stored, not expired, not revoked, made with today's admin token."""
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return False
    row = session.get(AdminSession, _id_hash(session_id))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return False
    return hmac.compare_digest(row.token_fingerprint, token_fingerprint(settings))


def end_session(session: Session, session_id: str) -> None:
    """Revoke a session (sign-out): its cookie never works again, wherever it was copied."""
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return
    session.execute(
        update(AdminSession)
        .where(AdminSession.id_hash == _id_hash(session_id), AdminSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


class AdminThrottle(Protocol):
    def retry_after(self, address: str, limit: int) -> float | None:
        """Seconds until this address may present admin credentials again (it has had `limit`
        failures in its window); None when it may now."""

    def count_failure(self, address: str) -> None:
        """Count one failed admin credential from this address."""


class MemoryAdminThrottle:
    """Failures per address in this process: (window end, failures in the window)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def retry_after(self, address: str, limit: int) -> float | None:
        now = time.monotonic()
        with self._lock:
            end, failures = self._windows.get(address, (0.0, 0))
        if now < end and failures >= limit:
            return end - now
        return None

    def count_failure(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            end, failures = self._windows.get(address, (0.0, 0))
            if now >= end:
                end, failures = now + WINDOW_SECONDS, 0
            self._windows[address] = (end, failures + 1)
            # Windows that have ended carry nothing; sweep them at most once a window, so a
            # spray from many addresses costs no scan per request.
            if now >= self._next_sweep:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
                self._next_sweep = now + WINDOW_SECONDS


class RedisAdminThrottle:
    """Failures per address shared by every API process: a counter that expires one window
    after the address's first failure. While Redis does not answer, this process counts on
    its own (a limiter outage must neither lock the admin out nor lift the throttle)."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5)
        self._local = MemoryAdminThrottle()

    @staticmethod
    def _key(address: str) -> str:
        return f"pirloop:admin-fail:{address}"

    def retry_after(self, address: str, limit: int) -> float | None:
        local = self._local.retry_after(address, limit)
        try:
            pipe = self._redis.pipeline()
            pipe.get(self._key(address))
            pipe.pttl(self._key(address))
            failures, ttl_ms = pipe.execute()
        except Exception:
            log.warning("admin throttle: Redis unavailable; counting in this process")
            return local
        shared = ttl_ms / 1000 if failures is not None and int(failures) >= limit else None
        waits = [wait for wait in (local, shared) if wait is not None and wait > 0]
        return max(waits) if waits else None

    def count_failure(self, address: str) -> None:
        try:
            pipe = self._redis.pipeline()  # MULTI: the window starts with the first failure
            pipe.set(self._key(address), 0, ex=WINDOW_SECONDS, nx=True)
            pipe.incr(self._key(address))
            pipe.execute()
        except Exception:
            log.warning("admin throttle: Redis unavailable; counting in this process")
            self._local.count_failure(address)


def make_admin_throttle(redis_url: str) -> AdminThrottle:
    return RedisAdminThrottle(redis_url) if redis_url else MemoryAdminThrottle()
