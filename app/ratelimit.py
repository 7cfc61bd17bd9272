"""Rate limits on the public endpoints, per client address and per visitor.

With Redis configured the counts are shared by every API process (fixed one-minute windows);
without, each process keeps its own token buckets (the embedded default is one process).
The endpoints ask `hit_async`, on the event loop: the Redis limiter (app/ratelimit_redis.py)
answers it from the process's own counts and shares them in the background, since a round
trip per request cost the impression path more than half its throughput. `hit` asks
synchronously (exact, one round trip, for code off the loop).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from app.ratelimit_redis import RedisRateLimiter as RedisRateLimiter  # also imported from here

LIMITED_PATHS = ("/v1/impressions", "/v1/interactions", "/v1/beacon", "/v1/embed")


class RateLimiter(Protocol):
    def hit(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        """Count `cost` events (one request, or each item of a batch); return seconds to wait
        if over the limit, else None. A cost above the whole limit passes only when nothing
        else was counted in the window, so a batch larger than the limit is not refused
        forever; the time it overdraws is waited off by the next requests."""

    async def hit_async(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        """`hit`, on the event loop, without waiting on anything."""


class MemoryRateLimiter:
    """Token buckets in two generations of dicts. A hit looks its key up in the current
    generation (then the previous one, moving it forward), so it costs the same with 100
    keys or a million. Every `window` seconds the previous generation is dropped whole and
    the current one takes its place: a bucket untouched for a whole window (longer than any
    bucket needs to refill, 60 s) is forgotten without any scan. A bucket overdrawn by a
    batch far larger than the per-minute limit has its remaining debt forgiven then."""

    def __init__(
        self, *, window: float = 120.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._window = window
        self._current: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._previous: dict[str, tuple[float, float]] = {}
        self._rotate_at = clock() + window
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The keys held (some may be forgotten at the next rotation)."""
        with self._lock:
            return len(self._current) + len(self._previous)

    def hit(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        now = self._clock()
        rate = per_minute / 60.0
        need = float(min(cost, per_minute))
        with self._lock:
            if now >= self._rotate_at:
                # Two windows idle (or more): nothing in either generation is still draining.
                stale = now >= self._rotate_at + self._window
                self._previous = {} if stale else self._current
                self._current = {}
                self._rotate_at = now + self._window
            bucket = self._current.get(key)
            if bucket is None:
                bucket = self._previous.pop(key, None)
            tokens, last = bucket if bucket is not None else (float(per_minute), now)
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens < need:
                self._current[key] = (tokens, now)
                return (need - tokens) / rate
            self._current[key] = (tokens - cost, now)  # below zero: overdrawn by a big batch
        return None

    async def hit_async(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        return self.hit(key, per_minute, cost)  # in memory: nothing to wait for


def address_key(address: str) -> str:
    """The limiter key of one client address, shared by the middleware and the batch route."""
    return f"ip:{address}"


def make_rate_limiter(redis_url: str) -> RateLimiter:
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()


def too_many(retry_after: float) -> tuple[dict[str, str], bytes]:
    seconds = str(max(1, math.ceil(retry_after)))
    body = {"error": "rate_limited", "message": f"too many requests; retry in {seconds} s"}
    return {"Retry-After": seconds}, json.dumps(body).encode()


class ClientRateLimit:
    """429 with Retry-After when one client address sends more than per_minute requests to
    the public write endpoints. It counts each request as one before its body is read; the
    batch route counts the rest of its items (app/routers/interactions.py)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, per_minute: int) -> None:
        self.app = app
        self.limiter = limiter
        self.per_minute = per_minute

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.per_minute > 0
            and scope["path"].startswith(LIMITED_PATHS)
        ):
            client = scope.get("client")
            address = client[0] if client else "unknown"
            retry_after = await self.limiter.hit_async(address_key(address), self.per_minute)
            if retry_after is not None:
                headers, body = too_many(retry_after)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 429,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"retry-after", headers["Retry-After"].encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
