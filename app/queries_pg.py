"""The group commit's statements on PostgreSQL: all the rows in one JSON parameter.

PostgresWriter (app/writer_postgres.py) inserts and checks many rows at once, on psycopg's
asyncio connection. The portable statements (app/queries.py, which SessionWriter runs) render
a multi-row VALUES list or an IN list, so their text changes with every batch size: psycopg
converts each new text again and PostgreSQL plans it again, which was a fifth of the writer's
time under load (bench/profile_hot_path.py --gil). These take the rows as one JSON document
instead (`json_to_recordset`): the text never changes, so psycopg converts it once and
PostgreSQL prepares it once (psycopg prepares after a statement's fifth run), and the rows are
encoded by the json module's C encoder (psycopg's array parameters, tried first, are dumped
element by element in Python: a third of the writer's time).
The writer keeps its connection in autocommit mode, where a group of impressions is a
single statement and so a single round trip, committed and durable when it answers. Same
arguments and answers as app/queries.py's portable twins.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from app.models import utcnow
from app.queries import ImageNotInVersion, InteractionKey

# The ids come from the sequence in ORDER BY order, so sorted they line up with the rows:
# the assumption SQLAlchemy's own sorted RETURNING makes for a multi-row insert. All rows or
# none: only if every row's image belongs to its version (impressions have no foreign keys,
# migration 0005; this checks more than they did, without locking the image's row).
_INSERT_IMPRESSIONS = """
    WITH row AS (
        SELECT * FROM ROWS FROM (
                 json_to_recordset(CAST(%(rows)s AS json))
                 AS (image_id integer, version_id integer, placement varchar,
                     visitor_hash varchar, client_hash varchar, simulated boolean,
                     created_at timestamptz)
             ) WITH ORDINALITY
             AS row (image_id, version_id, placement, visitor_hash, client_hash, simulated,
                     created_at, n)
    )
    INSERT INTO impressions
        (image_id, version_id, placement, visitor_hash, client_hash, simulated, flagged,
         created_at)
    SELECT image_id, version_id, placement, visitor_hash, client_hash,
           COALESCE(simulated, false), false, COALESCE(created_at, %(now)s)
    FROM row
    WHERE NOT EXISTS (
        SELECT FROM row AS unknown
        WHERE NOT EXISTS (
            SELECT FROM images
            WHERE images.id = unknown.image_id AND images.version_id = unknown.version_id
        )
    )
    ORDER BY n
    RETURNING id
"""

_INTERACTIONS_BY_KEY = """
    SELECT wanted.impression_id, wanted.kind, stored.id, stored.value
    FROM json_to_recordset(CAST(%(keys)s AS json)) AS wanted (impression_id bigint, kind varchar)
    JOIN LATERAL (
        SELECT id, value FROM interactions
        WHERE impression_id = wanted.impression_id AND kind = wanted.kind
        LIMIT 1
    ) AS stored ON true
