"""The rate limiter every API process shares through Redis: fixed one-minute windows, one
counter per key and window (`pirloop:rl:{key}:{window}`).

`hit` asks Redis every time (INCRBY and EXPIRE in one round trip): exact, but a round trip per
request. The endpoints ask `hit_async`, which answers from what this process knows and shares
its counts in the background. A key's count is the window's total as Redis last told this
process, plus this process's hits since; every `flush_seconds` (while there are new hits) one
script call adds each key's new hits to Redis and reads the totals back, for every key at
once. Two round trips per impression on the event loop had left the impression path at 0.38x
the async anchor with Redis configured (docs/BENCHMARKS.md).

What that costs: a process learns a key's total from Redis when it flushes its own hits of
that key, so it learns other processes' hits up to one flush after its own. A client spread
over several processes can pass its limit by about what it sends each of them within one
flush (a limit guards against floods; it is not a quota). What it buys
besides speed: when Redis is down each process keeps counting what it sees, so the limits
still hold per process (`hit` lets every request through then).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# Kept a second past its window, so a late flush still lands on a live counter.
_EXPIRE_SECONDS = WINDOW_SECONDS + 1

# Adds ARGV[i] to KEYS[i] and answers the totals, for any number of keys: one round trip.
_ADD_AND_READ = f"""
local totals = {{}}
for i, name in ipairs(KEYS) do
  totals[i] = redis.call('INCRBY', name, ARGV[i])
  redis.call('EXPIRE', name, {_EXPIRE_SECONDS})
end
return totals
"""


def window_name(key: str, now: float) -> str:
    return f"pirloop:rl:{key}:{int(now // WINDOW_SECONDS)}"


def wait_for_window(count: int, per_minute: int, cost: int, now: float) -> float | None:
    """Seconds to the next window if `count` (this window's, this hit included) is over the
    limit; a hit whose cost alone is over it passes when it is the window's first."""
    if count > per_minute and count > cost:
        return (int(now // WINDOW_SECONDS) + 1) * WINDOW_SECONDS - now
    return None


class RedisRateLimiter:
    def __init__(
        self,
        redis_url: str,
        *,
        flush_seconds: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import redis

        self._url = redis_url
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5)
        self._flush_seconds = flush_seconds
        self._clock = clock
        # The window these counts are of: all three are emptied when it ends.
        self._window: int | None = None
        self._known: dict[str, int] = {}  # counter: the total Redis last answered
        self._sending: dict[str, int] = {}  # counter: this process's hits in the flush now
        self._pending: dict[str, int] = {}  # counter: this process's hits since
        # The loop a flush is due or running on (None: none), and the flush's task.
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._reachable = True
        # redis.asyncio's connections belong to the event loop that opened them: a client
        # and its script per loop (uvicorn runs one; some test clients run one per request).
        self._scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def hit(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        now = time.time()
        name = window_name(key, now)
        try:
            pipe = self._redis.pipeline()
            pipe.incrby(name, cost)
            pipe.expire(name, _EXPIRE_SECONDS)
            count = int(pipe.execute()[0])
        except Exception:
            # A limiter outage must not take the public endpoints down with it.
            log.warning("rate limiter unavailable; letting the request through")
            return None
        return wait_for_window(count, per_minute, cost, now)

    async def hit_async(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        now = self._clock()
        self._start_window(int(now // WINDOW_SECONDS))
        name = window_name(key, now)
        self._pending[name] = self._pending.get(name, 0) + cost
        count = self._known.get(name, 0) + self._sending.get(name, 0) + self._pending[name]
        self._flush_soon()
        return wait_for_window(count, per_minute, cost, now)

    async def _flush(self) -> None:
        """Send this process's new hits and learn the totals. One at a time: the next is
        scheduled only once this one has ended (`_flush_soon`)."""
        sending = self._pending
        self._sending, self._pending = sending, {}
        window = self._window
        try:
            names = list(sending)
            totals = await self._script()(keys=names, args=[sending[n] for n in names])
            if self._window == window:
                self._known.update(zip(names, map(int, totals), strict=True))
            if not self._reachable:
                log.warning("rate limiter reachable again; sharing counts")
                self._reachable = True
        except Exception:
            if self._reachable:
                log.warning("rate limiter unavailable; counting in this process only")
                self._reachable = False
            if self._window == window:  # kept, to be sent with the next flush
                for name, hits in sending.items():
                    self._pending[name] = self._pending.get(name, 0) + hits
        finally:
            self._sending = {}

    def _start_window(self, window: int) -> None:
        if window != self._window:
            self._window = window
            self._known, self._sending, self._pending = {}, {}, {}

    def _flush_soon(self) -> None:
        """A flush `flush_seconds` from now, unless one is due or running on a live loop."""
        if self._flush_loop is not None and self._flush_loop.is_running():
            return
        loop = asyncio.get_running_loop()
        self._flush_loop = loop
        loop.call_later(self._flush_seconds, self._start_flush)

    def _start_flush(self) -> None:
        # Kept, so the task is not collected while it runs.
        self._flushing = asyncio.get_running_loop().create_task(self._flush_then_reschedule())

    async def _flush_then_reschedule(self) -> None:
        try:
            if self._pending:
                await self._flush()
        finally:
            self._flush_loop = None
            if self._pending:  # hits that came during the flush
                self._flush_soon()

    def _script(self) -> Any:
        loop = asyncio.get_running_loop()
        script = self._scripts.get(loop)
        if script is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self._url, socket_timeout=0.5)
            script = client.register_script(_ADD_AND_READ)
            self._scripts[loop] = script
        return script
