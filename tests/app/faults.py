"""Faults injected for tests: a COMMIT that fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.exc import OperationalError

from app.database import make_engine
from app.settings import Settings

# On PostgreSQL a real COMMIT fails: a deferred constraint trigger raises an I/O error
# (SQLSTATE 58030, which drivers report as an OperationalError) when the transaction commits,
# whichever way the writer runs it (its own autocommit statement or a Session's COMMIT).
FAILING_COMMIT_SQL = (
    """
    CREATE FUNCTION pirloop_test_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'could not fsync' USING ERRCODE = '58030'; END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER pirloop_test_fail_commit AFTER INSERT ON {table}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pirloop_test_fail_commit()
    """,
)
UNDO_FAILING_COMMIT_SQL = (
    "DROP TRIGGER IF EXISTS pirloop_test_fail_commit ON {table}",
    "DROP FUNCTION IF EXISTS pirloop_test_fail_commit()",
)


@contextlib.contextmanager
def commits_fail(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, *, table: str
) -> Iterator[None]:
    """Every COMMIT that wrote to `table` fails (on SQLite: every COMMIT, through
    SQLAlchemy's dialect, the only way it has)."""
    if not settings.resolved_database_url.startswith("postgresql"):

        def failing_commit(self: DefaultDialect, connection: object) -> None:
            raise OperationalError("COMMIT", {}, Exception("could not fsync"))

        monkeypatch.setattr(DefaultDialect, "do_commit", failing_commit)
        try:
            yield
        finally:
            monkeypatch.undo()
        return
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.begin() as connection:
            for statement in FAILING_COMMIT_SQL:
                connection.exec_driver_sql(statement.format(table=table))
        yield
    finally:
        with engine.begin() as connection:
            for statement in UNDO_FAILING_COMMIT_SQL:
                connection.exec_driver_sql(statement.format(table=table))
        engine.dispose()
