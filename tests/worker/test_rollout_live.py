"""Rollouts on real infrastructure: the split across two API processes on one PostgreSQL, and
a decider killed mid-decision, which must never leave two champions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app import queries, rollout
from app.database import make_engine, make_session_factory, session_scope
from app.models import GeneratorVersion, Impression, RolloutStatus, VersionStatus
from app.placeholder import placeholder_batch
from app.settings import Settings
from tests.live import live_server
from tests.rollouts import roll_out_candidate

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

IMAGES = 16  # the loop environment's batch size


def rollout_settings(env: dict[str, str]) -> Settings:
    return Settings(
        environment="test",
        database_url=env["PIRLOOP_DATABASE_URL"],
        secret_key=env["PIRLOOP_SECRET_KEY"],
        admin_token=env["PIRLOOP_ADMIN_TOKEN"],
        batch_size=IMAGES,
        use_simulated_traffic=True,
        rollout_ramp_seconds=0,
        rollout_min_impressions_per_arm=40,
    )


def add_candidate(settings: Settings, *, seed: int) -> tuple[int, int]:
    return roll_out_candidate(settings, placeholder_batch(IMAGES, first_seed=seed))


def test_split_holds_across_two_api_processes(pg_loop_env: dict[str, str]) -> None:
    env = pg_loop_env  # Redis set and no worker: nothing decides while the split is measured
    settings = rollout_settings(env)
    per_api = 600
    with ExitStack() as stack:
        apis = [stack.enter_context(live_server(env)) for _ in range(2)]
        champion, candidate = add_candidate(settings, seed=5000)
        for index, base in enumerate(apis):
            with httpx.Client(base_url=base, timeout=10) as client:
                for n in range(per_api):
                    answer = client.post(
                        "/v1/impressions",
                        json={"placement": "background", "visitor_id": f"api{index}-{n}"},
                    )
                    assert answer.status_code == 201, answer.text
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        by_version = dict(
            connection.execute(
                select(Impression.version_id, func.count()).group_by(Impression.version_id)
            ).all()
        )
        by_image = connection.execute(
            select(Impression.image_id, func.count())
            .where(Impression.version_id == candidate)
            .group_by(Impression.image_id)
        ).all()
    engine.dispose()
    total = 2 * per_api
    # A random 50/50 split: the candidate's count is Binomial(1200, 0.5), sd 17.3; the
    # 99.9% range is +-3.29 sd. Round robin or a split per process would also pass this,
    # so each API's own share is random too (checked by the decision's SRM in production).
    assert by_version[champion] + by_version[candidate] == total
    assert abs(by_version[candidate] - total / 2) <= 3.29 * (total * 0.25) ** 0.5
    # Each arm's batch stays evenly served across both processes.
    counts = [count for _, count in by_image]
    assert len(counts) == IMAGES
    assert max(counts) - min(counts) <= 2


DECIDER = textwrap.dedent(
    """
    import sys, time
    from app import rollout
    from app.database import make_engine, make_session_factory, session_scope
    from tests.worker.test_rollout_live import rollout_settings
    import json
    settings = rollout_settings(json.loads(sys.argv[1]))
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(sessions) as session:
        look = rollout.check_running(session, settings)
        print(look.decision.outcome, flush=True)  # applied, not committed
        time.sleep(600)
    """
)


def test_a_decider_killed_mid_decision_leaves_one_champion(
    pg_loop_env: dict[str, str], tmp_path: Path
) -> None:
    env = pg_loop_env
    settings = rollout_settings(env)
    champion, candidate = add_candidate(settings, seed=7000)
    # A clearly better candidate: every candidate impression clicked, no champion one.
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        rows = []
        for version_id in (champion, candidate):
            for image_id in queries.batch_image_ids(session, version_id):
                rows += [
                    {
                        "image_id": image_id,
                        "version_id": version_id,
                        "placement": "background",
                        "visitor_hash": f"v{image_id}-{k}",
                        "simulated": True,
                    }
                    for k in range(6)
                ]
        ids = queries.insert_impressions(session, rows)
        queries.insert_new_interactions(
            session,
            [
                {"impression_id": i, "kind": "click", "value": 1.0}
                for i, row in zip(ids, rows, strict=True)
                if row["version_id"] == candidate
            ],
        )
    decider = subprocess.Popen(
        [sys.executable, "-c", DECIDER, json.dumps(env)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert decider.stdout is not None
        assert decider.stdout.readline().strip() == "promote"
    finally:
        os.kill(decider.pid, signal.SIGKILL)
        decider.wait(timeout=10)

    def champions() -> list[int]:
        with session_scope(sessions) as session:
            return [
                v.id
                for v in session.scalars(
                    select(GeneratorVersion).where(GeneratorVersion.status == VersionStatus.serving)
                )
            ]

    # Killed before its commit: nothing of the decision happened.
    assert champions() == [champion]
    with session_scope(sessions) as session:
        running = rollout.running_rollout(session)
        assert running is not None
        assert running.candidate_id == candidate
    # The next tick decides it, once, and there is one champion.
    with session_scope(sessions) as session:
        look = rollout.check_running(session, settings)
        assert look is not None
        assert str(look.decision.outcome) == "promote"
    with session_scope(sessions) as session:
        assert rollout.check_running(session, settings) is None
        decided = rollout.list_rollouts(session, limit=1)[0]
        assert decided.status == RolloutStatus.promoted
    assert champions() == [candidate]
    engine.dispose()
