"""Prometheus metrics on GET /metrics: requests by route template and status, rate-limit
refusals by limit, the arms served, closed without the admin credential, nothing collected
when turned off, and the counts of two uvicorn worker processes summed in one scrape."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.placeholder import placeholder_batch
from app.settings import Settings
from tests.conftest import TEST_ADMIN, make_settings, service_env
from tests.live import BIN, free_port, pirloop
from tests.rollouts import roll_out_candidate

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN}"}
IMPRESSION = {"placement": "background"}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient | httpx.Client, base: str = "") -> Samples:
    """Every sample of one scrape: (name, labels) -> value."""
    answer = client.get(f"{base}/metrics", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@contextmanager
def serving_app(settings: Settings) -> Iterator[TestClient]:
    """The app on `settings`, its database serving a first version of placeholder images."""
    engine = make_engine(settings.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_request_is_counted_under_its_route_template_and_status(client: TestClient) -> None:
    before = scrape(client)
    images = [client.post("/v1/impressions", json=IMPRESSION).json()["image_id"] for _ in range(3)]
    for image_id in images:  # a miss (the route), then a hit (app/image_fast_path.py)
        assert client.get(f"/v1/images/{image_id}").status_code == 200
        assert client.get(f"/v1/images/{image_id}").status_code == 200
    assert client.get("/v1/images/999999").status_code == 404
    assert client.get("/wp-login.php").status_code == 404
    after_text = client.get("/metrics", headers=ADMIN).text
    after = scrape(client)

    route = "/v1/images/{image_id}"
    count = "pirloop_http_requests_total"
    assert increase(before, after, count, method="GET", route=route, status="200") == 6
    assert increase(before, after, count, method="GET", route=route, status="404") == 1
    posted = {"method": "POST", "route": "/v1/impressions", "status": "201"}
    assert increase(before, after, count, **posted) == 3
    # A path that matches no route is counted, but not under its own name.
    assert increase(before, after, count, method="GET", route="<unmatched>", status="404") == 1
    assert "wp-login" not in after_text
    assert f"/v1/images/{images[0]}" not in after_text
    # Timed too, and the impressions' writes went through the writer's group commits.
    duration = "pirloop_http_request_duration_seconds_count"
    assert increase(before, after, duration, method="GET", route=route) == 7
    assert increase(before, after, "pirloop_writer_commit_group_size_count") >= 1
    assert increase(before, after, "pirloop_writer_commit_group_size_sum") == 3


def test_metrics_need_the_admin_credential_and_failures_are_throttled(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, admin_failures_per_minute=2)

    def admin_refusals() -> float:
        found = REGISTRY.get_sample_value("pirloop_rate_limit_refusals_total", {"limit": "admin"})
        return found or 0.0

    with serving_app(settings) as client:
        assert client.get("/metrics", headers=ADMIN).status_code == 200
        refused = admin_refusals()
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert "pirloop_http_requests_total" not in wrong.text
        # Two failures from this address: now even the right token is refused, and counted.
        throttled = client.get("/metrics", headers=ADMIN)
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert admin_refusals() == refused + 1


def test_the_schema_declares_the_scrape_truthfully(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert set(operation["responses"]) >= {"200", "401", "429"}
    assert list(operation["responses"]["200"]["content"]) == ["text/plain"]
    assert {"adminToken": []} in operation["security"]


@pytest.mark.parametrize(
    ("limits", "limit"),
    [({"rate_limit_ip_per_minute": 2}, "ip"), ({"rate_limit_visitor_per_minute": 2}, "visitor")],
)
def test_rate_limit_refusals_are_counted_by_limit(
    database_url: str, tmp_path: Path, limits: dict[str, int], limit: str
) -> None:
    values = {"rate_limit_ip_per_minute": 0, "rate_limit_visitor_per_minute": 0, **limits}
    settings = make_settings(database_url, tmp_path, **values)
    with serving_app(settings) as client:
        before = scrape(client)
        statuses = [client.post("/v1/impressions", json=IMPRESSION).status_code for _ in range(4)]
        assert statuses == [201, 201, 429, 429]
        after = scrape(client)
        refusals = "pirloop_rate_limit_refusals_total"
        assert increase(before, after, refusals, limit=limit) == 2
        assert increase(before, after, refusals, limit="visitor" if limit == "ip" else "ip") == 0
        # The refused requests are counted under their route, refused before routing or not.
        count = "pirloop_http_requests_total"
        labels = {"method": "POST", "route": "/v1/impressions", "status": "429"}
        assert increase(before, after, count, **labels) == 2


def test_the_served_arms_appear_with_their_shares(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rollout_ramp_seconds=0)
    engine = make_engine(settings.resolved_database_url)
    first = ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        alone = scrape(client)
        share = "pirloop_serving_arm_share"
        assert value(alone, share, version=str(first), role="champion") == 1.0
        assert value(alone, "pirloop_serving_version", role="champion") == first
        assert value(alone, "pirloop_database_up") == 1.0
        assert not any(name == share and ("role", "candidate") in labels for name, labels in alone)

        champion, candidate = roll_out_candidate(settings, placeholder_batch(8, first_seed=100))
        both = scrape(client)
    assert champion == first
    assert value(both, share, version=str(first), role="champion") == pytest.approx(0.5)
    assert value(both, share, version=str(candidate), role="candidate") == pytest.approx(0.5)
    assert value(both, "pirloop_serving_version", role="candidate") == candidate
    assert value(both, "pirloop_rollouts", status="running", manual="false") == 1


def test_turned_off_nothing_is_collected(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url, tmp_path, metrics_enabled=False, rate_limit_ip_per_minute=1
    )
    labels = {"method": "POST", "route": "/v1/impressions", "status": "201"}
    names = [
        ("pirloop_http_requests_total", labels),
        ("pirloop_writer_commit_group_size_count", {}),
        ("pirloop_rate_limit_refusals_total", {"limit": "ip"}),
    ]

    def current() -> list[float]:
        return [REGISTRY.get_sample_value(name, dict(labels)) or 0.0 for name, labels in names]

    with serving_app(settings) as client:
        before = current()
        assert client.post("/v1/impressions", json=IMPRESSION).status_code == 201
        assert client.post("/v1/impressions", json=IMPRESSION).status_code == 429
        assert current() == before
        assert client.get("/metrics", headers=ADMIN).status_code == 404
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    # The same requests with metrics on do move these samples: the check above can fail.
    on = make_settings(database_url, tmp_path, rate_limit_ip_per_minute=1)
    with serving_app(on) as client:
        assert client.post("/v1/impressions", json=IMPRESSION).status_code == 201
        assert client.post("/v1/impressions", json=IMPRESSION).status_code == 429
        assert all(after > was for after, was in zip(current(), before, strict=True))


def per_process_counts(metrics_dir: Path, route: str) -> dict[int, float]:
    """Requests answered with 200 on `route`, by the pid of the process that counted them."""
    counts: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[-1])
        for family in MultiProcessCollector.merge([str(path)], accumulate=False):
            for sample in family.samples:
                if (
                    sample.name == "pirloop_http_requests_total"
                    and sample.labels.get("route") == route
                    and sample.labels.get("status") == "200"
                ):
                    counts[pid] = counts.get(pid, 0.0) + sample.value
    return counts


@contextmanager
def pirloop_serve(tmp_path: Path, workers: int) -> Iterator[tuple[str, Path]]:
    """`pirloop serve --workers N` on a fresh SQLite file serving placeholder images, with
    TMPDIR in tmp_path; yields (base URL, the metrics directory it made there) and stops it
    with SIGTERM, as an operator would."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = service_env(tmp_path / "data", PIRLOOP_EMBEDDED_SCHEDULER="false", TMPDIR=str(scratch))
    pirloop(["db", "upgrade"], env)
    pirloop(["init", "--placeholder"], env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "pirloop"), "serve", "--port", str(port), "--workers", str(workers)],
            env={**inherited, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        (metrics_dir,) = scratch.glob("pirloop-metrics-*")
        yield base, metrics_dir
    finally:
        server.terminate()
        server.wait(timeout=30)


def healthz_total(base: str) -> float:
    with httpx.Client() as client:
        samples = scrape(client, base)
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    return value(samples, "pirloop_http_requests_total", **labels)


def test_two_uvicorn_workers_add_up_in_one_scrape(tmp_path: Path) -> None:
    """`pirloop serve --workers 2` makes its own metrics directory, both processes count into
    it, a scrape answered by either one sums both, and the directory is gone after a stop."""
    with pirloop_serve(tmp_path, workers=2) as (base, metrics_dir):
        # A connection per request, so that either process may take each; until both have.
        sent = 0
        while len(per_process_counts(metrics_dir, "/healthz")) < 2:
            assert sent < 2000, f"one process took every request: {sent}"
            for _ in range(10):
                assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
            sent += 10
        by_process = per_process_counts(metrics_dir, "/healthz")
        assert len(by_process) == 2
        assert sum(by_process.values()) == sent
        for _ in range(2):  # whichever process answers the scrape
            assert healthz_total(base) == sent
    assert not metrics_dir.exists(), "the run's metrics directory is removed when it stops"


def test_one_process_also_removes_its_metrics_directory(tmp_path: Path) -> None:
    """A single process (uvicorn re-raises the SIGTERM it stopped on) cleans up all the same."""
    with pirloop_serve(tmp_path, workers=1) as (base, metrics_dir):
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        assert healthz_total(base) == 1
        assert per_process_counts(metrics_dir, "/healthz")
    assert not metrics_dir.exists(), "the run's metrics directory is removed when it stops"
