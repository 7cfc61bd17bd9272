"""The pacer: Retry-After read in both forms, back-off that never retries at once and grows,
and one hold for every user after a 429 from the shared address limit."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from worker.sim.pacing import FIRST_GAP_S, MAX_GAP_S, Pacer, backoff_s, parse_retry_after
from worker.sim.users import run_to_end


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0  # past
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_backoff_waits_at_least_retry_after_and_grows() -> None:
    rng = random.Random(0)
    waits = [backoff_s(attempt, None, rng) for attempt in range(5)]
    assert all(wait > 0 for wait in waits)
    for attempt, wait in enumerate(waits):
        assert 0.5 * 2**attempt <= wait <= 1.25 * 0.5 * 2**attempt
    assert backoff_s(0, 7.0, rng) >= 7.0
    assert backoff_s(20, None, rng) <= 1.25 * 60  # capped
    # Jitter: two users refused together come back apart.
    assert backoff_s(0, 1.0, random.Random(1)) != backoff_s(0, 1.0, random.Random(2))


def test_a_429_holds_every_user_and_spaces_them_after() -> None:
    fake = FakeTime()
    pacer = Pacer(random.Random(0), clock=fake.clock, sleep=fake.sleep)

    async def scenario() -> list[float]:
        first = await pacer.wait_turn()
        second = await pacer.wait_turn()
        assert second == first  # no limit met yet: no waiting at all
        hold = pacer.limited(1.0, sent_at=first)
        assert 1.0 <= hold <= 1.25
        # A second 429 from the same burst does not widen the gap again.
        pacer.limited(1.0, sent_at=second)
        assert pacer.gap_s == FIRST_GAP_S
        return [await pacer.wait_turn() for _ in range(3)]

    start = fake.now
    turns = run_to_end(scenario())
    assert turns[0] >= start + 1.0
    assert turns[1] - turns[0] == pytest.approx(FIRST_GAP_S)
    assert turns[2] - turns[1] == pytest.approx(FIRST_GAP_S)
    assert pacer.waited_s == pytest.approx(turns[0] - start)


def test_gap_widens_on_fresh_429s_and_narrows_on_success() -> None:
    fake = FakeTime()
    pacer = Pacer(random.Random(0), clock=fake.clock, sleep=fake.sleep)

    async def refused_again() -> None:
        pacer.limited(1.0, sent_at=await pacer.wait_turn())

    for _ in range(3):
        run_to_end(refused_again())
    assert pacer.gap_s == pytest.approx(4 * FIRST_GAP_S)
    for _ in range(30):
        run_to_end(refused_again())
    assert pacer.gap_s == MAX_GAP_S
    for _ in range(2000):
        pacer.succeeded()
    assert pacer.gap_s == 0.0
