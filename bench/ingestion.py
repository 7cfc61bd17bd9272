"""Ingestion benchmark: interactions accepted per second and persisted to PostgreSQL under a
sustained load, against the target of 5,000 a second, and against a bare FastAPI POST
endpoint (bench/bare_app.py) under the same load in the same run.

    .venv/bin/python -m bench.ingestion [--seconds 60] [--connections 64] [--workers 2]
                                        [--batch 100]

--batch N (default 100) posts N interactions per request to POST /v1/interactions/batch (the
anchor gets a bare batch endpoint that parses the same JSON); --batch 1 posts one per request
to POST /v1/interactions, as pages do. Impressions are created beforehand straight in the
database (rating placement, so every kind is allowed) and their tokens signed with the
service's key, exactly as the API signs them; the load then comes from bench/loadgen.py in
its own process. Every interaction the client saw acknowledged (201, or `created` in a batch
answer) is compared with the stored rows, pair by pair: acknowledged must equal stored, and
a repeat (200, or `duplicate`) must not add a row. Writes bench/results/ingestion.json
(batch mode) or ingestion_single.json (--batch 1).
Needs PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select

from app.models import GeneratorVersion, Image, Impression, Interaction, VersionStatus, utcnow
from app.schemas import MAX_BATCH_INTERACTIONS
from app.tokens import sign_impression
from bench.common import (
    BIN,
    SECRET,
    free_port,
    prepared_service,
    process,
    uvicorn_flags,
    wait_http,
    write_result,
)
from bench.cpu_split import cpu_seconds_by_group

TARGET_PER_SECOND = 5000
KINDS_PER_IMPRESSION = 6  # bench/loadgen.py KINDS
# New pairs prepared per second of load, as a multiple of the target: both paths now go past
# it (single requests ran out of new pairs at 1.5x, which turned the rest into repeats).
HEADROOM = {"single": 3.0, "batch": 4.0}


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


def load(
    url: str, tokens: Path, args: argparse.Namespace, seconds: float, work: Path, api_pid: int
) -> Any:
    """The load generator's result, with the CPU each process spent per answered request
    (bench/cpu_split.py's groups; the load generator itself is "other")."""
    out = work / f"load-{free_port()}.json"
    before = cpu_seconds_by_group({api_pid})
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
            "--batch",
            str(args.batch),
            "--out",
            str(out),
        ],
        check=True,
    )
    after = cpu_seconds_by_group({api_pid})
    result = json.loads(out.read_text())
    answered = result["answered_per_second"] * seconds
    result["cpu_us_per_request"] = {
        group: round((after[group] - before[group]) / answered * 1e6, 1)
        for group in sorted(after)
        if after[group] > before[group]
    }
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "acked_pairs"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--anchor-seconds", type=float, default=10)
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="default 64 single-event connections, or 8 batch connections (800 in flight)",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--repeat-share", type=float, default=0.05)
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="interactions per request to /v1/interactions/batch (1: single-event POSTs)",
    )
    parser.add_argument(
        "--impressions",
        type=int,
        default=0,
        help="tokens to prepare (default: new pairs for 1.5x the target rate, 4x with batches)",
    )
    args = parser.parse_args()
    if not 1 <= args.batch <= MAX_BATCH_INTERACTIONS:
        parser.error(f"--batch takes 1 to {MAX_BATCH_INTERACTIONS}")
    if args.connections is None:
        # 64 connections of 100-item batches keep 6,400 interactions queued: the same
        # throughput as 8 connections with eight times the latency.
        args.connections = 64 if args.batch == 1 else 8
    headroom = HEADROOM["batch" if args.batch > 1 else "single"]
    count = args.impressions or int(
        TARGET_PER_SECOND * headroom * args.seconds / KINDS_PER_IMPRESSION
    )
    route = "/v1/interactions/batch" if args.batch > 1 else "/v1/interactions"
    bare_route = "/bare/interactions/batch" if args.batch > 1 else "/bare/interactions"
    flags = uvicorn_flags(args.workers)
    with prepared_service("pirloop-ingest-") as (url, env, work):
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
                *flags,
            ],
            env,
            work / "pirloop.log",
        ) as api:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            pirloop = load(
                f"http://127.0.0.1:{port}{route}", tokens, args, args.seconds, work, api.pid
            )
        stored = stored_pairs(url)
        acked = {(ids[line], kind) for line, kind in pirloop["acked_pairs"]}
        (work / "image.png").write_bytes(b"\x89PNG")
        port = free_port()
        with process(
            [str(BIN / "uvicorn"), "bench.bare_app:app", "--port", str(port), *flags],
            {"BENCH_PNG": str(work / "image.png")},
            work / "bare.log",
        ) as anchor:
            wait_http(f"http://127.0.0.1:{port}/docs")
            bare = load(
                f"http://127.0.0.1:{port}{bare_route}",
                tokens,
                args,
                args.anchor_seconds,
                work,
                anchor.pid,
            )
            bare_sync = load(
                f"http://127.0.0.1:{port}{bare_route.replace('/bare', '/bare-sync')}",
                tokens,
                args,
                args.anchor_seconds,
                work,
                anchor.pid,
            )

    consistent = (
        len(stored) == len(set(stored)) == len(acked) == pirloop["created"] and set(stored) == acked
    )
    rate = pirloop["created_per_second"]
    ratios = {
        "vs_target": rate / TARGET_PER_SECOND,
        "answered_vs_bare_fastapi": pirloop["answered_per_second"] / bare["answered_per_second"],
        "answered_vs_bare_fastapi_sync": pirloop["answered_per_second"]
        / bare_sync["answered_per_second"],
    }
    acknowledged = "created" if args.batch > 1 else "201"
    repeated = "duplicate" if args.batch > 1 else "200"
    print(f"{args.batch} interaction(s) per request, {args.connections} connections")
    print(
        f"{'target':30} {'requests/s':>10} {'items/s':>8} {'stored/s':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7}"
    )
    for name, result in (
        (f"pirloop {route}", pirloop),
        (f"bare FastAPI {bare_route} (async)", bare),
        (f"bare FastAPI {bare_route} (def)", bare_sync),
    ):
        print(
            f"{name:30} {result['answered_per_second']:10.0f} "
            f"{result['items_answered_per_second']:8.0f} "
            f"{result['created_per_second'] if result is pirloop else 0:9.0f} "
            f"{result['p50_ms']:7.1f} {result['p99_ms']:7.1f}"
        )
    print(
        f"pirloop: {pirloop['created']} new interactions acknowledged ({acknowledged}), "
        f"{pirloop['repeats']} repeats answered {repeated}, errors {pirloop['errors']}, "
        f"broken connections {len(pirloop['broken_connections'])}; "
        f"{len(stored)} rows stored: {'EQUAL' if consistent else 'MISMATCH'}"
    )
    if pirloop["pairs_ran_out"]:
        print("warning: the new pairs ran out; raise --impressions")
    print(f"ratio stored/s vs {TARGET_PER_SECOND}/s target: {ratios['vs_target']:.2f}x")
    print(f"ratio requests/s vs bare FastAPI (async): {ratios['answered_vs_bare_fastapi']:.2f}x")
    print(f"ratio requests/s vs bare FastAPI (def): {ratios['answered_vs_bare_fastapi_sync']:.2f}x")
    for name, result in (("pirloop", pirloop), ("bare FastAPI (async)", bare)):
        split = ", ".join(f"{g} {us:.0f}" for g, us in result["cpu_us_per_request"].items())
        print(f"CPU µs per request, {name}: {split}")
    verdict = "met" if rate >= TARGET_PER_SECOND and consistent else "NOT met"
    print(f"target (>= {TARGET_PER_SECOND}/s stored, acknowledged == stored): {verdict}")
    path = write_result(
        # One file per mode, so a single-event run does not overwrite the batch figures.
        "ingestion" if args.batch > 1 else "ingestion_single",
        {
            "seconds": args.seconds,
            "anchor_seconds": args.anchor_seconds,
            "connections": args.connections,
            "workers": args.workers,
            "repeat_share": args.repeat_share,
            "batch": args.batch,
            "route": route,
            "impressions_prepared": count,
            "pirloop": summary(pirloop),
            "bare_fastapi": summary(bare),
            "bare_fastapi_sync": summary(bare_sync),
            "stored_rows": len(stored),
            "acknowledged_equals_stored": consistent,
            "ratios": ratios,
            "target_met": rate >= TARGET_PER_SECOND and consistent,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
