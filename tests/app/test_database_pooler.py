"""PIRLOOP_DATABASE_POOLER: psycopg prepares statements only where what the URL reaches keeps
them (docs/SCALING.md, "Connections")."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from app.database import engine_from_settings, prepared_statement_args
from app.settings import Settings
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("pooler", "libpq", "prepares"),
    [
        ("none", 150000, True),
        ("none", 180000, True),
        # PgBouncer 1.22+ tracks protocol-level statements; libpq 17 closes them its way.
        ("pgbouncer", 170000, True),
        ("pgbouncer", 180006, True),
        ("pgbouncer", 160004, False),
        ("transaction", 180006, False),
    ],
)
def test_prepared_statements_only_where_they_survive(
    pooler: str, libpq: int, prepares: bool
) -> None:
    args = prepared_statement_args(pooler, libpq)
    assert ("prepare_threshold" not in args) is prepares
    if not prepares:
        assert args == {"prepare_threshold": None}


def test_setting_names_a_known_pooler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIRLOOP_DATABASE_POOLER", raising=False)
    assert Settings().database_pooler == "none"
    monkeypatch.setenv("PIRLOOP_DATABASE_POOLER", "pgbouncer")
    assert Settings().database_pooler == "pgbouncer"
    monkeypatch.setenv("PIRLOOP_DATABASE_POOLER", "pgpool")
    with pytest.raises(ValidationError, match="database_pooler"):
        Settings()


def prepared_after_repeats(settings: Settings) -> int:
    """Statements prepared on the server session after one statement ran ten times."""
    engine = engine_from_settings(settings)
    try:
        with engine.connect() as connection:
            for version_id in range(10):
                connection.execute(
                    text("SELECT id FROM generator_versions WHERE id = :id"), {"id": version_id}
                ).all()
            return int(
                connection.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_transaction_pooler_gets_no_prepared_statements(pg_url: str, tmp_path: Path) -> None:
    direct = make_settings(pg_url, tmp_path)
    pooled = make_settings(pg_url, tmp_path, database_pooler="transaction")
    assert prepared_after_repeats(direct) >= 1
    assert prepared_after_repeats(pooled) == 0
