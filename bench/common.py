"""Shared pieces of the benchmarks: servers started side by side, wrk runs, results files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    return path


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("wb") if log else subprocess.DEVNULL
    # A session of its own, so its children (a Celery worker's pool and beat) can be stopped
    # with it.
    proc = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        # SIGTERM to the main process only (a Celery worker then shuts down warm, finishing
        # its task), then the whole group is killed, so no child outlives it.
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def need(tool: str, package: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if not path:
        raise SystemExit(f"{tool} is missing: apt-get install -y {package}")
    return path


WRK_LINE = re.compile(r"Requests/sec:\s+([\d.]+)")
PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str, *, connections: int, seconds: int, script: Path | None = None, threads: int = 2
) -> dict[str, float]:
    args = [need("wrk", "wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        args += ["-s", str(script)]
    output = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = WRK_LINE.search(output)
    if not rps:
        raise RuntimeError(f"could not read wrk output:\n{output}")
    latency = {f"p{p}_ms": float(v) * UNITS[u] for p, v, u in PERCENTILE.findall(output)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests_per_second": float(rps.group(1)),
        **latency,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET = "bench-secret-key-0123456789abcdef"


@contextmanager
def admin_connection() -> Iterator[Any]:
    """A connection to the maintenance database as PG_ADMIN, in autocommit mode (CREATE and
    DROP DATABASE run outside a transaction); its engine is disposed afterwards."""
    from sqlalchemy import create_engine

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            yield connection
    finally:
        admin.dispose()


def create_database() -> str:
    """A fresh PostgreSQL database for one benchmark run."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"pirloop_bench_{uuid.uuid4().hex[:8]}"
    with admin_connection() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def commits_and_inserts(url: str) -> tuple[int, int]:
    """The database's committed transactions and inserted rows so far (pg_stat_database).
    Each backend publishes its counts at most once a second while busy, so read the change
    over a load of several seconds, as a ratio: rows per commit, the group commit's size."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    with admin_connection() as connection:
        row = connection.execute(
            text("SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = :name"),
            {"name": make_url(url).database},
        ).one()
    return int(row[0]), int(row[1])


def drop_database(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    with admin_connection() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


def service_env(url: str, work: Path) -> dict[str, str]:
    """The service as the benchmarks run it: PostgreSQL, production checks on, no scheduler.
    All load comes from one address and one visitor, so the rate limits are set high enough
    never to refuse while the limiter's work stays part of every request."""
    return {
        "PIRLOOP_DATABASE_URL": url,
        "PIRLOOP_ENVIRONMENT": "production",
        "PIRLOOP_SECRET_KEY": SECRET,
        "PIRLOOP_ADMIN_TOKEN": SECRET,
        "PIRLOOP_DATA_DIR": str(work),
        "PIRLOOP_BATCH_SIZE": "200",
        "PIRLOOP_EMBEDDED_SCHEDULER": "false",
        "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE": "1000000000",
        "PIRLOOP_RATE_LIMIT_VISITOR_PER_MINUTE": "1000000000",
    }


class PreparedService(NamedTuple):
    url: str
    """The fresh PostgreSQL database."""
    env: dict[str, str]
    """The service's environment (service_env)."""
    work: Path
    """A scratch directory: data directory, logs, scripts."""


@contextmanager
def prepared_service(prefix: str) -> Iterator[PreparedService]:
    """A fresh database, migrated and serving a placeholder batch, dropped afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    url = create_database()
    env = service_env(url, work)
    try:
        prepare_service(env)
        yield PreparedService(url, env, work)
    finally:
        drop_database(url)


def uvicorn_flags(workers: int) -> list[str]:
    """The uvicorn settings pirloop and its anchors share in a benchmark."""
    return ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]


def prepare_service(env: dict[str, str]) -> None:
    """Migrate the database and serve a placeholder batch (the serving path is the same)."""
    for command in (["db", "upgrade"], ["init", "--placeholder"]):
        subprocess.run(
            [str(BIN / "pirloop"), *command],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
