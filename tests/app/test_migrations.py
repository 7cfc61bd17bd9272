"""The Alembic chain builds, tears down and rebuilds the schema on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from app import migrate, queries, rollout
from app.database import make_engine, make_session_factory, session_scope
from app.models import Base
from app.settings import Settings
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


def upgrade_mid_lineage(url: str) -> None:
    """A deployment on 0001 serving version 2 of a lineage upgrades: version 2 goes on
    serving as the champion, alone, with no rollout; downgrading keeps it too."""
    migrate.upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as connection:
        for version_id, parent, status in ((1, None, "retired"), (2, 1, "serving")):
            connection.execute(
                text(
                    "INSERT INTO generator_versions (id, parent_id, status, source, config, "
                    "metrics, batch_size, created_at) VALUES (:id, :parent, :status, 'test', "
                    "'{}', '{}', 1, CURRENT_TIMESTAMP)"
                ),
                {"id": version_id, "parent": parent, "status": status},
            )
        connection.execute(
            text(
                "INSERT INTO images (id, version_id, batch_index, latent_seed, png, "
                "content_hash, width, height, created_at) VALUES (1, 2, 0, 0, :png, 'x', 1, 1, "
                "CURRENT_TIMESTAMP)"
            ),
            {"png": b"png"},
        )
    migrate.upgrade(url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        champion = queries.serving_version(session)
        assert champion is not None
        assert champion.id == 2
        assert rollout.running_rollout(session) is None
        assert rollout.serving_arms(session, Settings(environment="development")) == [(2, 1.0)]
    migrate.downgrade(url, "0001")
    with engine.connect() as connection:
        statuses = dict(connection.execute(text("SELECT id, status FROM generator_versions")).all())
    assert statuses == {1: "retired", 2: "serving"}
    engine.dispose()


def test_sqlite_upgrade_mid_lineage_keeps_the_champion(tmp_path: Path) -> None:
    upgrade_mid_lineage(f"sqlite:///{tmp_path / 'mid.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_mid_lineage_keeps_the_champion(pg_url: str) -> None:
    assert postgres_reachable()
    url = create_pg_database("pirloop_mid")
    try:
        upgrade_mid_lineage(url)
    finally:
        drop_pg_database(url)
