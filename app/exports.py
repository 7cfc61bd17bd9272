"""Impressions and interactions as CSV or Parquet, streamed a chunk at a time so that an export
of millions of rows never sits in memory whole."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.orm import Session, sessionmaker

from app import queries

Table = Literal["impressions", "interactions"]
Format = Literal["csv", "parquet"]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}

SCHEMAS = {
    "impressions": pa.schema(
        [
            ("impression_id", pa.int64()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("version_id", pa.int64()),
            ("image_id", pa.int64()),
            ("placement", pa.string()),
            ("simulated", pa.bool_()),
            ("flagged", pa.bool_()),
            ("visitor_hash", pa.string()),
        ]
    ),
    "interactions": pa.schema(
        [
            ("interaction_id", pa.int64()),
            ("impression_id", pa.int64()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("kind", pa.string()),
            ("value", pa.float64()),
            ("version_id", pa.int64()),
            ("image_id", pa.int64()),
            ("placement", pa.string()),
            ("simulated", pa.bool_()),
        ]
    ),
}


def columns(table: Table) -> tuple[str, ...]:
    if table == "impressions":
        return queries.IMPRESSION_EXPORT_COLUMNS
    return queries.INTERACTION_EXPORT_COLUMNS


def _chunks(
    factory: sessionmaker[Session], table: Table, *, version_id: int | None, simulated: bool | None
) -> Iterator[list[tuple[Any, ...]]]:
    # Its own session: the response streams after the request's session has closed.
    with factory() as session:
        yield from queries.iter_export_rows(
            session, table, version_id=version_id, simulated=simulated
        )


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        # SQLite hands back naive datetimes; every stored time is UTC.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def stream_csv(
    factory: sessionmaker[Session], table: Table, *, version_id: int | None, simulated: bool | None
) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns(table))
    for chunk in _chunks(factory, table, version_id=version_id, simulated=simulated):
        writer.writerows([_cell(v) for v in row] for row in chunk)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


class _Sink(io.RawIOBase):
    """A write-only file that hands over what was written since the last take()."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def stream_parquet(
    factory: sessionmaker[Session], table: Table, *, version_id: int | None, simulated: bool | None
) -> Iterator[bytes]:
    """One row group per chunk, sent as soon as it is written."""
    schema = SCHEMAS[table]
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        for chunk in _chunks(factory, table, version_id=version_id, simulated=simulated):
            data = {name: [row[i] for row in chunk] for i, name in enumerate(schema.names)}
            writer.write_table(pa.Table.from_pydict(data, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()
