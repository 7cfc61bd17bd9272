"""Load generator for bench/ingestion.py, run in its own process: keep-alive HTTP/1.1
connections on asyncio (uvloop), each sending the next interaction (or, with --batch N, the
next N interactions to POST /v1/interactions/batch) as soon as the previous request is
answered.

wrk would be cheaper per request, but it drops the requests still open when its time is up,
and the server may commit those: the count of acknowledged interactions would then be short
of the stored rows by up to one per connection. This client stops sending at the deadline
and waits for every open request, so what it saw acknowledged can be compared with what is
stored, exactly. It is a minimal client (no httpx) so that it takes little of the CPU the
server needs.

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/interactions \
        --tokens tokens.txt --seconds 60 --connections 64 --out result.json
    python -m bench.loadgen --url http://127.0.0.1:8000/v1/interactions/batch --batch 100 ...

tokens.txt holds one token per line, each for a rating-placement impression (every kind is
allowed on those). Requests walk (impression, kind) pairs in order, so almost every request
is a new pair; a share (--repeat-share) repeats a pair already acknowledged, which the API
must answer 200 (`duplicate`) and store no second time. The result JSON lists the new pairs
acknowledged with 201, so the caller can compare them with the database row by row. In batch
mode an item answered `created` is acknowledged and one answered `duplicate` is a repeat;
a request that does not answer 200 acknowledges none of its items.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KINDS = ("click", "rating", "dwell", "skip", "share", "like")
VALUES = {"rating": 4, "dwell": 2.5}


class Plan:
    """Which (token, kind) to send next; shared by every connection of the process."""

    def __init__(self, tokens: list[str], repeat_share: float, seed: int = 7) -> None:
        self.tokens = tokens
        self.repeat_share = repeat_share
        self.next_pair = 0
        self.acked: list[int] = []  # pair numbers acknowledged 201, in order
        self.random = random.Random(seed)

    def take(self) -> tuple[int, bool]:
        """(pair number, is a deliberate repeat)."""
        if self.acked and self.random.random() < self.repeat_share:
            return self.acked[self.random.randrange(len(self.acked))], True
        pair = self.next_pair
        self.next_pair += 1
        # Past the last pair, everything repeats: the run was sized too small.
        return pair % (len(self.tokens) * len(KINDS)), pair >= len(self.tokens) * len(KINDS)

    def body(self, pair: int) -> bytes:
        token, kind = self.tokens[pair // len(KINDS)], KINDS[pair % len(KINDS)]
        item: dict[str, Any] = {"token": token, "kind": kind}
        if kind in VALUES:
            item["value"] = VALUES[kind]
        return json.dumps(item, separators=(",", ":")).encode()

    def batch_body(self, pairs: list[tuple[int, bool]]) -> bytes:
        return b'{"interactions":[' + b",".join(self.body(p) for p, _ in pairs) + b"]}"


def count(stats: dict[str, Any], plan: Plan, pair: int, repeat: bool, created: bool) -> None:
    """One interaction answered as stored now (`created`) or as stored before."""
    if created:
        stats["created"] += 1
        plan.acked.append(pair)
        if repeat:
            stats["created_on_repeat"] += 1  # a bug: a repeat must not be stored again
    else:
        stats["repeats"] += 1
        if not repeat:
            stats["repeat_on_new"] += 1  # a bug, unless the pairs ran out


def error(stats: dict[str, Any], code: str, items: int = 1) -> None:
    stats["errors"][code] = stats["errors"].get(code, 0) + items


async def connection(
    host: str,
    port: int,
    path: str,
    plan: Plan,
    deadline: float,
    stats: dict[str, Any],
    batch: int,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    try:
        while time.monotonic() < deadline:
            pairs = [plan.take() for _ in range(batch)]
            body = plan.batch_body(pairs) if batch > 1 else plan.body(pairs[0][0])
            started = time.perf_counter()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            stats["latencies"].append(time.perf_counter() - started)
            stats["items_answered"] += len(pairs)
            if batch == 1 and status in (200, 201):
                count(stats, plan, *pairs[0], created=status == 201)
            elif batch > 1 and status == 200:
                results = json.loads(answer)["results"]
                for (pair, repeat), result in zip(pairs, results, strict=True):
                    if result["status"] == "rejected":
                        error(stats, result["error"]["error"])
                    else:
                        count(stats, plan, pair, repeat, created=result["status"] == "created")
            else:
                error(stats, str(status), len(pairs))
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        # The request in flight may or may not be stored: counted, never taken as acked.
        stats["broken_connections"].append(repr(exc))
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    tokens = Path(args.tokens).read_text().split()
    plan = Plan(tokens, args.repeat_share)
    stats: dict[str, Any] = {
        "batch": args.batch,
        "items_answered": 0,
        "created": 0,
        "repeats": 0,
        "created_on_repeat": 0,
        "repeat_on_new": 0,
        "errors": {},
        "broken_connections": [],
        "latencies": [],
    }
    started = time.monotonic()
    deadline = started + args.seconds
    await asyncio.gather(
        *(
            connection(
                url.hostname or "127.0.0.1",
                url.port or 80,
                url.path,
                plan,
                deadline,
                stats,
                args.batch,
            )
            for _ in range(args.connections)
        )
    )
    elapsed = time.monotonic() - started  # includes draining the requests open at the deadline
    latencies = sorted(stats.pop("latencies"))

    def percentile(q: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0
        )

    return {
        **stats,
        "seconds": elapsed,
        "answered": len(latencies),
        "created_per_second": stats["created"] / elapsed,
        "answered_per_second": len(latencies) / elapsed,  # requests
        "items_answered_per_second": stats["items_answered"] / elapsed,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "pairs_walked": min(plan.next_pair, len(tokens) * len(KINDS)),
        "pairs_ran_out": plan.next_pair > len(tokens) * len(KINDS),
        "acked_pairs": [[pair // len(KINDS), KINDS[pair % len(KINDS)]] for pair in plan.acked],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--tokens", required=True, help="one token per line")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeat-share", type=float, default=0.05)
    parser.add_argument(
        "--batch", type=int, default=1, help="interactions per request (1: the single route)"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        import uvloop  # uvicorn[standard] installs it; a third less client CPU per request

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
