from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.models import Interaction
from app.ratelimit import MemoryRateLimiter, RedisRateLimiter
from tests.conftest import empty_tables, make_settings


@pytest.fixture
def limited_client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        sqlite_url, tmp_path, rate_limit_ip_per_minute=7, rate_limit_visitor_per_minute=3
    )
    engine = make_engine(sqlite_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        yield client
    # The SQLite database is shared by the whole run: leave it empty for the next tests.
    empty_tables(sqlite_url)


def test_visitor_and_address_limits(limited_client: TestClient) -> None:
    def ask(visitor: str) -> int:
        body = {"placement": "background", "visitor_id": visitor}
        return limited_client.post("/v1/impressions", json=body).status_code

    assert [ask("alice") for _ in range(4)] == [201, 201, 201, 429]
    assert [ask("bob") for _ in range(3)] == [201, 201, 201]
    # Seven from this address so far (one refused by the visitor limit): the eighth is refused
    # whoever asks.
    response = limited_client.post(
        "/v1/impressions", json={"placement": "background", "visitor_id": "carol"}
    )
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == "rate_limited"
    assert limited_client.get("/healthz").status_code == 200  # reads are not limited


def test_a_batch_counts_each_interaction_against_the_address_limit(
    limited_client: TestClient, sqlite_url: str
) -> None:
    served = limited_client.post("/v1/impressions", json={"placement": "rating"}).json()
    item = {"token": served["token"], "kind": "click"}
    # 1 impression + 5 interactions: 6 of this address's 7.
    five = limited_client.post("/v1/interactions/batch", json={"interactions": [item] * 5})
    assert five.status_code == 200, five.text
    # Two more would make 8: refused whole, nothing of it stored.
    two = limited_client.post(
        "/v1/interactions/batch",
        json={"interactions": [{**item, "kind": "like"}, {**item, "kind": "share"}]},
    )
    assert two.status_code == 429
    assert two.json()["error"] == "rate_limited"
    assert "interactions" in two.json()["message"]
    assert int(two.headers["retry-after"]) >= 1
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        kinds = connection.scalars(select(Interaction.kind)).all()
    engine.dispose()
    assert kinds == ["click"]


def test_a_batch_larger_than_the_limit_overdraws_a_full_bucket() -> None:
    limiter = MemoryRateLimiter()
    assert limiter.hit("k", 10, cost=25) is None
    wait = limiter.hit("k", 10)
    assert wait is not None
    # 16 tokens short at 10 a minute.
    assert 95 < wait <= 96


def test_memory_bucket_refills() -> None:
    limiter = MemoryRateLimiter()
    assert [limiter.hit("k", 2) for _ in range(2)] == [None, None]
    wait = limiter.hit("k", 2)
    assert wait is not None
    assert 0 < wait <= 30


@pytest.mark.redis
def test_redis_limiter_is_shared_between_instances() -> None:
    import redis

    url = os.environ.get("PIRLOOP_TEST_REDIS", "redis://127.0.0.1:6379") + "/8"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("PIRLOOP_REQUIRE_REDIS") == "1":
            pytest.fail("Redis is required")
        pytest.skip("Redis is not reachable")
    key = uuid.uuid4().hex
    first, second = RedisRateLimiter(url), RedisRateLimiter(url)
    assert first.hit(key, 2) is None
    assert second.hit(key, 2) is None
    assert first.hit(key, 2) is not None


def test_failed_admin_credentials_are_throttled(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, admin_failures_per_minute=3)
    with TestClient(create_app(settings)) as client:
        wrong = {"Authorization": "Bearer not-the-token"}
        codes = [client.get("/v1/admin/versions", headers=wrong).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        login = client.post(
            "/admin/login",
            content=b"token=guess",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert login.status_code == 429
        assert "retry-after" in login.headers
