"""The loop on real infrastructure: PostgreSQL, Redis, a real Celery worker with beat, and a
live API; simulated users over HTTP. Also: a worker SIGKILLed mid-cycle, and workers stopped by
SIGTERM while a task waits on the database."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from kombu.transport.redis import Channel
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.database import make_engine
from app.models import GeneratorVersion, TrainingRun
from tests.live import live_server
from tests.worker.conftest import current_rollout, decided_rollout, serving, wait_for
from tests.worker.test_embedded_loop import traffic

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
BIN = Path(sys.executable).parent


@contextmanager
def celery_worker(
    env: dict[str, str], *, beat: bool, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    args = [str(BIN / "pirloop"), "worker", "--concurrency", "1"]
    if beat:
        args.append("--beat")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_worker(process)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker as an operator would: SIGTERM to its main process only, which makes a
    warm shutdown (the running task finishes, then the pool and beat stop). SIGTERM to the
    whole group would kill a pool child mid-task (WorkerLostError). Whatever is left after
    the wait is killed with the group."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_celery_worker_completes_a_cycle_and_decides(
    pg_loop_env: dict[str, str], tmp_path: Path
) -> None:
    env = pg_loop_env
    log = tmp_path / "worker.log"
    with live_server(env) as base, celery_worker(env, beat=True, log_path=log):
        first = serving(base)
        assert first is not None
        traffic(base, 16 * 6)
        rollout = wait_for(
            lambda: current_rollout(base),
            timeout=240,
            what=lambda: f"a candidate; worker log:\n{log.read_text()[-3000:]}",
        )
        assert rollout["champion_id"] == first["id"]
        traffic(base, 16 * 18)
        decided = wait_for(
            lambda: decided_rollout(base, rollout["id"]),
            timeout=120,
            what=lambda: f"the decision; worker log:\n{log.read_text()[-3000:]}",
        )
        assert decided["status"] in ("promoted", "rejected")
        assert decided["checks"]
        comparison = httpx.get(
            f"{base}/v1/versions/{rollout['candidate_id']}/comparison?include_simulated=true",
            timeout=10,
        )
        assert comparison.status_code == 200


def broker_copies(redis_url: str, task: str) -> dict[str, Any]:
    """Where the broker holds task: delivered and unacknowledged (kombu's `unacked` hash, with
    each copy's age in seconds), or waiting in the ml queue; and the restore sweep's lock."""
    client = redis.Redis.from_url(redis_url)
    try:
        now = time.time()
        unacked = []
        for tag, raw in client.hgetall("unacked").items():
            message, _exchange, _routing_key = json.loads(raw)
            if message["headers"]["task"] == task:
                delivered = client.zscore("unacked_index", tag)
                unacked.append(None if delivered is None else round(now - delivered, 1))
        queued = sum(
            json.loads(raw)["headers"]["task"] == task for raw in client.lrange("ml", 0, -1)
        )
        return {
            "unacked_ages": unacked,
            "queued": queued,
            "mutex_ttl_ms": client.pttl("unacked_mutex"),
        }
    finally:
        client.close()


def worker_transport_options(redis_url: str) -> dict[str, Any]:
    """The broker transport options of the (one) running worker, as it reports them."""
    probe = Celery("pirloop-test", broker=redis_url)
    try:
        replies = probe.control.inspect(timeout=30, limit=1).conf() or {}
    finally:
        probe.close()
    assert len(replies) == 1, replies
    (conf,) = replies.values()
    options: dict[str, Any] = conf["broker_transport_options"]
    return options


def test_worker_killed_mid_cycle_makes_exactly_one_version(
    pg_loop_env: dict[str, str], tmp_path: Path
) -> None:
    # A visibility timeout of 5 s: the broker hands the killed worker's task on about 5 s
    # after its delivery (worker/celery_app.py sizes the restore sweep from it).
    env = {**pg_loop_env, "PIRLOOP_VISIBILITY_TIMEOUT": "5"}
    engine = make_engine(env["PIRLOOP_DATABASE_URL"])
    killed_log, log_path = tmp_path / "worker-killed.log", tmp_path / "worker.log"

    def the_run() -> TrainingRun | None:
        with Session(engine) as session:
            runs = session.scalars(select(TrainingRun)).all()
        assert len(runs) <= 1, runs
        return runs[0] if runs else None

    def tuning() -> bool:
        run = the_run()
        return run is not None and run.metrics.get("progress", {}).get("phase") == "tuning"

    def version_rows() -> list[GeneratorVersion]:
        with Session(engine) as session:
            return list(session.scalars(select(GeneratorVersion).order_by(GeneratorVersion.id)))

    def broker() -> str:
        return f"broker: {broker_copies(env['PIRLOOP_REDIS_URL'], 'worker.run_cycle')}"

    try:
        with live_server(env) as base:
            traffic(base, 16 * 6)
            # Tuning long enough that the kill lands inside it; its progress is written every
            # 2% of the steps (and 2 s), so not so many steps that the first write waits long.
            slow = {**env, "PIRLOOP_TUNING_STEPS": "2000"}
            with celery_worker(slow, beat=True, log_path=killed_log) as worker:
                wait_for(
                    tuning,
                    timeout=120,
                    what=lambda: f"the cycle's tuning; log:\n{killed_log.read_text()[-3000:]}",
                )
                options = worker_transport_options(env["PIRLOOP_REDIS_URL"])
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
            # Killed mid-run: still one version, still the old one serving, no rollout.
            assert len(version_rows()) == 1
            assert serving(base)["parent_id"] is None
            assert current_rollout(base) is None
            killed = the_run()
            assert killed is not None
            assert (killed.status, killed.attempts) == ("running", 1)
            # The task is not lost: the broker holds it, unacknowledged or already put back.
            copies = broker_copies(env["PIRLOOP_REDIS_URL"], "worker.run_cycle")
            assert len(copies["unacked_ages"]) + copies["queued"] == 1, copies
            # The worst case: killed in the middle of its restore sweep, the worker left the
            # sweep's lock behind, to expire as it configured it (kombu's default: 300 s).
            with contextlib.closing(redis.Redis.from_url(env["PIRLOOP_REDIS_URL"])) as client:
                expire = options.get("unacked_mutex_expire", Channel.unacked_mutex_expire)
                expire_ms = int(expire * 1000)
                client.set("unacked_mutex", "held by the killed worker", px=expire_ms)

            # The next worker gets the task again (the second attempt) and finishes the cycle
            # with its own, short tuning.
            with celery_worker(env, beat=True, log_path=log_path):
                wait_for(
                    lambda: the_run().attempts == 2,  # type: ignore[union-attr]
                    timeout=120,
                    what=lambda: (
                        f"the redelivery; {broker()}; log:\n{log_path.read_text()[-3000:]}"
                    ),
                )
                wait_for(
                    lambda: the_run().status == "succeeded",  # type: ignore[union-attr]
                    timeout=240,
                    what=lambda: f"the redelivered cycle; log:\n{log_path.read_text()[-3000:]}",
                )
            rows = version_rows()
            assert len(rows) == 2, rows
            # Exactly one candidate, served beside the champion that kept serving.
            assert [r.status for r in rows] == ["serving", "candidate"]
            assert serving(base)["id"] == rows[0].id
            rollout = current_rollout(base)
            assert rollout is not None
            assert rollout["candidate_id"] == rows[1].id
            assert the_run().attempts == 2  # type: ignore[union-attr]
    finally:
        engine.dispose()
    # The second worker was stopped by SIGTERM: a warm shutdown, no traceback.
    logged = log_path.read_text()
    assert "Traceback" not in logged, logged[-3000:]
    assert " ERROR/" not in logged, logged[-3000:]


def lock_waiters(engine: Engine) -> int:
    """Connections whose statement on service_flags waits for a table lock."""
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE '%service_flags%'"
            )
        ).scalar_one()
    return int(waiting)


@pytest.mark.parametrize("whole_group", [False, True], ids=["main-process", "process-group"])
def test_sigterm_mid_query_is_a_warm_shutdown(
    pg_loop_env: dict[str, str], tmp_path: Path, whole_group: bool
) -> None:
    """SIGTERM while a task waits on the database: the task finishes, the worker exits 0 and
    logs no traceback. SIGTERM to the whole process group (systemd's default KillMode, `kill
    -TERM -PGID`) must do the same: the pool child leaves the shutdown to the main process."""
    env = pg_loop_env
    engine = make_engine(env["PIRLOOP_DATABASE_URL"])
    log_path = tmp_path / "worker.log"
    try:
        with engine.connect() as blocker:
            # The scheduler's tick reads service_flags first: while this lock is held, the
            # tick's task waits in the middle of its query.
            blocker.execute(text("LOCK TABLE service_flags IN ACCESS EXCLUSIVE MODE"))
            with celery_worker(env, beat=True, log_path=log_path) as worker:
                wait_for(
                    lambda: lock_waiters(engine),
                    timeout=120,
                    what=lambda: (
                        f"a task waiting on the lock; log:\n{log_path.read_text()[-3000:]}"
                    ),
                )
                if whole_group:
                    os.killpg(worker.pid, signal.SIGTERM)
                else:
                    worker.terminate()
                wait_for(
                    lambda: "Warm shutdown" in log_path.read_text(),
                    timeout=30,
                    what="the worker to begin its warm shutdown",
                )
                blocker.rollback()  # the waiting query goes on
                assert worker.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        engine.dispose()
    logged = log_path.read_text()
    assert "Traceback" not in logged, logged[-3000:]
    assert " ERROR/" not in logged, logged[-3000:]
    # The task that waited on the lock finished after the shutdown began.
    after_signal = logged.split("Warm shutdown", 1)[1]
    assert re.search(r"worker\.maybe_start_cycle\[.+\] succeeded in", after_signal), logged
