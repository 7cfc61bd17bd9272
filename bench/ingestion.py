"""Ingestion benchmark: interactions accepted per second and persisted to PostgreSQL under a
sustained load, against the target of 5,000 a second, and against a bare FastAPI POST
endpoint (bench/bare_app.py) under the same load in the same run.

    .venv/bin/python -m bench.ingestion [--seconds 60] [--connections 64] [--workers 2]

Impressions are created beforehand straight in the database (rating placement, so every kind
is allowed) and their tokens signed with the service's key, exactly as the API signs them;
the load then comes from bench/loadgen.py in its own process. Every 201 the client saw is
compared with the stored rows, pair by pair: acknowledged must equal stored, and a repeat
(answered 200) must not add a row. Writes bench/results/ingestion.json.
Needs PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select

from app.models import GeneratorVersion, Image, Impression, Interaction, VersionStatus, utcnow
from app.tokens import sign_impression
from bench.common import (
    BIN,
    SECRET,
    create_database,
    drop_database,
    free_port,
    prepare_service,
    process,
    service_env,
    wait_http,
    write_result,
)

TARGET_PER_SECOND = 5000
KINDS_PER_IMPRESSION = 6  # bench/loadgen.py KINDS


def seed_impressions(url: str, count: int) -> tuple[list[int], list[str]]:
    """`count` rating impressions of the serving batch: their ids and tokens."""
    engine = create_engine(url)
    with engine.begin() as connection:
        version_id = connection.scalar(
            select(GeneratorVersion.id).where(GeneratorVersion.status == VersionStatus.serving)
        )
        images = list(connection.scalars(select(Image.id).where(Image.version_id == version_id)))
        now = utcnow()
        rows = [
            {
                "image_id": images[i % len(images)],
                "version_id": version_id,
                "placement": "rating",
                "visitor_hash": f"bench-{i % 1000}",
                "simulated": True,
                "flagged": False,
                "created_at": now,
            }
            for i in range(count)
        ]
        ids = [
            int(impression_id)
            for impression_id in connection.execute(
                insert(Impression).returning(Impression.id, sort_by_parameter_order=True),
                rows,
            ).scalars()
        ]
        tokens = [
            sign_impression(
                SECRET, impression_id=impression_id, image_id=row["image_id"], ttl_seconds=7200
            )[0]
            for impression_id, row in zip(ids, rows, strict=True)
        ]
    engine.dispose()
    return ids, tokens


def stored_pairs(url: str) -> list[tuple[int, str]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(select(Interaction.impression_id, Interaction.kind)).all()
    engine.dispose()
    return [(int(impression_id), kind) for impression_id, kind in rows]


def load(url: str, tokens: Path, args: argparse.Namespace, seconds: float, work: Path) -> Any:
    out = work / f"load-{free_port()}.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--tokens",
            str(tokens),
            "--seconds",
            str(seconds),
            "--connections",
            str(args.connections),
            "--repeat-share",
            str(args.repeat_share),
            "--out",
            str(out),
        ],
        check=True,
    )
    return json.loads(out.read_text())


def summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "acked_pairs"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--anchor-seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--repeat-share", type=float, default=0.05)
    parser.add_argument(
        "--impressions",
        type=int,
        default=0,
        help="tokens to prepare (default: enough new pairs for 1.5x the target rate)",
    )
    args = parser.parse_args()
    count = args.impressions or int(TARGET_PER_SECOND * 1.5 * args.seconds / KINDS_PER_IMPRESSION)
    work = Path(tempfile.mkdtemp(prefix="pirloop-ingest-"))
    url = create_database()
    env = service_env(url, work)
    uvicorn_flags = ["--workers", str(args.workers), "--log-level", "warning", "--no-access-log"]
    try:
        prepare_service(env)
        tokens = work / "tokens.txt"
        ids, signed = seed_impressions(url, count)
        tokens.write_text("\n".join(signed))
        port = free_port()
        with process(
            [
                str(BIN / "uvicorn"),
                "app.main:create_app",
                "--factory",
                "--port",
                str(port),
                *uvicorn_flags,
            ],
            env,
            work / "pirloop.log",
        ):
            wait_http(f"http://127.0.0.1:{port}/readyz")
            pirloop = load(
                f"http://127.0.0.1:{port}/v1/interactions", tokens, args, args.seconds, work
            )
        stored = stored_pairs(url)
        acked = {(ids[line], kind) for line, kind in pirloop["acked_pairs"]}
        (work / "image.png").write_bytes(b"\x89PNG")
        port = free_port()
        with process(
            [str(BIN / "uvicorn"), "bench.bare_app:app", "--port", str(port), *uvicorn_flags],
            {"BENCH_PNG": str(work / "image.png")},
            work / "bare.log",
        ):
            wait_http(f"http://127.0.0.1:{port}/docs")
            bare = load(
                f"http://127.0.0.1:{port}/bare/interactions",
                tokens,
                args,
                args.anchor_seconds,
                work,
            )
    finally:
        drop_database(url)

    consistent = (
        len(stored) == len(set(stored)) == len(acked) == pirloop["created"] and set(stored) == acked
    )
    rate = pirloop["created_per_second"]
    ratios = {
        "vs_target": rate / TARGET_PER_SECOND,
        "answered_vs_bare_fastapi": pirloop["answered_per_second"] / bare["answered_per_second"],
    }
    print(f"{'target':24} {'answered/s':>10} {'stored/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for name, result in (("pirloop /v1/interactions", pirloop), ("bare FastAPI POST", bare)):
        print(
            f"{name:24} {result['answered_per_second']:10.0f} "
            f"{result['created_per_second'] if result is pirloop else 0:9.0f} "
            f"{result['p50_ms']:7.1f} {result['p99_ms']:7.1f}"
        )
    print(
        f"pirloop: {pirloop['created']} new interactions acknowledged (201), "
        f"{pirloop['repeats']} repeats answered 200, errors {pirloop['errors']}, "
        f"broken connections {len(pirloop['broken_connections'])}; "
        f"{len(stored)} rows stored: {'EQUAL' if consistent else 'MISMATCH'}"
    )
    if pirloop["pairs_ran_out"]:
        print("warning: the new pairs ran out; raise --impressions")
    print(f"ratio stored/s vs {TARGET_PER_SECOND}/s target: {ratios['vs_target']:.2f}x")
    print(f"ratio answered/s vs bare FastAPI: {ratios['answered_vs_bare_fastapi']:.2f}x")
    verdict = "met" if rate >= TARGET_PER_SECOND and consistent else "NOT met"
    print(f"target (>= {TARGET_PER_SECOND}/s stored, acknowledged == stored): {verdict}")
    path = write_result(
        "ingestion",
        {
            "seconds": args.seconds,
            "anchor_seconds": args.anchor_seconds,
            "connections": args.connections,
            "workers": args.workers,
            "repeat_share": args.repeat_share,
            "impressions_prepared": count,
            "pirloop": summary(pirloop),
            "bare_fastapi": summary(bare),
            "stored_rows": len(stored),
            "acknowledged_equals_stored": consistent,
            "ratios": ratios,
            "target_met": rate >= TARGET_PER_SECOND and consistent,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
