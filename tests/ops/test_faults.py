"""Faults on real infrastructure: the API SIGKILLed under load loses no acknowledged event,
and a PostgreSQL stop gives 503s, then recovery on its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.database import make_engine
from app.models import Impression, Interaction
from tests.conftest import create_pg_database, drop_pg_database, service_env
from tests.live import free_port, pirloop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
BIN = Path(sys.executable).parent


@pytest.fixture
def pg_env(pg_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    url = create_pg_database("pirloop_faults")
    env = service_env(
        tmp_path,
        PIRLOOP_DATABASE_URL=url,
        PIRLOOP_BATCH_SIZE="20",
        PIRLOOP_EMBEDDED_SCHEDULER="false",
        PIRLOOP_RATE_LIMIT_IP_PER_MINUTE="0",
        PIRLOOP_RATE_LIMIT_VISITOR_PER_MINUTE="0",
    )
    pirloop(["db", "upgrade"], env)
    pirloop(["init", "--placeholder"], env)
    yield env
    drop_pg_database(url)


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "pirloop"), "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


async def load(base: str, acked: dict[str, set[int]], seconds: float, workers: int = 16) -> None:
    """Impressions and clicks as fast as the server takes them, noting every 2xx."""
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            try:
                served = await client.post("/v1/impressions", json={"placement": "background"})
                if served.status_code != 201:
                    continue
                body = served.json()
                acked["impressions"].add(body["impression_id"])
                click = await client.post(
                    "/v1/interactions", json={"token": body["token"], "kind": "click"}
                )
                if click.status_code in (200, 201):
                    acked["clicks"].add(body["impression_id"])
            except httpx.HTTPError:
                return  # the server is gone

    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await asyncio.gather(*(worker(client) for _ in range(workers)))


def test_sigkill_under_load_loses_no_acknowledged_event(pg_env: dict[str, str]) -> None:
    process, base = start_server(pg_env)
    acked: dict[str, set[int]] = {"impressions": set(), "clicks": set()}

    async def load_then_kill() -> None:
        task = asyncio.create_task(load(base, acked, seconds=30))
        await asyncio.sleep(3)
        process.send_signal(signal.SIGKILL)  # mid-flight: requests are open right now
        await task

    asyncio.run(load_then_kill())
    process.wait(timeout=10)
    assert len(acked["impressions"]) > 50, "the load never got going"

    engine = make_engine(pg_env["PIRLOOP_DATABASE_URL"])
    with engine.connect() as connection:
        stored = set(connection.scalars(select(Impression.id)))
        clicked = set(
            connection.scalars(select(Interaction.impression_id).where(Interaction.kind == "click"))
        )
    engine.dispose()
    lost_impressions = acked["impressions"] - stored
    lost_clicks = acked["clicks"] - clicked
    print(f"acknowledged {len(acked['impressions'])} impressions, {len(acked['clicks'])} clicks")
    assert lost_impressions == set()
    assert lost_clicks == set()


def pg_cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, "-m", "fast"]
        if action == "stop"
        else ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.skipif(not Path("/etc/postgresql").is_dir(), reason="needs the local cluster")
def test_postgres_stop_gives_503_then_recovers(pg_env: dict[str, str]) -> None:
    process, base = start_server(pg_env)
    try:
        with httpx.Client(base_url=base, timeout=15) as http:
            assert http.post("/v1/impressions", json={"placement": "rating"}).status_code == 201
            pg_cluster("stop")
            try:
                down = http.post("/v1/impressions", json={"placement": "rating"})
                assert down.status_code == 503, down.text
                assert down.json()["error"] == "unavailable"
                assert "database" in down.json()["message"]
                assert "Traceback" not in down.text
                assert http.get("/readyz").status_code == 503
            finally:
                pg_cluster("start")
            started = time.monotonic()
            while time.monotonic() - started < 30:
                response = http.post("/v1/impressions", json={"placement": "rating"})
                if response.status_code == 201:
                    break
                time.sleep(0.5)
            recovered_after = time.monotonic() - started
            assert response.status_code == 201, response.text
            print(f"recovered {recovered_after:.1f} s after PostgreSQL came back")
            assert recovered_after < 15
    finally:
        process.terminate()
        process.wait(timeout=10)
