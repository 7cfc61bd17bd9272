"""What every job needs: settings, a database session factory and the artifact store, built
once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import ArtifactStore, artifact_store
from app.database import engine_from_settings, make_session_factory
from app.settings import Settings, get_settings


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    artifacts: ArtifactStore


@lru_cache
def job_context() -> JobContext:
    settings = get_settings()
    engine = engine_from_settings(settings)
    return JobContext(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        artifacts=artifact_store(settings, engine),
    )
