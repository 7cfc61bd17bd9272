"""Scale-out on one machine: two API processes and two Celery workers, each with its own data
and artifact directory, sharing only PostgreSQL and Redis, complete a cycle with no errors."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select

from app.database import make_engine
from app.models import TrainingRun
from tests.live import live_server
from tests.worker.conftest import current_rollout, serving, wait_for
from tests.worker.test_celery_cycle import celery_worker
from tests.worker.test_embedded_loop import traffic

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def own_dirs(env: dict[str, str], root: Path, name: str) -> dict[str, str]:
    data = root / name
    return {**env, "PIRLOOP_DATA_DIR": str(data), "PIRLOOP_ARTIFACT_DIR": str(data / "artifacts")}


def test_two_apis_two_workers_complete_a_cycle(pg_loop_env: dict[str, str], tmp_path: Path) -> None:
    env = pg_loop_env
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    with ExitStack() as stack:
        api_a = stack.enter_context(live_server(own_dirs(env, tmp_path, "api-a")))
        api_b = stack.enter_context(live_server(own_dirs(env, tmp_path, "api-b")))
        stack.enter_context(
            celery_worker(own_dirs(env, tmp_path, "worker-a"), beat=True, log_path=logs[0])
        )
        stack.enter_context(
            celery_worker(own_dirs(env, tmp_path, "worker-b"), beat=False, log_path=logs[1])
        )
        first = serving(api_a)
        assert first is not None
        # Traffic through both APIs at once; their pickers together keep the batch even.
        threads = [threading.Thread(target=traffic, args=(api, 16 * 3)) for api in (api_a, api_b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rollout = wait_for(
            lambda: current_rollout(api_b),
            timeout=240,
            what=lambda: "a candidate; logs:\n" + "\n".join(p.read_text()[-2000:] for p in logs),
        )
        assert current_rollout(api_a)["id"] == rollout["id"]  # type: ignore[index]
        # Both APIs serve the candidate beside the champion.
        for api in (api_a, api_b):
            served = traffic(api, 16 * 2)
            assert served.get(rollout["candidate_id"], 0) > 0
            assert served.get(first["id"], 0) > 0
    for path in logs:
        text = path.read_text()
        assert "Traceback" not in text, text[-3000:]
        assert " ERROR/" not in text, text[-3000:]
    engine = make_engine(env["PIRLOOP_DATABASE_URL"])
    with engine.connect() as connection:
        runs = connection.execute(select(TrainingRun.kind, TrainingRun.status)).all()
    engine.dispose()
    assert [tuple(r) for r in runs] == [("cycle", "succeeded")]
