"""Engine and session factories. Nothing connects at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, pq
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings

# psycopg closes a prepared statement with the protocol's Close message from libpq 17 on, and
# PgBouncer tracks that; with an older libpq it sends DEALLOCATE, which PgBouncer forwards
# under the client's name to a server connection that knows the statement by another.
LIBPQ_CLOSES_PREPARED = 170000


def prepared_statement_args(pooler: str, libpq_version: int) -> dict[str, Any]:
    """psycopg's connect arguments for what the URL reaches (PIRLOOP_DATABASE_POOLER).

    psycopg prepares a statement on its connection after the statement's fifth run (the
    group commit's statements are one text each, so they all get prepared). Behind a pooler
    in transaction mode the next transaction may run on another server connection, where
    that statement does not exist. PgBouncer 1.22 or newer with max_prepared_statements
    above 0 prepares it there for the client, given libpq 17 or newer (psycopg's docs, "Using
    prepared statements with PgBouncer"); behind any other pooler, or with an older libpq,
    psycopg must prepare nothing."""
    if pooler == "none" or (pooler == "pgbouncer" and libpq_version >= LIBPQ_CLOSES_PREPARED):
        return {}
    return {"prepare_threshold": None}


def make_engine(url: str, *, pooler: str = "none", **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # A connection killed by a database restart is dropped and replaced, not handed out.
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", 5)
    return create_engine(url, connect_args=postgresql_connect_args(pooler), **kwargs)


def postgresql_connect_args(pooler: str) -> dict[str, Any]:
    """psycopg's connect arguments, for the engine's pool and the writer's own connection."""
    return {"connect_timeout": 3, **prepared_statement_args(pooler, pq.version())}


async def connect_postgresql(engine: Engine, pooler: str) -> AsyncConnection[Any]:
    """An asyncio connection to the engine's database, in autocommit mode: the group commit's
    (app/writer_postgres.py)."""
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return await AsyncConnection.connect(
        conninfo, autocommit=True, **postgresql_connect_args(pooler)
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a job writes; FULL sync keeps acknowledged rows on power loss.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_from_settings(settings: Settings) -> Engine:
    return make_engine(settings.resolved_database_url, pooler=settings.database_pooler)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit when the block succeeds, roll back when it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