"""


# Every step of recording interactions in one statement (one round trip, committed when it
# answers): look up each item's impression, insert the first item of each new (impression,
# kind) whose impression is stored with the token's image and, for a rating, was shown for
# rating (app/ingest.py's InteractionWrites judges the same from the same rows, and checks
# that this inserted exactly what it would have), and read each key's row stored before. A
# key in neither was inserted by a concurrent transaction after this statement's snapshot.
# The lookups are LATERAL with LIMIT 1 (each key is unique) so that they stay index lookups
# per item: planned as joins, PostgreSQL, guessing 100 items, hashed the whole interactions
# table for each statement (300 us of its CPU per interaction at 50,000 rows).
_RECORD_INTERACTIONS = """
    WITH wanted AS (
        SELECT * FROM ROWS FROM (
                 json_to_recordset(CAST(%(rows)s AS json))
                 AS (impression_id bigint, image_id integer, kind varchar,
                     value double precision, created_at timestamptz)
             ) WITH ORDINALITY
             AS wanted (impression_id, image_id, kind, value, created_at, n)
    ),
    checked AS (
        SELECT wanted.*, shown.image_id AS shown_image_id, shown.placement
        FROM wanted
        LEFT JOIN LATERAL (
            SELECT image_id, placement FROM impressions WHERE id = wanted.impression_id LIMIT 1
        ) AS shown ON true
    ),
    inserted AS (
        INSERT INTO interactions (impression_id, kind, value, created_at)
        SELECT DISTINCT ON (impression_id, kind)
               impression_id, kind, value, COALESCE(created_at, %(now)s)
        FROM checked
        WHERE shown_image_id = image_id AND (kind <> 'rating' OR placement = 'rating')
        ORDER BY impression_id, kind, n
        ON CONFLICT (impression_id, kind) DO NOTHING
        RETURNING impression_id, kind, id, value
    )
    SELECT checked.impression_id, checked.kind, checked.shown_image_id, checked.placement,
           inserted.id, inserted.value, earlier.id, earlier.value
    FROM checked
    LEFT JOIN inserted
           ON inserted.impression_id = checked.impression_id AND inserted.kind = checked.kind
    LEFT JOIN LATERAL (
        SELECT id, value FROM interactions
        WHERE impression_id = checked.impression_id AND kind = checked.kind
        LIMIT 1
    ) AS earlier ON true
    ORDER BY checked.n
"""


@dataclass
class RecordedInteractions:
    """What _RECORD_INTERACTIONS found and did, in the shapes app/queries.py's steps answer."""

    refs: dict[int, tuple[int, str]]  # impression id: (image id, placement), stored ones
    created: dict[InteractionKey, tuple[int, float]]  # key: (id, value), inserted now
    earlier: dict[InteractionKey, tuple[int, float]]  # key: (id, value), stored before


async def record_interactions(
    connection: AsyncConnection[Any], items: Sequence[dict[str, Any]]
) -> RecordedInteractions:
    """items: impression_id, image_id, kind, value (created_at: now, if left out)."""
    recorded = RecordedInteractions({}, {}, {})
    parameters = {"rows": _json(list(items)), "now": utcnow()}
    cursor = await connection.execute(_RECORD_INTERACTIONS, parameters)
    for row in await cursor.fetchall():
        impression_id, kind, image_id, placement, new_id, new_value, old_id, old_value = row
        key = (int(impression_id), kind)
        if image_id is not None:
            recorded.refs[key[0]] = (int(image_id), placement)
        if new_id is not None:
            recorded.created[key] = (int(new_id), float(new_value))
        if old_id is not None:
            recorded.earlier[key] = (int(old_id), float(old_value))
    return recorded


async def insert_impressions(
    connection: AsyncConnection[Any], rows: Sequence[dict[str, Any]]
) -> list[int]:
    """A row may leave out the columns with defaults, which the statement fills in (the
    insert's time is one parameter, not a time written into every row's JSON). Raises
    ImageNotInVersion, having stored none of the rows, if one names an image not in its
    version."""
    cursor = await connection.execute(_INSERT_IMPRESSIONS, {"rows": _json(rows), "now": utcnow()})
    ids = sorted(int(row_id) for (row_id,) in await cursor.fetchall())
    if len(ids) != len(rows):
        raise ImageNotInVersion("an impression names an image that is not in its version")
    return ids


async def interactions_by_key(
    connection: AsyncConnection[Any], keys: Sequence[InteractionKey]
) -> dict[InteractionKey, tuple[int, float]]:
    wanted = [{"impression_id": impression_id, "kind": kind} for impression_id, kind in keys]
    cursor = await connection.execute(_INTERACTIONS_BY_KEY, {"keys": _json(wanted)})
    return {
        (int(impression_id), kind): (int(row_id), float(value))
        for impression_id, kind, row_id, value in await cursor.fetchall()
    }


def _json(value: Any) -> str:
    return json.dumps(value, default=_iso_utc, allow_nan=False)


def _iso_utc(value: datetime) -> str:
    """ISO 8601 with its offset, which PostgreSQL reads as timestamptz; a naive time is UTC,
    as the models' UTCDateTime takes it."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
