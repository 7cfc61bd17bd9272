"""The group commit's statements on PostgreSQL: one array per column, whatever the rows.

The writer (app/writer.py) inserts and checks many rows at once. The portable statements
(app/queries.py) render a multi-row VALUES list or an IN list, so their text changes with
every batch size: psycopg converts each new text again and PostgreSQL plans it again, which
was a fifth of the writer's time under load (bench/profile_hot_path.py --gil). These pass
one array per column instead (`unnest`, `= ANY`): the text never changes, so psycopg converts
it once and PostgreSQL prepares it once (psycopg prepares a statement after its fifth run).
They take psycopg's own connection: the group commit runs them on one it keeps in autocommit
mode (app/writer.py), where an impression batch is a single statement and so a single round
trip, committed and durable when it answers; app/queries.py's portable twins call them with
the connection under a Session's transaction. Same arguments and answers as those twins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection
from sqlalchemy.orm import Session

from app.models import utcnow

InteractionKey = tuple[int, str]  # (impression id, kind): at most one row each

# The ids come from the sequence in ORDER BY order, so sorted they line up with the rows:
# the assumption SQLAlchemy's own sorted RETURNING makes for a multi-row insert.
_INSERT_IMPRESSIONS = """
    INSERT INTO impressions
        (image_id, version_id, placement, visitor_hash, client_hash, simulated, flagged,
         created_at)
    SELECT image_id, version_id, placement, visitor_hash, client_hash, simulated, false,
           created_at
    FROM unnest(CAST(%(image_id)s AS integer[]), CAST(%(version_id)s AS integer[]),
                CAST(%(placement)s AS varchar[]), CAST(%(visitor_hash)s AS varchar[]),
                CAST(%(client_hash)s AS varchar[]), CAST(%(simulated)s AS boolean[]),
                CAST(%(created_at)s AS timestamptz[]))
         WITH ORDINALITY
         AS row (image_id, version_id, placement, visitor_hash, client_hash, simulated,
                 created_at, n)
    ORDER BY n
    RETURNING id
"""
# Each column and its value where a row leaves it out (NULL: refused but for client_hash;
# created_at: the time of the insert).
IMPRESSION_COLUMNS = (
    "image_id",
    "version_id",
    "placement",
    "visitor_hash",
    "client_hash",
    "simulated",
    "created_at",
)
IMPRESSION_DEFAULTS = {"simulated": False}

_IMPRESSION_REFS = (
    "SELECT id, image_id, placement FROM impressions WHERE id = ANY(CAST(%(ids)s AS bigint[]))"
)

_INSERT_NEW_INTERACTIONS = """
    INSERT INTO interactions (impression_id, kind, value, created_at)
    SELECT impression_id, kind, value, created_at
    FROM unnest(CAST(%(impression_id)s AS bigint[]), CAST(%(kind)s AS varchar[]),
                CAST(%(value)s AS double precision[]), CAST(%(created_at)s AS timestamptz[]))
         AS row (impression_id, kind, value, created_at)
    ON CONFLICT (impression_id, kind) DO NOTHING
    RETURNING impression_id, kind, id, value
"""

_INTERACTIONS_BY_KEY = """
    SELECT stored.impression_id, stored.kind, stored.id, stored.value
    FROM interactions AS stored
    JOIN unnest(CAST(%(impression_id)s AS bigint[]), CAST(%(kind)s AS varchar[]))
         AS wanted (impression_id, kind)
      ON stored.impression_id = wanted.impression_id AND stored.kind = wanted.kind
"""


def insert_impressions(connection: Connection[Any], rows: Sequence[dict[str, Any]]) -> list[int]:
    defaults = {**IMPRESSION_DEFAULTS, "created_at": utcnow()}
    arrays = {
        name: [row.get(name, defaults.get(name)) for row in rows] for name in IMPRESSION_COLUMNS
    }
    result = connection.execute(_INSERT_IMPRESSIONS, arrays)
    return sorted(int(row_id) for (row_id,) in result)


def impression_refs(
    connection: Connection[Any], impression_ids: Sequence[int]
) -> dict[int, tuple[int, str]]:
    rows = connection.execute(_IMPRESSION_REFS, {"ids": list(impression_ids)})
    return {int(row_id): (int(image_id), placement) for row_id, image_id, placement in rows}


def insert_new_interactions(
    connection: Connection[Any], rows: Sequence[dict[str, Any]]
) -> dict[InteractionKey, tuple[int, float]]:
    now = utcnow()
    result = connection.execute(
        _INSERT_NEW_INTERACTIONS,
        {
            "impression_id": [row["impression_id"] for row in rows],
            "kind": [row["kind"] for row in rows],
            "value": [float(row.get("value", 1.0)) for row in rows],  # the column default
            "created_at": [row.get("created_at", now) for row in rows],
        },
    )
    return _by_key(result)


def interactions_by_key(
    connection: Connection[Any], keys: Sequence[InteractionKey]
) -> dict[InteractionKey, tuple[int, float]]:
    result = connection.execute(
        _INTERACTIONS_BY_KEY,
        {"impression_id": [key[0] for key in keys], "kind": [key[1] for key in keys]},
    )
    return _by_key(result)


def driver_connection(session: Session) -> Connection[Any]:
    """psycopg's connection under this Session's transaction (statements run inside it)."""
    connection = session.connection().connection.driver_connection
    assert isinstance(connection, Connection)  # the engine's driver is psycopg
    return connection


def _by_key(rows: Any) -> dict[InteractionKey, tuple[int, float]]:
    return {
        (int(impression_id), kind): (int(row_id), float(value))
        for impression_id, kind, row_id, value in rows
    }
