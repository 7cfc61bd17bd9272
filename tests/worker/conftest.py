from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_pg_database, drop_pg_database, service_env
from tests.live import pirloop

pytest.importorskip("torch")

REDIS_URL_BASE = os.environ.get("PIRLOOP_TEST_REDIS", "redis://127.0.0.1:6379")
REQUIRE_REDIS = os.environ.get("PIRLOOP_REQUIRE_REDIS") == "1"


def loop_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a service and worker running the whole loop at toy scale."""
    toy = {
        "PIRLOOP_PRESET": "tiny",
        "PIRLOOP_BATCH_SIZE": "16",
        "PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE": "5",
        "PIRLOOP_SCHEDULER_INTERVAL_SECONDS": "0.5",
        "PIRLOOP_TUNING_STEPS": "20",
        "PIRLOOP_ESTIMATOR_EPOCHS": "3",
        "PIRLOOP_USE_SIMULATED_TRAFFIC": "true",
        "PIRLOOP_TORCH_THREADS": "1",
        # Bots must be caught by their behaviour here, not stopped at the door.
        "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE": "0",
        "PIRLOOP_RATE_LIMIT_VISITOR_PER_MINUTE": "0",
        # A candidate is decided within a few hundred impressions per arm.
        "PIRLOOP_ROLLOUT_RAMP_SECONDS": "0",
        "PIRLOOP_ROLLOUT_MIN_IMPRESSIONS_PER_ARM": "40",
        "PIRLOOP_ROLLOUT_MAX_IMPRESSIONS_PER_IMAGE": "8",
    }
    return service_env(data_dir, **{**toy, **overrides})


def current_rollout(base: str) -> dict[str, Any] | None:
    """The running rollout (candidate beside champion), else None."""
    answer = httpx.get(f"{base}/v1/rollouts/current", timeout=10)
    if answer.status_code == 404:
        return None
    result: dict[str, Any] = answer.raise_for_status().json()
    return result


def decided_rollout(base: str, rollout_id: int) -> dict[str, Any] | None:
    """The rollout once it is decided (promoted, rejected or cancelled), else None."""
    result: dict[str, Any] = (
        httpx.get(f"{base}/v1/rollouts/{rollout_id}", timeout=10).raise_for_status().json()
    )
    return result if result["status"] != "running" else None


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.5,
    what: str | Callable[[], str] = "",
) -> Any:
    """Poll condition until it returns something truthy; what (or what()) names it on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    described = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout}s waiting for {described or condition}")


def versions(base: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{base}/v1/versions", timeout=10).json()
    return result


def serving(base: str) -> dict[str, Any] | None:
    return next((v for v in versions(base) if v["status"] == "serving"), None)


@pytest.fixture
def redis_url() -> str:
    import redis

    url = f"{REDIS_URL_BASE}/9"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
    except redis.exceptions.ConnectionError:
        if REQUIRE_REDIS:
            pytest.fail(f"Redis is required but does not answer at {url}")
        pytest.skip("Redis is not reachable")
    return url


@pytest.fixture
def pg_loop_env(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    url = create_pg_database("pirloop_loop")
    env = loop_env(
        tmp_path,
        PIRLOOP_DATABASE_URL=url,
        PIRLOOP_REDIS_URL=redis_url,
        PIRLOOP_ARTIFACT_STORE="database",
    )
    pirloop(["db", "upgrade"], env)
    pirloop(["init"], env)
    yield env
    drop_pg_database(url)
