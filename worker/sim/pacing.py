"""Keeping simulated users within the service's rate limits.

Every simulated user comes from one address, so a 429 from the per-address limit speaks for
all of them: the whole simulation holds for the Retry-After (jittered, growing
exponentially while 429s keep coming), and then spaces its requests a little further apart
(doubling the gap on each fresh 429, shrinking it slowly on each success), so it settles
just under the limit instead of bursting into it again after every hold.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

BASE_BACKOFF_S = 0.5
MAX_BACKOFF_S = 60.0
# Gap between requests after the first 429, and how it shrinks per success: slow enough
# that a few hundred requests pass between probes of the limit.
FIRST_GAP_S = 0.01
GAP_SHRINK = 0.99
# Below this the gap is no limit worth keeping; above, the simulation would all but stop.
MIN_GAP_S = 0.001
MAX_GAP_S = 5.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None when
    absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def backoff_s(attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Wait before retry number `attempt` (0 for the first): at least what the server asked
    and at least an exponential back-off, plus up to 25% jitter so that users refused
    together do not come back together. Never zero."""
    exponential = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2**attempt)
    floor = max(retry_after_s or 0.0, exponential)
    return floor * rng.uniform(1.0, 1.25)


class Pacer:
    """Shared by all users of one simulation: each request to a rate-limited endpoint waits
    its turn here. Costs nothing until the first 429."""

    def __init__(
        self,
        rng: random.Random,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rng = rng
        self.gap_s = 0.0
        self.waited_s = 0.0  # time the simulation was held, overlapping holds counted once
        self._clock = clock
        self._sleep = sleep
        self._next_slot = 0.0
        self._hold_until = 0.0
        self._held_at = -math.inf
        self._epoch = 0
        self._consecutive = 0

    async def wait_turn(self) -> float:
        """Wait until a request may go; return the time it goes (for `limited`)."""
        while True:
            epoch = self._epoch
            now = self._clock()
            slot = max(now, self._next_slot, self._hold_until)
            self._next_slot = slot + self.gap_s
            if slot > now:
                await self._sleep(slot - now)
            # A hold that began while this request slept makes its slot stale: queue again.
            if epoch == self._epoch:
                return self._clock()

    def limited(self, retry_after_s: float | None, *, sent_at: float) -> float:
        """A request sent at `sent_at` got a 429: hold everyone; return the hold in seconds.
        Requests already in flight when the hold began were refused by the same overload, so
        only a fresh one widens the gap and grows the back-off."""
        now = self._clock()
        if sent_at > self._held_at:
            self._consecutive += 1
            self.gap_s = min(max(self.gap_s * 2, FIRST_GAP_S), MAX_GAP_S)
            self._held_at = now
        hold = backoff_s(self._consecutive - 1, retry_after_s, self.rng)
        until = now + hold
        if until > self._hold_until:
            self.waited_s += until - max(now, self._hold_until)
            self._hold_until = until
            self._next_slot = until
            self._epoch += 1
        return hold

    def succeeded(self) -> None:
        self._consecutive = 0
        self.gap_s = self.gap_s * GAP_SHRINK if self.gap_s > MIN_GAP_S else 0.0
