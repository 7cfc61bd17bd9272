"""The Alembic chain builds, tears down and rebuilds the schema on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from app import migrate
from app.database import make_engine
from app.models import Base
from tests.conftest import create_pg_database, drop_pg_database, postgres_reachable


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    names = set(inspect(engine).get_table_names()) - {"alembic_version"}
    engine.dispose()
    return names


def round_trip(url: str) -> None:
    expected = set(Base.metadata.tables)
    migrate.upgrade(url)
    assert table_names(url) == expected
    migrate.downgrade(url, "base")
    assert table_names(url) == set()
    migrate.upgrade(url)
    assert table_names(url) == expected


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    round_trip(f"sqlite:///{tmp_path / 'chain.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_upgrade(pg_url: str) -> None:
    # pg_url proves the server answers; the chain runs on a database of its own.
    assert postgres_reachable()
    url = create_pg_database("pirloop_chain")
    try:
        round_trip(url)
        engine = make_engine(url)
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("impressions")}
        engine.dispose()
        assert "ix_impressions_version_image" in indexes
    finally:
        drop_pg_database(url)


def test_models_match_migrations(sqlite_url: str) -> None:
    """No model change without a migration: autogenerate finds nothing to do."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []
