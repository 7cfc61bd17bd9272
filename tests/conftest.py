"""Databases for the tests: a fresh SQLite file and a fresh PostgreSQL database per run, both
built by the Alembic chain (so the migrations are tested too), emptied after each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import migrate
from app.database import make_engine
from app.models import Base
from app.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "PIRLOOP_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# CI sets this so that an unreachable PostgreSQL fails the run instead of skipping tests.
REQUIRE_POSTGRES = os.environ.get("PIRLOOP_REQUIRE_POSTGRES") == "1"
TEST_SECRET = "test-secret-key-0123456789abcdef"
TEST_ADMIN = "test-admin-token-0123456789abcdef"
# What the simulator sends in X-Pirloop-Simulation-Key to mark its traffic simulated.
TEST_SIMULATION_KEY = "test-simulation-key-0123456789abcdef"
SIMULATION_HEADERS = {"X-Pirloop-Simulation-Key": TEST_SIMULATION_KEY}


def postgres_reachable() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def create_pg_database(prefix: str = "pirloop_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    if not postgres_reachable():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but does not answer at {PG_ADMIN_URL}")
        pytest.skip("PostgreSQL is not reachable")
    url = create_pg_database()
    migrate.upgrade(url)
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "pirloop.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    return url


def empty_tables(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    yield url
    empty_tables(url)


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "database_url": database_url,
        "data_dir": tmp_path,
        "secret_key": TEST_SECRET,
        "admin_token": TEST_ADMIN,
        "simulation_key": TEST_SIMULATION_KEY,
        "redis_url": "",
        "batch_size": 8,
        "embedded_scheduler": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def service_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a `pirloop` process in a test: test secrets, its own data directory,
    embedded defaults unless overridden."""
    env = {
        "PIRLOOP_ENVIRONMENT": "test",
        "PIRLOOP_SECRET_KEY": TEST_SECRET,
        "PIRLOOP_ADMIN_TOKEN": TEST_ADMIN,
        "PIRLOOP_SIMULATION_KEY": TEST_SIMULATION_KEY,
        "PIRLOOP_DATA_DIR": str(data_dir),
        "PIRLOOP_DATABASE_URL": "",
        "PIRLOOP_REDIS_URL": "",
    }
    env.update(overrides)
    return env


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


def pytest_report_header() -> str:
    where = PG_ADMIN_URL.rsplit("@", 1)[-1]
    state = "reachable" if postgres_reachable() else "NOT reachable"
    return f"PostgreSQL at {where}: {state}; required: {REQUIRE_POSTGRES}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests ran against the real PostgreSQL server, so a run shows it."""
    passed = terminalreporter.stats.get("passed", [])
    on_postgres = [r for r in passed if "postgres" in r.keywords]
    terminalreporter.write_line(f"PostgreSQL-backed tests passed: {len(on_postgres)}")
