"""Time-partitioned impressions against one plain table, on the local PostgreSQL.

    .venv/bin/python -m bench.partitioning [--rows 200000] [--batch 100] [--days 8]

Two impressions tables in a scratch database, with app/models.py's columns, foreign keys and
indexes: `plain` (as the migrations make it) and `partitioned`, declaratively partitioned by
RANGE on created_at, one partition a day (its primary key is (id, created_at): a unique
constraint on a partitioned table must include the partition key). Then:

(a) inserts: the group commit's statement as of commit d2c1b2b (INSERT ... SELECT FROM unnest
    of one array per column, RETURNING id; app/queries_pg.py now sends the same rows as one
    JSON document), one COMMIT per batch of --batch rows, with the clock moving forward so
    every batch lands in "today's" partition, as in production. The same
    batches also go, unprepared (psycopg's prepare_threshold=None, what a transaction pooler
    without prepared-statement support needs), into a third, plain table. The three take
    turns batch by batch, so a busy neighbour slows all three alike. Every 40th batch of the
    first two runs under EXPLAIN (ANALYZE, WAL) instead: the WAL bytes one impression row
    writes (heap, four indexes; full-page images counted apart); those batches are not timed.
(b) retention of the oldest day: DELETE of its rows (then the VACUUM that makes their space
    reusable) against DETACH PARTITION ... CONCURRENTLY and DROP TABLE of its partition;
    seconds, and pg_total_relation_size (heap + indexes) before and after.
(c) reads, before (b), after VACUUM ANALYZE of both: one version's per-image counts (the
    dashboard's and the picker's hot aggregate, queries.impression_counts_by_image), on the
    partitioned table also with the version's served window as a created_at bound (so the
    planner can prune partitions), and every version's total (the version list).

Prints a table and ratios; writes bench/results/partitioning.json. Needs PostgreSQL on
127.0.0.1:5432 (user postgres, trust); the scratch database is dropped afterwards. The
defaults take under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

from bench.common import create_database, drop_database, write_result

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
IMAGES_PER_VERSION = 200
WAL_SAMPLE_EVERY = 40

COLUMNS = """
    id bigserial NOT NULL,
    image_id integer NOT NULL REFERENCES images (id),
    version_id integer NOT NULL REFERENCES generator_versions (id),
    placement varchar(16) NOT NULL,
    visitor_hash varchar(64) NOT NULL,
    client_hash varchar(64),
    simulated boolean NOT NULL,
    flagged boolean NOT NULL,
    created_at timestamptz NOT NULL
"""
# app/models.py's Impression indexes, on every table.
INDEXES = (
    "CREATE INDEX ix_{table}_version_image ON {table} (version_id, image_id)",
    "CREATE INDEX ix_{table}_created_at ON {table} (created_at)",
    "CREATE INDEX ix_{table}_visitor ON {table} (visitor_hash)",
)
# The group commit's impression insert as of commit d2c1b2b (app/queries.py), the table name
# aside: the same rows, indexes and WAL as app/queries_pg.py's JSON form, parsed differently.
INSERT = """
    INSERT INTO {table}
        (image_id, version_id, placement, visitor_hash, client_hash, simulated, flagged,
         created_at)
    SELECT image_id, version_id, placement, visitor_hash, client_hash, simulated, false,
           :created_at
    FROM unnest(CAST(:image_id AS integer[]), CAST(:version_id AS integer[]),
                CAST(:placement AS varchar[]), CAST(:visitor_hash AS varchar[]),
                CAST(:client_hash AS varchar[]), CAST(:simulated AS boolean[]))
         WITH ORDINALITY
         AS row (image_id, version_id, placement, visitor_hash, client_hash, simulated, n)
    ORDER BY n
    RETURNING id
"""
COUNTS_BY_IMAGE = (
    "SELECT image_id, count(*) FROM {table} WHERE version_id = :version {window}GROUP BY image_id"
)
WINDOW = "AND created_at >= :since AND created_at < :until "
TOTALS_BY_VERSION = "SELECT version_id, count(*) FROM {table} GROUP BY version_id"
TABLES = ("plain", "partitioned", "plain_unprepared")


def versions_of_day(day: int) -> tuple[int, int]:
    """(champion, candidate) served that day: a new candidate every two days, which then
    becomes the champion, so a version is served for about four days."""
    champion = day // 2 + 1
    return champion, champion + 1


def served_window(version: int) -> tuple[datetime, datetime]:
    first_day = max(0, 2 * (version - 2))
    return DAY0 + timedelta(days=first_day), DAY0 + timedelta(days=2 * version)


def make_batches(*, rows: int, batch: int, days: int, seed: int) -> list[dict[str, Any]]:
    """The batches' parameters, made before any timing: the clock runs evenly over `days`."""
    rng = random.Random(seed)
    visitors = [hashlib.sha256(f"visitor {n}".encode()).hexdigest() for n in range(20_000)]
    clients = [hashlib.sha256(f"client {n}".encode()).hexdigest() for n in range(5_000)]
    count = rows // batch
    step = timedelta(days=days) / count
    batches = []
    for index in range(count):
        created_at = DAY0 + step * (index + 0.5)
        day = int((created_at - DAY0) / timedelta(days=1))
        arms = versions_of_day(day)
        version_ids = [rng.choice(arms) for _ in range(batch)]
        batches.append(
            {
                "created_at": created_at,
                "image_id": [v * 1000 + rng.randrange(IMAGES_PER_VERSION) for v in version_ids],
                "version_id": version_ids,
                "placement": ["background"] * batch,
                "visitor_hash": [rng.choice(visitors) for _ in range(batch)],
                "client_hash": [rng.choice(clients) for _ in range(batch)],
                "simulated": [False] * batch,
            }
        )
    return batches


def create_schema(connection: Connection, *, days: int) -> None:
    versions = versions_of_day(days - 1)[1]
    connection.execute(text("CREATE TABLE generator_versions (id integer PRIMARY KEY)"))
    connection.execute(
        text(
            "CREATE TABLE images (id integer PRIMARY KEY, "
            "version_id integer NOT NULL REFERENCES generator_versions (id))"
        )
    )
    connection.execute(
        text("INSERT INTO generator_versions SELECT generate_series(1, :n)"), {"n": versions}
    )
    connection.execute(
        text(
            "INSERT INTO images SELECT v * 1000 + i, v "
            "FROM generate_series(1, :n) AS v, generate_series(0, :images - 1) AS i"
        ),
        {"n": versions, "images": IMAGES_PER_VERSION},
    )
    for table in ("plain", "plain_unprepared"):
        connection.execute(text(f"CREATE TABLE {table} ({COLUMNS}, PRIMARY KEY (id))"))
    connection.execute(
        text(
            f"CREATE TABLE partitioned ({COLUMNS}, PRIMARY KEY (id, created_at)) "
            "PARTITION BY RANGE (created_at)"
        )
    )
    for day in range(days):
        start = DAY0 + timedelta(days=day)
        connection.execute(
            text(
                f"CREATE TABLE {partition_name(day)} PARTITION OF partitioned "
                f"FOR VALUES FROM ('{start.isoformat()}') "
                f"TO ('{(start + timedelta(days=1)).isoformat()}')"
            )
        )
    for table in TABLES:
        for index in INDEXES:
            connection.execute(text(index.format(table=table)))


def partition_name(day: int) -> str:
    return f"partitioned_d{day:03d}"


def total_bytes(connection: Connection, table: str) -> int:
    """Heap, indexes and TOAST; for a partitioned table, summed over its partitions."""
    return int(
        connection.execute(
            text(
                "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) "
                "FROM pg_partition_tree(CAST(:table AS regclass))), "
                "pg_total_relation_size(CAST(:table AS regclass)))"
            ),
            {"table": table},
        ).scalar_one()
    )


