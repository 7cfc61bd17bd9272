from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.settings import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app on a migrated database with a placeholder version 0 serving (no torch needed)."""
    engine = make_engine(settings.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    with TestClient(create_app(settings)) as test_client:
        yield test_client
