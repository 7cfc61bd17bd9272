"""A running cycle's progress, as the dashboard reads it from the run's row."""

from __future__ import annotations

from typing import Any

from app import queries
from app.artifacts import artifact_store
from app.database import engine_from_settings, make_session_factory, session_scope
from app.models import RunStatus, TrainingRun
from app.settings import Settings
from worker.jobs.context import JobContext
from worker.jobs.cycle import CYCLE, PROGRESS_EVERY_SECONDS, _progress_writer


def test_a_running_cycle_records_its_progress_at_most_every_two_seconds(
    settings: Settings,
) -> None:
    engine = engine_from_settings(settings)
    ctx = JobContext(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        artifacts=artifact_store(settings, engine),
    )
    with session_scope(ctx.sessions) as session:
        run = queries.create_run(session, kind=CYCLE, version_id=None, params={})
        queries.mark_run(session, run, status=RunStatus.running)
        run.metrics = {"kept": 1}
        run_id = run.id

    def stored() -> dict[str, Any]:
        with session_scope(ctx.sessions) as session:
            row = session.get(TrainingRun, run_id)
            assert row is not None
            return dict(row.metrics)

    now = 100.0
    write = _progress_writer(ctx, run_id, clock=lambda: now)
    try:
        write("estimator", 0, 3)
        first = stored()
        assert first["kept"] == 1
        assert {k: v for k, v in first["progress"].items() if k != "updated_at"} == {
            "phase": "estimator",
            "step": 0,
            "total": 3,
        }
        assert first["progress"]["updated_at"].startswith("20")

        now += PROGRESS_EVERY_SECONDS / 2
        write("estimator", 1, 3)
        assert stored() == first  # too soon: not written

        now += PROGRESS_EVERY_SECONDS
        write("tuning", 0, 400)
        assert stored()["progress"]["phase"] == "tuning"

        # A finished run keeps its final metrics.
        with session_scope(ctx.sessions) as session:
            row = session.get(TrainingRun, run_id)
            assert row is not None
            queries.mark_run(session, row, status=RunStatus.succeeded, metrics={"version_id": 2})
        now += 10 * PROGRESS_EVERY_SECONDS
        write("estimating", 40, 40)
        assert stored() == {"version_id": 2}
    finally:
        engine.dispose()
