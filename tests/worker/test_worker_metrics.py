"""A learning cycle shows up in the worker's metrics: its outcome, duration and wait in the
queue, the estimator's and the tuning's figures, and the scheduler's decision on the
candidate. In process (the embedded default runs its jobs so), then served over HTTP by the
worker's exporter; and by a real Celery worker with its prefork pool."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app import migrate, queries
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.models import TrainingRun, utcnow
from app.settings import get_settings
from tests.live import free_port
from tests.rollouts import log_clicks
from tests.worker.conftest import REDIS_URL_BASE, loop_env, wait_for
from tests.worker.test_celery_cycle import celery_worker
from worker.jobs.context import JobContext, job_context
from worker.jobs.cycle import check_rollout, maybe_start_cycle
from worker.metrics import serve_worker_metrics

# A sample's value in this process now (0 when it was never recorded).
SAMPLES = {
    "candidates": ("pirloop_cycles_total", {"outcome": "candidate"}),
    "durations": ("pirloop_cycle_duration_seconds_count", {"outcome": "candidate"}),
    "queue_waits": ("pirloop_cycle_queue_wait_seconds_count", {}),
}


# One scrape of the worker's exporter: (name, sorted labels) -> value.
Scraped = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def counts() -> dict[str, float]:
    decisions = "pirloop_rollout_decisions_total"
    return {
        **{key: sample(name, labels) for key, (name, labels) in SAMPLES.items()},
        "decisions": sample(decisions, {"outcome": "promoted"})
        + sample(decisions, {"outcome": "rejected"}),
    }


@pytest.fixture
def tiny_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobContext]:
    """The embedded default at toy scale on a fresh SQLite file, its first version (the tiny
    generator's batch of 16) serving; the job context the cycle's functions use."""
    env = loop_env(tmp_path, PIRLOOP_EMBEDDED_SCHEDULER="false")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    job_context.cache_clear()
    try:
        settings = get_settings()
        migrate.upgrade(settings.resolved_database_url)
        ctx = job_context()
        assert ensure_initial_version(ctx.sessions, settings) is not None
        yield ctx
        ctx.engine.dispose()
    finally:
        get_settings.cache_clear()
        job_context.cache_clear()


def every_image_seen(ctx: JobContext, version_id: int, times: int) -> None:
    """Each image of the version shown `times` times, a third of the impressions clicked."""
    with session_scope(ctx.sessions) as session:
        images = len(queries.batch_image_ids(session, version_id))
        clicks = [i % 3 == 0 for i in range(images * times)]
        log_clicks(session, version_id, clicks, when=utcnow(), simulated=True)


def test_a_cycle_and_its_decision_show_up_in_the_metrics(tiny_loop: JobContext) -> None:
    ctx = tiny_loop
    with session_scope(ctx.sessions) as session:
        champion = queries.serving_version(session)
        assert champion is not None
        champion_id = champion.id
    every_image_seen(ctx, champion_id, ctx.settings.target_impressions_per_image)
    before = counts()
    started = maybe_start_cycle()  # due; the embedded default runs the cycle inline
    assert started["started"], started
    after = counts()
    assert after["candidates"] == before["candidates"] + 1
    assert after["durations"] == before["durations"] + 1
    assert after["queue_waits"] == before["queue_waits"] + 1
    with session_scope(ctx.sessions) as session:
        run = session.get(TrainingRun, started["run_id"])
        assert run is not None
        candidate_id = run.metrics["version_id"]
        estimator = run.metrics["estimator"]
        tuning = run.metrics["tuning"]
    # The last cycle's figures, as the cycle stored them with its candidate.
    assert sample("pirloop_cycle_candidate_version") == candidate_id
    assert sample("pirloop_estimator_heldout_mae") == pytest.approx(estimator["heldout_mae"])
    assert sample("pirloop_estimator_calibration_error") == pytest.approx(
        estimator["calibration_error"]
    )
    loss = sample("pirloop_estimator_validation_loss")
    assert loss == pytest.approx(estimator["holdout_loss"][estimator["best_epoch"] - 1])
    assert math.isfinite(loss)
    assert sample("pirloop_tuning_steps") == tuning["steps"] == ctx.settings.tuning_steps
    assert sample("pirloop_tuning_predicted_pir", {"point": "end"}) == pytest.approx(
        tuning["predicted_pir_end"]
    )
    assert sample("pirloop_cycle_training_images") == 16
    assert sample("pirloop_cycles_running") == 0

    # Both arms seen to their budget: the next tick decides, and the decision is counted.
    every_image_seen(ctx, champion_id, ctx.settings.rollout_max_impressions_per_image)
    every_image_seen(ctx, candidate_id, ctx.settings.rollout_max_impressions_per_image)
    decided = check_rollout(ctx)
    assert decided is not None
    assert decided["outcome"] in ("promote", "reject"), decided
    assert counts()["decisions"] == before["decisions"] + 1

    # The worker's exporter serves the same figures over HTTP.
    port = free_port()
    server = serve_worker_metrics(ctx.settings.model_copy(update={"worker_metrics_port": port}))
    assert server is not None
    try:
        served = scrape_worker(port)
    finally:
        server.shutdown()
        server.server_close()
    assert served is not None
    assert served[("pirloop_cycles_total", (("outcome", "candidate"),))] == after["candidates"]
    assert served[("pirloop_cycle_candidate_version", ())] == candidate_id


def test_turned_off_a_cycle_records_nothing(
    tiny_loop: JobContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tiny_loop
    monkeypatch.setenv("PIRLOOP_METRICS_ENABLED", "false")
    get_settings.cache_clear()
    job_context.cache_clear()
    with session_scope(ctx.sessions) as session:
        champion = queries.serving_version(session)
        assert champion is not None
        champion_id = champion.id
    every_image_seen(ctx, champion_id, ctx.settings.target_impressions_per_image)
    before = counts()
    started = maybe_start_cycle()
    assert started["started"], started
    assert counts() == before


def scrape_worker(port: int) -> Scraped | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None  # not listening yet
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_celery_worker_serves_its_pools_cycle(
    pg_loop_env: dict[str, str], tmp_path: Path
) -> None:
    """`pirloop worker` (prefork pool, beat) on PostgreSQL and Redis: the cycle runs in a pool
    process, the exporter in the main process sums it in through the run's own metrics
    directory, with the tasks' waits in the queue; the directory is gone after a stop."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    # A Redis database of its own: a worker of another run on the shared one would take this
    # run's cycle task.
    redis_url = f"{REDIS_URL_BASE}/14"
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        client.flushdb()
    env = {
        **pg_loop_env,
        "PIRLOOP_REDIS_URL": redis_url,
        "PIRLOOP_WORKER_METRICS_PORT": str(port),
        "TMPDIR": str(scratch),
    }
    engine = make_engine(env["PIRLOOP_DATABASE_URL"])
    try:
        with session_scope(make_session_factory(engine)) as session:
            champion = queries.serving_version(session)
            assert champion is not None
            images = len(queries.batch_image_ids(session, champion.id))
            clicks = [i % 3 == 0 for i in range(images * 5)]
            log_clicks(session, champion.id, clicks, when=utcnow(), simulated=True)
    finally:
        engine.dispose()
    log = tmp_path / "worker.log"
    candidate = ("pirloop_cycles_total", (("outcome", "candidate"),))

    def cycle_served() -> Scraped | None:
        samples = scrape_worker(port)
        return samples if samples and samples.get(candidate) else None

    with celery_worker(env, beat=True, log_path=log):
        samples = wait_for(
            cycle_served,
            timeout=120,
            what=lambda: f"the cycle in the worker's metrics; log:\n{log.read_text()[-3000:]}",
        )
        (metrics_dir,) = scratch.glob("pirloop-metrics-*")
    assert samples[candidate] == 1
    assert samples[("pirloop_cycle_duration_seconds_count", (("outcome", "candidate"),))] == 1
    assert samples[("pirloop_cycles_running", ())] == 0
    run_cycle = (("task", "worker.run_cycle"),)
    assert samples[("pirloop_task_queue_wait_seconds_count", run_cycle)] == 1
    assert samples[("pirloop_tasks_total", (("state", "SUCCESS"), *run_cycle))] == 1
    ticks = (("task", "worker.maybe_start_cycle"),)
    assert samples[("pirloop_task_queue_wait_seconds_count", ticks)] >= 1
    assert math.isfinite(samples[("pirloop_estimator_heldout_mae", ())])
    assert not metrics_dir.exists(), "the run's metrics directory is removed when it stops"
