"""Where a hot request's time goes: py-spy samples every uvicorn worker while wrk loads one path.

    .venv/bin/python -m bench.profile_hot_path [--path impression|interaction|image] [--seconds 20]

Writes docs/flame-<path>.svg (a flame graph: width is the share of samples) and prints the
samples by part of the request (validation, token signing and checking, the database, JSON
encoding, middleware, logging, rate limiting, the event loop), from py-spy's collapsed stacks.
Same set-up as bench/serving.py: PostgreSQL, 2 uvicorn workers, 64 connections. Needs py-spy
(`.venv/bin/pip install py-spy`; it attaches with ptrace, so run as root) and wrk.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.common import (
    BIN,
    ROOT,
    free_port,
    need,
    prepared_service,
    process,
    uvicorn_flags,
    wait_http,
    write_result,
    wrk,
)

# Where a sample falls: the first part whose marker is in its stack (innermost first wins,
# so token checking inside a dependency counts as tokens, not as dependency injection).
PARTS = {
    "token signing/checking": ("app/tokens.py", "hmac.py", "hashlib"),
    "database (SQLAlchemy, psycopg)": ("sqlalchemy/", "psycopg/", "app/writer.py"),
    "rate limiting": ("app/ratelimit.py",),
    "request validation (pydantic, FastAPI params)": (
        "pydantic/",
        "pydantic_core",
        "fastapi/dependencies/",
        "fastapi/_compat",
    ),
    "response encoding (JSON, models)": ("fastapi/encoders.py", "json/", "serialize_response"),
    "serving pick and image cache": ("app/serving.py", "app/image_cache.py", "app/ingest.py"),
    "metrics": ("app/metrics.py", "prometheus_client/"),
    # The fast paths and the routes' own functions, outside the parts inside them above.
    "pirloop's request handling (fast paths, route functions)": (
        "app/write_fast_path.py",
        "app/image_fast_path.py",
        "app/routers/",
    ),
    "middleware": ("app/security.py", "app/errors.py", "starlette/middleware/", "app/ratelimit"),
    "logging": ("logging/",),
    "HTTP parsing and the event loop (uvicorn, asyncio)": (
        "uvicorn/",
        "asyncio/",
        "uvloop",
        "h11/",
        "httptools",
    ),
    "routing (Starlette, FastAPI)": ("starlette/", "fastapi/"),
}
IDLE = ("select", "epoll", "_worker (concurrent/futures/thread.py", "wait (threading.py")


def classify(stack: str) -> str:
    frames = stack.split(";")
    if frames and any(marker in frames[-1] for marker in IDLE):
        return "idle (waiting)"
    for frame in reversed(frames):  # innermost frame first
        for part, markers in PARTS.items():
            if any(marker in frame for marker in markers):
                return part
    return "other"


def breakdown(collapsed: Path) -> dict[str, float]:
    """Share of busy samples by part; collapsed lines are 'frame;frame;... count'."""
    samples: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            samples[classify(stack)] += int(count)
    busy = sum(n for part, n in samples.items() if part != "idle (waiting)")
    return {part: n / busy for part, n in samples.most_common() if part != "idle (waiting)"}


def load_target(
    base: str, path: str, served: dict[str, Any] | None, work: Path
) -> tuple[str, Path | None]:
    """The URL wrk loads for a path and its Lua script (None for a plain GET). `served` is an
    impression pirloop answered (its image and token); None for the bare anchor under `base`,
    whose routes take any body."""
    if path == "image":
        return (base + urlsplit(served["image_url"]).path if served else f"{base}/image"), None
    if path == "impression":
        target = f"{base}/v1/impressions" if served else f"{base}/impressions"
        body = '{"placement": "background"}'
    else:
        # Repeats of one token's click: each is checked and answered 200 (idempotent),
        # the same path as a new one up to the final insert.
        target = f"{base}/v1/interactions" if served else f"{base}/interactions"
        token = served["token"] if served else "x" * 86
        body = f'{{"token": "{token}", "kind": "click"}}'
    script = work / f"load-{path}.lua"
    script.write_text(
        f"wrk.method = \"POST\"\nwrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return target, script


def hot_path_parser(doc: str | None, *, seconds: int) -> argparse.ArgumentParser:
    """The arguments every hot-path benchmark takes: which path, how long, how loaded."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(
        "--path", choices=["impression", "interaction", "image"], default="impression"
    )
    parser.add_argument("--seconds", type=int, default=seconds)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def main() -> None:
    parser = hot_path_parser(__doc__, seconds=20)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only threads holding the GIL: Python's own CPU time, without the waits "
        "in C (psycopg waiting on PostgreSQL reads as busy otherwise)",
    )
    parser.add_argument("--stacks", type=Path, help="keep the collapsed stacks in this file")
    args = parser.parse_args()
    py_spy = need(str(BIN / "py-spy"), "py-spy (pip)")
    with prepared_service("pirloop-profile-") as (_, env, work):
        port = free_port()
        command = [str(BIN / "uvicorn"), "app.main:create_app", "--factory", "--port", str(port)]
        with process([*command, *uvicorn_flags(args.workers)], env, work / "pirloop.log") as api:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/readyz")
            served = httpx.post(f"{base}/v1/impressions", json={"placement": "background"}).json()
            target, loaded = load_target(base, args.path, served, work)
            collapsed = args.stacks or work / "stacks.txt"
            svg = ROOT / "docs" / f"flame-{args.path}.svg"

            def profiled_load(fmt: str, out: Path) -> dict[str, float]:
                """wrk on the target while py-spy samples the server (one format a run)."""
                spy = subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(api.pid),
                        "--subprocesses",
                        "--nonblocking",
                        "--rate",
                        str(args.rate),
                        "--duration",
                        str(args.seconds),
                        "--format",
                        fmt,
                        "-o",
                        str(out),
                        *(["--gil"] if args.gil else []),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)  # attached before the load starts
                result = wrk(
                    target, connections=args.connections, seconds=args.seconds, script=loaded
                )
                spy.wait(timeout=120)
                return result

            load = profiled_load("flamegraph", svg)
            profiled_load("raw", collapsed)  # collapsed stacks, for the table
            parts = breakdown(collapsed)
    print(
        f"{args.path}: {load['requests_per_second']:.0f} req/s, p99 {load.get('p99_ms', 0):.1f} ms "
        f"under py-spy ({args.connections} connections, {args.workers} workers)"
    )
    for part, share in parts.items():
        print(f"  {share:6.1%}  {part}")
    print(f"flame graph: {svg.relative_to(ROOT)}")
    write_result(f"profile_{args.path}", {"load": load, "busy_share_by_part": parts})


if __name__ == "__main__":
    main()