def row_count(connection: Connection, table: str) -> int:
    return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def insert_all(
    engines: dict[str, Engine], batches: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Every batch into every table, taking turns; (timings, WAL per row) by table."""
    seconds = dict.fromkeys(TABLES, 0.0)
    timed_rows = dict.fromkeys(TABLES, 0)
    wal: dict[str, dict[str, float]] = {
        table: {"rows": 0, "bytes": 0, "records": 0, "fpi": 0} for table in TABLES[:2]
    }
    connections = {table: engines[table].connect() for table in TABLES}
    try:
        for index, params in enumerate(batches):
            sampled = index % WAL_SAMPLE_EVERY == WAL_SAMPLE_EVERY // 2
            order = TABLES[index % 3 :] + TABLES[: index % 3]
            for table in order:
                connection = connections[table]
                statement = INSERT.format(table=table)
                if sampled and table in wal:
                    with connection.begin():
                        plan = connection.execute(
                            text(f"EXPLAIN (ANALYZE, WAL, TIMING OFF, FORMAT JSON) {statement}"),
                            params,
                        ).scalar_one()[0]["Plan"]
                    wal[table]["rows"] += len(params["image_id"])
                    wal[table]["bytes"] += plan["WAL Bytes"]
                    wal[table]["records"] += plan["WAL Records"]
                    wal[table]["fpi"] += plan["WAL FPI"]
                    continue
                started = time.perf_counter()
                with connection.begin():
                    ids = connection.execute(text(statement), params).scalars().all()
                elapsed = time.perf_counter() - started
                if not sampled:
                    seconds[table] += elapsed
                    timed_rows[table] += len(ids)
    finally:
        for connection in connections.values():
            connection.close()
    timings = {
        table: {
            "rows_timed": timed_rows[table],
            "seconds": round(seconds[table], 3),
            "rows_per_second": round(timed_rows[table] / seconds[table], 1),
            "ms_per_batch": round(
                seconds[table] / timed_rows[table] * len(batches[0]["image_id"]) * 1e3, 3
            ),
        }
        for table in TABLES
    }
    per_row = {
        table: {
            "rows_sampled": int(sample["rows"]),
            "wal_bytes_per_row": round(sample["bytes"] / max(sample["rows"], 1), 1),
            "wal_records_per_row": round(sample["records"] / max(sample["rows"], 1), 2),
            "full_page_images": int(sample["fpi"]),
        }
        for table, sample in wal.items()
    }
    return timings, per_row


def timed_query(
    connection: Connection, sql: str, params: dict[str, Any], *, repeats: int
) -> dict[str, Any]:
    """Median milliseconds over `repeats` runs after one warm-up, and the partitions scanned."""
    connection.execute(text(sql), params).all()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        connection.execute(text(sql), params).all()
        runs.append((time.perf_counter() - started) * 1e3)
    plan = connection.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar_one()
    return {
        "median_ms": round(statistics.median(runs), 3),
        "relations_scanned": len(_relations(plan[0]["Plan"])),
    }


def _relations(node: dict[str, Any]) -> set[str]:
    found = {node["Relation Name"]} if "Relation Name" in node else set()
    for child in node.get("Plans", []):
        found |= _relations(child)
    return found


def reads(connection: Connection, *, version: int, repeats: int) -> dict[str, Any]:
    since, until = served_window(version)
    by_version = {"version": version}
    windowed = {**by_version, "since": since, "until": until}
    return {
        "version": version,
        "counts_by_image_ms": {
            "plain": timed_query(
                connection,
                COUNTS_BY_IMAGE.format(table="plain", window=""),
                by_version,
                repeats=repeats,
            ),
            "partitioned": timed_query(
                connection,
                COUNTS_BY_IMAGE.format(table="partitioned", window=""),
                by_version,
                repeats=repeats,
            ),
            "partitioned_with_window": timed_query(
                connection,
                COUNTS_BY_IMAGE.format(table="partitioned", window=WINDOW),
                windowed,
                repeats=repeats,
            ),
        },
        "totals_by_version_ms": {
            table: timed_query(
                connection, TOTALS_BY_VERSION.format(table=table), {}, repeats=repeats
            )
            for table in ("plain", "partitioned")
        },
    }


def retention(engine: Engine, *, day: int) -> dict[str, Any]:
    """The oldest day away: DELETE (+ VACUUM) on the plain table, DETACH + DROP on the other."""
    until = DAY0 + timedelta(days=day + 1)
    autocommit = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        plain_before = total_bytes(autocommit, "plain")
        rows_before = row_count(autocommit, "plain")
        started = time.perf_counter()
        with engine.begin() as connection:
            deleted = connection.execute(
                text("DELETE FROM plain WHERE created_at < :until"), {"until": until}
            ).rowcount
        delete_seconds = time.perf_counter() - started
        plain_after_delete = total_bytes(autocommit, "plain")
        started = time.perf_counter()
        autocommit.execute(text("VACUUM plain"))
        vacuum_seconds = time.perf_counter() - started
        plain_after_vacuum = total_bytes(autocommit, "plain")

        partitioned_before = total_bytes(autocommit, "partitioned")
        partition = partition_name(day)
        dropped = row_count(autocommit, partition)
        started = time.perf_counter()
        autocommit.execute(
            text(f"ALTER TABLE partitioned DETACH PARTITION {partition} CONCURRENTLY")
        )
        autocommit.execute(text(f"DROP TABLE {partition}"))
        drop_seconds = time.perf_counter() - started
        partitioned_after = total_bytes(autocommit, "partitioned")
    finally:
        autocommit.close()
    return {
        "rows_before": rows_before,
        "plain": {
            "rows_deleted": deleted,
            "delete_seconds": round(delete_seconds, 4),
            "vacuum_seconds": round(vacuum_seconds, 4),
            "bytes_before": plain_before,
            "bytes_after_delete": plain_after_delete,
            "bytes_after_vacuum": plain_after_vacuum,
        },
        "partitioned": {
            "rows_dropped": dropped,
            "detach_drop_seconds": round(drop_seconds, 4),
            "bytes_before": partitioned_before,
            "bytes_after": partitioned_after,
        },
    }


def server(connection: Connection) -> dict[str, str]:
    names = ("server_version", "synchronous_commit", "shared_buffers", "autovacuum", "wal_level")
    return {name: str(connection.execute(text(f"SHOW {name}")).scalar_one()) for name in names}


def mb(value: float) -> str:
    return f"{value / 2**20:8.1f} MB"


def report(result: dict[str, Any]) -> None:
    inserts, wal = result["inserts"], result["wal_per_row"]
    print(f"\n(a) inserts, batches of {result['args']['batch']}, one COMMIT each")
    print(f"{'table':18} {'rows/s':>10} {'ms/batch':>9} {'WAL B/row':>10} {'FPIs':>6}")
    for table in TABLES:
        sample = wal.get(table, {})
        print(
            f"{table:18} {inserts[table]['rows_per_second']:10,.0f} "
            f"{inserts[table]['ms_per_batch']:9.2f} "
            f"{sample.get('wal_bytes_per_row', float('nan')):10.1f} "
            f"{sample.get('full_page_images', 0):6d}"
        )
    sizes = result["sizes_after_load"]
    print(f"size after load: plain {mb(sizes['plain'])}, partitioned {mb(sizes['partitioned'])}")

    reads_ = result["reads"]
    print(f"\n(c) reads, median of {result['args']['repeats']} (ms; relations scanned)")
    for name, figures in {
        **reads_["counts_by_image_ms"],
        **{f"totals {table}": figures for table, figures in reads_["totals_by_version_ms"].items()},
    }.items():
        print(f"{name:26} {figures['median_ms']:9.2f} ms  {figures['relations_scanned']:3d}")

    kept = result["retention"]
    plain, part = kept["plain"], kept["partitioned"]
    print("\n(b) retention of the oldest day")
    print(
        f"plain:       DELETE {plain['rows_deleted']:,} rows {plain['delete_seconds']:.3f} s "
        f"+ VACUUM {plain['vacuum_seconds']:.3f} s; size {mb(plain['bytes_before'])} -> "
        f"{mb(plain['bytes_after_delete'])} -> {mb(plain['bytes_after_vacuum'])} after VACUUM"
    )
    print(
        f"partitioned: DETACH + DROP {part['rows_dropped']:,} rows "
        f"{part['detach_drop_seconds']:.3f} s; size {mb(part['bytes_before'])} -> "
        f"{mb(part['bytes_after'])}"
    )
    print("\nratios")
    for name, value in result["ratios"].items():
        print(f"  {name:52} {value:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows into each table")
    parser.add_argument("--batch", type=int, default=100, help="rows per INSERT and COMMIT")
    parser.add_argument("--days", type=int, default=8, help="days of traffic, one partition each")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each read")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    batches = make_batches(rows=args.rows, batch=args.batch, days=args.days, seed=args.seed)
    url = create_database()
    engines = {
        "plain": create_engine(url),
        "partitioned": create_engine(url),
        "plain_unprepared": create_engine(url, connect_args={"prepare_threshold": None}),
    }
    try:
        with engines["plain"].begin() as connection:
            settings = server(connection)
            create_schema(connection, days=args.days)
        inserts, wal = insert_all(engines, batches)
        engine = engines["plain"]
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            # autovacuum may be off (it is on this machine): both get the same maintenance.
            for table in ("plain", "partitioned"):
                connection.execute(text(f"VACUUM ANALYZE {table}"))
            sizes = {table: total_bytes(connection, table) for table in TABLES}
            middle = versions_of_day(args.days // 2)[0]
            read_figures = reads(connection, version=middle, repeats=args.repeats)
        kept = retention(engine, day=0)
    finally:
        for each in engines.values():
            each.dispose()
        drop_database(url)

    counts = read_figures["counts_by_image_ms"]
    totals = read_figures["totals_by_version_ms"]
    plain, part = kept["plain"], kept["partitioned"]
    result: dict[str, Any] = {
        "command": "python -m bench.partitioning "
        + " ".join(f"--{name} {value}" for name, value in vars(args).items()),
        "args": vars(args),
        "server": settings,
        "inserts": inserts,
        "wal_per_row": wal,
        "sizes_after_load": sizes,
        "reads": read_figures,
        "retention": kept,
        "ratios": {
            "insert rate partitioned / plain": inserts["partitioned"]["rows_per_second"]
            / inserts["plain"]["rows_per_second"],
            "insert rate unprepared / prepared (plain)": inserts["plain_unprepared"][
                "rows_per_second"
            ]
            / inserts["plain"]["rows_per_second"],
            "size after load partitioned / plain": sizes["partitioned"] / sizes["plain"],
            "counts by image partitioned / plain (time)": counts["partitioned"]["median_ms"]
            / counts["plain"]["median_ms"],
            "counts by image partitioned+window / plain (time)": counts["partitioned_with_window"][
                "median_ms"
            ]
            / counts["plain"]["median_ms"],
            "totals by version partitioned / plain (time)": totals["partitioned"]["median_ms"]
            / totals["plain"]["median_ms"],
            "retention DELETE / DETACH+DROP (time)": plain["delete_seconds"]
            / part["detach_drop_seconds"],
            "retention DELETE+VACUUM / DETACH+DROP (time)": (
                plain["delete_seconds"] + plain["vacuum_seconds"]
            )
            / part["detach_drop_seconds"],
            "bytes freed: plain after VACUUM / before": plain["bytes_after_vacuum"]
            / plain["bytes_before"],
            "bytes freed: partitioned after / before": part["bytes_after"] / part["bytes_before"],
        },
    }
    report(result)
    print(f"\nwrote {write_result('partitioning', result)}")


if __name__ == "__main__":
    main()
