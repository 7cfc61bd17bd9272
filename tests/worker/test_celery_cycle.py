"""The loop on real infrastructure: PostgreSQL, Redis, a real Celery worker with beat, and a
live API; simulated users over HTTP. Also: a worker SIGKILLed mid-cycle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

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


def test_worker_killed_mid_cycle_makes_exactly_one_version(
    pg_loop_env: dict[str, str], tmp_path: Path
) -> None:
    # Long enough tuning that the kill lands inside it; a short visibility timeout so the
    # broker hands the unacknowledged task to the restarted worker quickly.
    env = {**pg_loop_env, "PIRLOOP_TUNING_STEPS": "800", "PIRLOOP_VISIBILITY_TIMEOUT": "5"}
    engine = make_engine(env["PIRLOOP_DATABASE_URL"])
    log_path = tmp_path / "worker.log"

    def runs() -> list[TrainingRun]:
        with engine.connect() as connection:
            return list(connection.execute(select(TrainingRun)).all())

    def version_rows() -> list[GeneratorVersion]:
        with engine.connect() as connection:
            return list(connection.execute(select(GeneratorVersion)).all())

    try:
        with live_server(env) as base:
            traffic(base, 16 * 6)
            with celery_worker(env, beat=True, log_path=log_path) as worker:
                wait_for(
                    lambda: any(r.status == "running" for r in runs()),
                    timeout=120,
                    what="the cycle to start running",
                )
                time.sleep(3)  # into the estimator's training or the tuning
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
            # Killed mid-run: still one version, still the old one serving, no rollout.
            assert len(version_rows()) == 1
            assert serving(base)["parent_id"] is None
            assert current_rollout(base) is None
            assert [r.status for r in runs()] == ["running"]

            with celery_worker(env, beat=True, log_path=log_path):
                wait_for(
                    lambda: [r.status for r in runs()] == ["succeeded"],
                    timeout=400,
                    interval=1,
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
            assert runs()[0].attempts == 2
    finally:
        engine.dispose()
