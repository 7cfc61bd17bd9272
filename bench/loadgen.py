"""Load generator for bench/ingestion.py, run in its own process: keep-alive HTTP/1.1
connections on asyncio (uvloop), each sending the next interaction as soon as the previous
one is answered.

wrk would be cheaper per request, but it drops the requests still open when its time is up,
and the server may commit those: the count of acknowledged interactions would then be short
of the stored rows by up to one per connection. This client stops sending at the deadline
and waits for every open request, so what it saw acknowledged can be compared with what is
stored, exactly. It is a minimal client (no httpx) so that it takes little of the CPU the
server needs.

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/interactions \
        --tokens tokens.txt --seconds 60 --connections 64 --out result.json

tokens.txt holds one token per line, each for a rating-placement impression (every kind is
allowed on those). Requests walk (impression, kind) pairs in order, so almost every request
is a new pair; a share (--repeat-share) repeats a pair already acknowledged, which the API
must answer 200 (`duplicate`) and store no second time. The result JSON lists the new pairs
acknowledged with 201, so the caller can compare them with the database row by row.
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


async def connection(
    host: str, port: int, path: str, plan: Plan, deadline: float, stats: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    try:
        while time.monotonic() < deadline:
            pair, repeat = plan.take()
            body = plan.body(pair)
            started = time.perf_counter()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            stats["latencies"].append(time.perf_counter() - started)
            if status == 201:
                stats["created"] += 1
                plan.acked.append(pair)
                if repeat:
                    stats["created_on_repeat"] += 1  # a bug: a repeat must not be stored again
            elif status == 200:
                stats["repeats"] += 1
                if not repeat:
                    stats["repeat_on_new"] += 1  # a bug, unless the pairs ran out
            else:
                stats["errors"][str(status)] = stats["errors"].get(str(status), 0) + 1
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
            connection(url.hostname or "127.0.0.1", url.port or 80, url.path, plan, deadline, stats)
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
        "answered_per_second": len(latencies) / elapsed,
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
