"""Active cycles that will never finish are failed, so learning goes on: a run still queued
past the queue timeout (its task never reached the broker), and any past the cycle timeout.
A run a worker has started inside the queue timeout is left alone."""

from __future__ import annotations

from datetime import timedelta

from app import queries
from app.database import engine_from_settings, make_session_factory, session_scope
from app.models import RunStatus, TrainingRun, utcnow
from app.settings import Settings
from worker.jobs.context import JobContext
from worker.jobs.cycle import CYCLE, abandon_stale_runs


def test_a_lost_queued_cycle_is_failed_and_a_started_one_kept(settings: Settings) -> None:
    settings = settings.model_copy(update={"cycle_queue_timeout_seconds": 60})
    engine = engine_from_settings(settings)
    sessions = make_session_factory(engine)
    ctx = JobContext(settings=settings, engine=engine, sessions=sessions, artifacts=None)  # type: ignore[arg-type]
    # One active cycle at a time (a unique index), so each case in turn.
    cases = [
        (RunStatus.queued, timedelta(seconds=30), RunStatus.queued),  # waiting for a worker
        (RunStatus.queued, timedelta(seconds=90), RunStatus.failed),  # its task was lost
        (RunStatus.running, timedelta(seconds=90), RunStatus.running),  # started: still going
        (RunStatus.running, timedelta(hours=4), RunStatus.failed),  # past the cycle timeout
    ]
    try:
        for status, age, expected in cases:
            with session_scope(sessions) as session:
                run = queries.create_run(session, kind=CYCLE, version_id=None, params={})
                if status == RunStatus.running:
                    queries.mark_run(session, run, status=RunStatus.running)
                    run.started_at = utcnow() - age
                run.created_at = utcnow() - age
                run_id = run.id
            abandon_stale_runs(ctx)
            with session_scope(sessions) as session:
                run = session.get(TrainingRun, run_id)
                assert run is not None
                assert run.status == expected, (status, age, run.status, run.error)
                if expected == RunStatus.failed:
                    assert "abandoned" in (run.error or "")
                else:  # clear the way for the next case
                    queries.mark_run(session, run, status=RunStatus.succeeded)
    finally:
        engine.dispose()
