"""A cycle's metrics are stored as JSON that both databases accept."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from app.database import make_engine, make_session_factory, session_scope
from app.models import TrainingRun
from tests.conftest import make_settings
from worker.jobs.cycle import _jsonable


def test_non_finite_metrics_become_null() -> None:
    metrics = {
        "heldout_corr": math.nan,
        "curve": [1.0, math.inf, -math.inf],
        "tensor": torch.tensor(0.5),
        "nested": {"value": float("nan")},
    }
    assert _jsonable(metrics) == {
        "heldout_corr": None,
        "curve": [1.0, None, None],
        "tensor": 0.5,
        "nested": {"value": None},
    }


def test_stored_on_both_databases(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            session.add(TrainingRun(kind="test", metrics=_jsonable({"corr": math.nan})))
        with session_scope(make_session_factory(engine)) as session:
            run = session.query(TrainingRun).one()
            assert run.metrics == {"corr": None}
    finally:
        engine.dispose()
