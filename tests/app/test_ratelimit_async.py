"""The rate limits as the endpoints ask them, on the event loop (`hit_async`). Through Redis
(app/ratelimit_redis.py) a process answers from its own counts at once and shares them with
the other processes within a flush; while Redis is down it still limits what it sees."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app import migrate
from app.ratelimit import MemoryRateLimiter
from app.ratelimit_redis import RedisRateLimiter, window_name
from tests.app.test_admin_hardening import redis_url, serve  # noqa: F401 (a fixture)
from tests.conftest import make_settings

FLUSH = 0.02  # seconds between a limiter's flushes in these tests


def _key() -> str:
    return f"visitor:{uuid.uuid4().hex}"


def _away_from_a_window_edge() -> None:
    """Counters are per minute: start a test that reads one back at least 5 s from the end
    of its minute, so that its hits and its reads name the same window."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


def _flushing(limiter: RedisRateLimiter) -> bool:
    """Whether the limiter has hits not yet sent, or a flush due or running. The flush runs
    on a timer, so the tests poll this, the limiter's own state."""
    return bool(limiter._pending or limiter._sending or limiter._flush_loop is not None)


async def _settled(limiter: RedisRateLimiter) -> None:
    """Until the limiter has sent every hit and learnt the totals (up to 10 s)."""
    deadline = time.monotonic() + 10
    while _flushing(limiter):
        assert time.monotonic() < deadline, "the limiter never flushed"
        await asyncio.sleep(FLUSH)


def _settled_in_app(client: TestClient) -> None:
    """The same for an app's limiter, which flushes on the test client's event loop."""
    limiter = client.app.state.rate_limiter
    limiter = getattr(limiter, "limiter", limiter)  # under the metrics' counting wrapper
    deadline = time.monotonic() + 10
    while _flushing(limiter):
        assert time.monotonic() < deadline, "the limiter never flushed"
        time.sleep(FLUSH)


@pytest.mark.redis
def test_a_process_refuses_from_its_own_counts_at_once(redis_url: str) -> None:  # noqa: F811
    limiter = RedisRateLimiter(redis_url, flush_seconds=60)  # no flush during the test
    key = _key()

    async def three() -> list[float | None]:
        return [await limiter.hit_async(key, 2) for _ in range(3)]

    first, second, third = asyncio.run(three())
    assert first is None
    assert second is None
    assert third is not None
    assert 0 < third <= 60


@pytest.mark.redis
def test_counts_reach_redis_within_a_flush_and_the_exact_path_sees_them(
    redis_url: str,  # noqa: F811
) -> None:
    _away_from_a_window_edge()
    key = _key()
    limiter = RedisRateLimiter(redis_url, flush_seconds=FLUSH)

    async def two_then_wait() -> None:
        assert await limiter.hit_async(key, 3) is None
        assert await limiter.hit_async(key, 3) is None
        await _settled(limiter)  # no more traffic: the flush is on a timer

    asyncio.run(two_then_wait())
    stored = redis.Redis.from_url(redis_url).get(window_name(key, time.time()))
    assert stored is not None
    assert int(stored) == 2
    exact = RedisRateLimiter(redis_url)
    assert exact.hit(key, 3) is None  # the third of this window
    assert exact.hit(key, 3) is not None


@pytest.mark.redis
def test_a_process_learns_the_others_counts_at_its_next_flush(redis_url: str) -> None:  # noqa: F811
    _away_from_a_window_edge()
    key = _key()
    one, two = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url, flush_seconds=FLUSH)
    assert one.hit(key, 2) is None  # another process's hit, in Redis

    async def scenario() -> tuple[float | None, float | None]:
        before = await two.hit_async(key, 2)  # two has not heard of one's hit yet
        await _settled(two)  # its flush answered the window's total: 2
        return before, await two.hit_async(key, 2)

    before, after = asyncio.run(scenario())
    assert before is None
    assert after is not None
    assert 0 < after <= 60


def test_while_redis_is_down_each_process_still_limits_what_it_sees() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", flush_seconds=FLUSH)  # nothing there

    async def scenario() -> list[float | None]:
        answers = []
        for _ in range(3):
            answers.append(await limiter.hit_async("visitor:x", 2))
            await asyncio.sleep(FLUSH * 5)  # flushes fail; the counts stay
        return answers

    first, second, third = asyncio.run(scenario())
    assert first is None
    assert second is None
    assert third is not None


@pytest.mark.redis
def test_a_new_window_starts_from_nothing(redis_url: str) -> None:  # noqa: F811
    now = [time.time() // 60 * 60 + 1.0]  # one second into a window
    limiter = RedisRateLimiter(redis_url, flush_seconds=60, clock=lambda: now[0])
    key = _key()

    async def scenario() -> list[float | None]:
        answers = [await limiter.hit_async(key, 1), await limiter.hit_async(key, 1)]
        now[0] += 60
        return [*answers, await limiter.hit_async(key, 1)]

    first, refused, next_window = asyncio.run(scenario())
    assert first is None
    assert refused == pytest.approx(59.0)
    assert next_window is None


@pytest.mark.redis
def test_two_api_processes_share_the_visitor_limit_through_redis(
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    migrate.upgrade(f"sqlite:///{db}")
    settings = make_settings(
        f"sqlite:///{db}", tmp_path, redis_url=redis_url, rate_limit_visitor_per_minute=2
    )
    body = {"placement": "background", "visitor_id": uuid.uuid4().hex}
    _away_from_a_window_edge()
    with serve(settings) as api_one, serve(settings) as api_two:
        assert api_one.app.state.rate_limiter is not api_two.app.state.rate_limiter
        ask_one = lambda: api_one.post("/v1/impressions", json=body)  # noqa: E731
        ask_two = lambda: api_two.post("/v1/impressions", json=body)  # noqa: E731
        assert ask_one().status_code == 201
        assert ask_two().status_code == 201
        _settled_in_app(api_one)
        _settled_in_app(api_two)  # two learnt the total, 2
        refused = ask_two()
        # One learns a total when it flushes its own hits of the key: until then it counts
        # its own (the bound app/ratelimit_redis.py states), and then it refuses too.
        assert ask_one().status_code == 201
        _settled_in_app(api_one)
        assert ask_one().status_code == 429
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


def test_the_memory_limiter_answers_the_same_on_the_loop() -> None:
    limiter = MemoryRateLimiter()
    assert asyncio.run(limiter.hit_async("k", 2)) is None
    assert limiter.hit("k", 2) is None
    wait = asyncio.run(limiter.hit_async("k", 2))
    assert wait is not None
    assert 0 < wait <= 30
