"""Chaos soak: the deployment stack under simulated traffic and background learning while its
processes are killed and its servers restarted, then proof from the database that nothing
acknowledged was lost and the loop's guarantees held.

The stack runs on this machine and is private to the soak (the shared PostgreSQL and Redis
that the tests use are never touched): a PostgreSQL cluster made by initdb in a temporary
directory, a redis-server with an append-only file, two API processes (`pirloop serve`), two
Celery workers and one beat. Simulated users post impressions and interactions, failing over
between the two APIs and retrying connection errors, 429 and 5xx with backoff; an event counts
as acknowledged only on a 2xx. The toy learning settings of the worker tests make a cycle take
seconds, so cycles start, finish and get interrupted during the soak.

Faults, each on its own interval, one at a time: SIGKILL of an API process (the other one
keeps serving), SIGKILL of a worker's process group (every other one aimed at the worker that
holds a running cycle, which the broker then hands on), a Redis restart (SIGTERM, start), a
PostgreSQL fast shutdown and start, and a PostgreSQL crash (SIGKILL of the whole cluster,
then crash recovery).

At the end, from the private database: every acknowledged impression and interaction is stored
as it was acknowledged; no two learning cycles were ever active at once (their intervals, the
database's own constraint, and the count sampled during the soak); no impression showed a
version before that version was whole (published by its cycle's commit, every image of its
batch and its checkpoint stored); every cycle made at most one version; and the loop made new
versions. Exit status 1 when any of these fails.

    .venv/bin/python -m bench.chaos --minutes 10
    .venv/bin/python -m bench.chaos --minutes 2 --api-kill-every 20 --pg-crash-every 60

Writes bench/results/chaos.json (or --json PATH) and docs/chaos.png (acknowledged events per
second with the faults marked; --plot PATH, --no-plot).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import BIN, ROOT, free_port, machine, service_env, write_result

FAULT_KINDS = ("api_kill", "worker_kill", "redis_restart", "pg_restart", "pg_crash")
# Seconds between two faults of a kind (the first of each comes after the warm-up, staggered).
DEFAULT_EVERY = {
    "api_kill": 40.0,
    "worker_kill": 55.0,
    "redis_restart": 80.0,
    "pg_restart": 110.0,
    "pg_crash": 170.0,
}
SIMULATION_KEY = "chaos-simulation-key-0123456789abcdef"
# The worker tests' toy loop (tests/worker/conftest.py): a 16-image batch, 5 impressions per
# image before a cycle, 20 tuning steps; a rollout decided within 8 impressions per image.
TOY_LOOP = {
    "PIRLOOP_PRESET": "tiny",
    "PIRLOOP_BATCH_SIZE": "16",
    "PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE": "5",
    "PIRLOOP_SCHEDULER_INTERVAL_SECONDS": "1",
    "PIRLOOP_TUNING_STEPS": "20",
    "PIRLOOP_ESTIMATOR_EPOCHS": "3",
    "PIRLOOP_USE_SIMULATED_TRAFFIC": "true",
    "PIRLOOP_TORCH_THREADS": "1",
    "PIRLOOP_ROLLOUT_RAMP_SECONDS": "0",
    "PIRLOOP_ROLLOUT_MIN_IMPRESSIONS_PER_ARM": "40",
    "PIRLOOP_ROLLOUT_MAX_IMPRESSIONS_PER_IMAGE": "8",
    "PIRLOOP_ARTIFACT_STORE": "database",
    "PIRLOOP_EMBEDDED_SCHEDULER": "false",
}
RECEIVED = re.compile(r"Task worker\.run_cycle\[([0-9a-f-]+)\] received")
ENDED = re.compile(r"Task worker\.run_cycle\[([0-9a-f-]+)\] (?:succeeded|raised|retry)")


def log(message: str) -> None:
    print(message, flush=True)


# --- Processes ---------------------------------------------------------------------------


class Proc:
    """A process that can be killed and started again, in a session of its own (so a kill of
    its group takes its children: a worker's pool, PostgreSQL's backends). Its output is
    appended to one log across restarts."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.user = user
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self.starts = 0

    def start(self) -> None:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                self.args,
                env={**os.environ, **(self.env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                cwd=ROOT,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group: nothing of it gets to clean up."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
        """`sig` to the main process only (SIGTERM: a Celery worker's warm shutdown; SIGINT:
        PostgreSQL's fast shutdown), then whatever is left of the group is killed."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self.kill()

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as file:
            file.seek(self.log_offset)
            return file.read().decode(errors="replace")


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian's layout), else initdb on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing_tools() -> list[str]:
    missing = []
    if postgres_bin() is None:
        missing.append("PostgreSQL (initdb, postgres): apt-get install postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server: apt-get install redis-server")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' user to run PostgreSQL as (initdb refuses root)")
    return missing


class PrivatePostgres:
    """A cluster of its own: initdb into `root`, its own port, TCP on 127.0.0.1 only. Run as
    the postgres user when this script runs as root."""

    def __init__(self, root: Path) -> None:
        binaries = postgres_bin()
        assert binaries is not None
        self.bin = binaries
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.proc = Proc(
            "postgres",
            [str(self.bin / "postgres"), "-D", str(self.data)],
            log_path=root / "postgres.log",
            user=self.user,
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/pirloop"

    def init(self) -> None:
        self.root.mkdir(parents=True)
        if self.user:
            shutil.chown(self.root, self.user, self.user)
        subprocess.run(
            [
                *(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres"),
                *("-A", "trust", "-E", "UTF8", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\nmax_connections = 200\nshared_buffers = 32MB\n"
                # Durable commits, as in production: an acknowledged row must survive a crash.
                "fsync = on\nsynchronous_commit = on\nlogging_collector = off\n"
            )
        self.start()
        from sqlalchemy import create_engine, text

        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE pirloop"))
        admin.dispose()

    def start(self, timeout: float = 60) -> float:
        """Start and wait until it accepts connections; returns the seconds that took."""
        started = time.monotonic()
        self.proc.start()
        import psycopg

        deadline = started + timeout
        while True:
            try:
                psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", connect_timeout=1
                ).close()
                return time.monotonic() - started
            except psycopg.OperationalError:
                if not self.proc.running or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start:\n{self.proc.log_since_start()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def fast_stop(self) -> None:
        self.proc.stop(signal.SIGINT, timeout=60)

    def crash(self) -> None:
        self.proc.kill()


class PrivateRedis:
    """A redis-server of its own with an append-only file, as a broker that must not forget
    its queue across a restart is run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True)
        self.proc = Proc(
            "redis",
            [
                str(shutil.which("redis-server")),
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(root),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--daemonize", "no", "--logfile", "",
            ],
            log_path=root / "redis.log",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> float:
        import redis

        started = time.monotonic()
        self.proc.start()
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return time.monotonic() - started
                except redis.exceptions.RedisError:
                    if not self.proc.running or time.monotonic() - started > timeout:
                        raise RuntimeError(
                            f"Redis did not start:\n{self.proc.log_since_start()[-2000:]}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        # SIGTERM: Redis flushes its append-only file and exits.
        self.proc.stop(signal.SIGTERM, timeout=30)


@dataclass
class Stack:
    work: Path
    pg: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    apis: list[Proc] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    beat: Proc | None = None

    def own_env(self, name: str) -> dict[str, str]:
        data = self.work / name
        data.mkdir(exist_ok=True)
        return {**self.env, "PIRLOOP_DATA_DIR": str(data)}

    def all_procs(self) -> list[Proc]:
        return [*self.apis, *self.workers, *([self.beat] if self.beat else [])]


def stack_env(
    pg: PrivatePostgres, redis_: PrivateRedis, work: Path, args: argparse.Namespace
) -> dict[str, str]:
    return {
        **service_env(pg.url, work),
        **TOY_LOOP,
        "PIRLOOP_REDIS_URL": redis_.url,
        "PIRLOOP_SIMULATION_KEY": SIMULATION_KEY,
        # Rate limits off: every request of the soak comes from one address.
        "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE": "0",
        "PIRLOOP_RATE_LIMIT_VISITOR_PER_MINUTE": "0",
        # A killed worker's task goes to another worker this long after its delivery.
        "PIRLOOP_VISIBILITY_TIMEOUT": str(args.visibility_timeout),
    }


def wait_ready(base: str, api: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not api.running:
            raise RuntimeError(f"{api.name} exited:\n{api.log_since_start()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{api.name} did not become ready:\n{api.log_since_start()[-2000:]}")


def build_stack(stack: Stack, args: argparse.Namespace) -> None:
    """Start everything; `stack` holds each part as soon as it exists, so a failure half-way
    still leaves tear_down all it must stop."""
    work, pg, redis_ = stack.work, stack.pg, stack.redis
    logs = work / "logs"
    logs.mkdir()
    pg.init()
    redis_.start()
    stack.env = stack_env(pg, redis_, work, args)
    init = ["init", "--placeholder"] if args.placeholder else ["init"]
    for command in (["db", "upgrade"], init):
        subprocess.run(
            [str(BIN / "pirloop"), *command],
            env={**os.environ, **stack.own_env("init")},
            check=True,
            capture_output=True,
            timeout=600,
        )
    for name in ("api-a", "api-b"):
        port = free_port()
        stack.apis.append(
            Proc(
                name,
                [str(BIN / "pirloop"), "serve", "--port", str(port)],
                env=stack.own_env(name),
                log_path=logs / f"{name}.log",
            )
        )
        stack.bases.append(f"http://127.0.0.1:{port}")
    for name in ("worker-a", "worker-b"):
        stack.workers.append(
            Proc(
                name,
                [str(BIN / "pirloop"), "worker", "--queues", "ml,default", "--concurrency", "1"],
                env=stack.own_env(name),
                log_path=logs / f"{name}.log",
            )
        )
    stack.beat = Proc(
        "beat",
        [str(BIN / "pirloop"), "beat"],
        env=stack.own_env("beat"),
        log_path=logs / "beat.log",
    )
    for proc in stack.all_procs():
        proc.start()
    for api, base in zip(stack.apis, stack.bases, strict=True):
        wait_ready(base, api, 120)


def stop_all(procs: list[Proc], timeout: float = 60) -> None:
    """SIGTERM to every main process at once (a worker's warm shutdown finishes its task),
    then each is waited for until the shared deadline, and what is left is killed."""
    for proc in procs:
        if proc.popen is not None and proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        if proc.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        proc.kill()


def tear_down(stack: Stack | None) -> None:
    """Everything stops, whatever state it is in: beat, workers and APIs, then Redis and
    PostgreSQL."""
    if stack is None:
        return
    with contextlib.suppress(Exception):
        stop_all(stack.all_procs())
    with contextlib.suppress(Exception):
        stack.redis.stop()
    with contextlib.suppress(Exception):
        stack.pg.fast_stop()


# --- Traffic -------------------------------------------------------------------------------


class Ledger:
    """What the clients were told: every acknowledged event, when, and how long it waited."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.lock = threading.Lock()
        # impression id -> (version, image) as acknowledged
        self.impressions: dict[int, tuple[int, int]] = {}
        # (impression id, kind) -> interaction id as acknowledged
        self.interactions: dict[tuple[int, str], int] = {}
        self.ack_times: list[float] = []
        self.longest_wait = 0.0
        self.longest_wait_at = 0.0
        self.statuses: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # 4xx answers (never retried)
        self.given_up: Counter[str] = Counter()  # events still unacknowledged when traffic ended
        self.interaction_mismatch: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, counter: Counter[str], key: str) -> None:
        with self.lock:  # users count from several threads
            counter[key] += 1

    def acked(self, count: int, waited: float) -> None:
        with self.lock:
            at = self.now()
            self.ack_times.extend([at] * count)
            if waited > self.longest_wait:
                self.longest_wait, self.longest_wait_at = waited, at - waited

    def interaction(self, impression_id: int, kind: str, interaction_id: int) -> None:
        with self.lock:
            known = self.interactions.setdefault((impression_id, kind), interaction_id)
            if known != interaction_id:
                self.interaction_mismatch.append(
                    f"({impression_id}, {kind}) answered as {known}, then as {interaction_id}"
                )


class User:
    """One simulated person: impressions (mostly backgrounds, some rating prompts), clicks,
    ratings and dwell reports (the last in batches). Each request is retried until a 2xx or a
    4xx, failing over to the other API."""

    def __init__(
        self,
        number: int,
        bases: list[str],
        ledger: Ledger,
        *,
        interval: float,
        stop: threading.Event,
        give_up: threading.Event,
    ) -> None:
        self.number = number
        self.bases = bases
        self.current = number % len(bases)
        self.ledger = ledger
        self.interval = interval
        self.stop = stop
        self.give_up = give_up
        self.random = random.Random(number)
        self.dwell: list[dict[str, Any]] = []
        self.http = httpx.Client(
            timeout=httpx.Timeout(10.0, connect=2.0),
            # One client (address and agent) per user, so the bot rules judge each on its own.
            headers={
                "User-Agent": f"chaos-user-{number}",
                "X-Pirloop-Simulation-Key": SIMULATION_KEY,
            },
        )

    def post(self, path: str, body: dict[str, Any], what: str) -> httpx.Response | None:
        """POST until a 2xx (returned) or a 4xx other than 429 (counted, None); None also when
        traffic has ended and the event is given up."""
        first = time.monotonic()
        delay = 0.1
        while True:
            base = self.bases[self.current]
            response: httpx.Response | None = None
            try:
                response = self.http.post(base + path, json=body)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.ledger.note(self.ledger.statuses, status)
            if response is not None:
                if response.status_code < 300:
                    self.ledger.acked(self.count(what, response), time.monotonic() - first)
                    return response
                if response.status_code < 500 and response.status_code != 429:
                    self.ledger.note(self.ledger.refused, f"{what} {response.status_code}")
                    return None
            if self.give_up.is_set():
                self.ledger.note(self.ledger.given_up, what)
                return None
            # The other API may be up; both may be waiting on the database.
            self.current = (self.current + 1) % len(self.bases)
            self.ledger.note(self.ledger.statuses, "failover")
            time.sleep(delay * self.random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)

    @staticmethod
    def count(what: str, response: httpx.Response) -> int:
        if what == "batch":
            return sum(r["status"] != "rejected" for r in response.json()["results"])
        return 1

    def impression(self, n: int) -> None:
        placement = "rating" if self.random.random() < 0.2 else "background"
        body = {
            "placement": placement,
            "simulated": True,
            # A new visitor every 10 impressions: no visitor floods (app/abuse.py).
            "visitor_id": f"chaos-{self.number}-{n // 10}",
        }
        served = self.post("/v1/impressions", body, "impression")
        if served is None:
            return
        shown = served.json()
        with self.ledger.lock:
            self.ledger.impressions[shown["impression_id"]] = (
                shown["generator_version"],
                shown["image_id"],
            )
        token = shown["token"]
        # A person needs a moment before reacting; faster reactions are a bot rule.
        self.stop.wait(0.25)
        if placement == "rating":
            if self.random.random() < 0.8:
                self.interact(
                    {"token": token, "kind": "rating", "value": self.random.randint(1, 5)}
                )
            return
        if self.random.random() < 0.3:
            click = {"token": token, "kind": "click"}
            self.interact(click)
            if self.random.random() < 0.1:
                self.interact(click)  # a repeat: 200 with the first one
        if self.random.random() < 0.5:
            self.dwell.append(
                {"token": token, "kind": "dwell", "value": self.random.uniform(1, 30)}
            )
            if len(self.dwell) >= 8:
                self.flush()

    def interact(self, body: dict[str, Any]) -> None:
        answer = self.post("/v1/interactions", body, "interaction")
        if answer is not None:
            stored = answer.json()
            self.ledger.interaction(
                stored["impression_id"], stored["kind"], stored["interaction_id"]
            )

    def flush(self) -> None:
        if not self.dwell:
            return
        items, self.dwell = self.dwell, []
        answer = self.post("/v1/interactions/batch", {"interactions": items}, "batch")
        if answer is None:
            return
        for result in answer.json()["results"]:
            if result["status"] == "rejected":
                self.ledger.note(self.ledger.refused, f"batch item {result['error']['error']}")
            else:
                self.ledger.interaction(
                    result["impression_id"], result["kind"], result["interaction_id"]
                )

    def run(self) -> None:
        n = 0
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                self.impression(n)
                n += 1
                next_at = max(next_at + self.interval, time.monotonic() - self.interval)
                self.stop.wait(max(0.0, next_at - time.monotonic()))
            self.flush()
        finally:
            self.http.close()


# --- Watching the database during the soak ---------------------------------------------------


@dataclass
class Watch:
    samples: int = 0
    failed_samples: int = 0
    max_active_cycles: int = 0
    max_serving: int = 0
    max_running_rollouts: int = 0
    # (time, version id) where a version being served was not whole
    half_made: list[tuple[float, int]] = field(default_factory=list)
    versions: int = 0
    running_cycle: int | None = None
    finished_cycles: int = 0


WATCH_SQL = """
SELECT
  (SELECT count(*) FROM training_runs
    WHERE kind = 'cycle' AND status IN ('queued', 'running')) AS active_cycles,
  (SELECT min(id) FROM training_runs WHERE kind = 'cycle' AND status = 'running') AS running,
  (SELECT count(*) FROM training_runs
    WHERE kind = 'cycle' AND status = 'succeeded') AS finished_cycles,
  (SELECT count(*) FROM generator_versions WHERE status = 'serving') AS serving,
  (SELECT count(*) FROM rollouts WHERE status = 'running') AS running_rollouts,
  (SELECT count(*) FROM generator_versions) AS versions
"""
# Served versions (the champion, a candidate) that are not whole: a batch short of images, or
# no checkpoint in the artifact store (placeholder images have none: --placeholder).
HALF_MADE_SQL = """
SELECT v.id FROM generator_versions v
WHERE v.status IN ('serving', 'candidate')
  AND (v.batch_size = 0
       OR v.batch_size <> (SELECT count(*) FROM images i WHERE i.version_id = v.id)
       OR (v.source <> 'placeholder'
           AND (v.checkpoint_key IS NULL
                OR NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.key = v.checkpoint_key))))
"""


def watch_database(
    url: str, watch: Watch, ledger: Ledger, stop: threading.Event, every: float
) -> None:
    """Sample the cycle and serving state every `every` seconds; a sample that fails while the
    database is down is counted and skipped."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from app.database import make_engine

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        while not stop.wait(every):
            try:
                with engine.connect() as connection:
                    row = connection.execute(text(WATCH_SQL)).one()
                    half = list(connection.scalars(text(HALF_MADE_SQL)))
            except SQLAlchemyError:
                watch.failed_samples += 1
                continue
            watch.samples += 1
            watch.max_active_cycles = max(watch.max_active_cycles, row.active_cycles)
            watch.max_serving = max(watch.max_serving, row.serving)
            watch.max_running_rollouts = max(watch.max_running_rollouts, row.running_rollouts)
            watch.versions = row.versions
            watch.running_cycle = row.running
            watch.finished_cycles = row.finished_cycles
            watch.half_made += [(ledger.now(), version) for version in half]
    finally:
        engine.dispose()


# --- Faults ----------------------------------------------------------------------------------


@dataclass
class Fault:
    at: float  # seconds into the soak
    kind: str
    target: str
    # From the fault until it is back: an API answers /readyz, PostgreSQL and Redis accept
    # connections; a worker is started again (not awaited: its task waits in the broker).
    seconds: float
    detail: str = ""


class Faults:
    def __init__(self, stack: Stack, ledger: Ledger, watch: Watch, args: argparse.Namespace):
        self.stack = stack
        self.ledger = ledger
        self.watch = watch
        self.args = args
        self.log: list[Fault] = []
        self.next_api = 0
        self.worker_kills = 0
        self.random = random.Random(7)

    def record(self, kind: str, target: str, started: float, detail: str = "") -> None:
        fault = Fault(
            round(started - self.ledger.started, 2),
            kind,
            target,
            round(time.monotonic() - started, 2),
            detail,
        )
        self.log.append(fault)
        note = f" ({detail})" if detail else ""
        log(f"  fault at {fault.at:6.1f} s: {kind} {target}, back in {fault.seconds:.1f} s{note}")

    def api_kill(self) -> None:
        index = self.next_api
        self.next_api = (index + 1) % len(self.stack.apis)
        api, base = self.stack.apis[index], self.stack.bases[index]
        started = time.monotonic()
        api.kill()
        time.sleep(self.args.down_seconds)
        api.start()
        wait_ready(base, api, timeout=90)
        self.record("api_kill", api.name, started)

    def cycle_holder(self) -> Proc | None:
        """The worker whose log shows a run_cycle task received and not yet ended."""
        for worker in self.stack.workers:
            text = worker.log_since_start()
            received = [m.end() for m in RECEIVED.finditer(text)]
            ended = [m.end() for m in ENDED.finditer(text)]
            if received and (not ended or received[-1] > ended[-1]):
                return worker
        return None

    def aiming(self) -> bool:
        """Every other worker kill is aimed at a running cycle (the others land anywhere)."""
        return self.worker_kills % 2 == 0

    def worker_kill_ready(self, owed_since: float) -> bool:
        """An aimed kill waits (up to --cycle-wait) until a worker holds a running cycle."""
        if not self.aiming() or time.monotonic() - owed_since > self.args.cycle_wait:
            return True
        return self.watch.running_cycle is not None and self.cycle_holder() is not None

    def worker_kill(self) -> None:
        holder = self.cycle_holder() if self.watch.running_cycle is not None else None
        target = holder if self.aiming() and holder else self.random.choice(self.stack.workers)
        self.worker_kills += 1
        detail = f"mid-cycle: run {self.watch.running_cycle}" if target is holder else "idle"
        started = time.monotonic()
        target.kill()
        time.sleep(self.args.down_seconds)
        target.start()
        self.record("worker_kill", target.name, started, detail)

    def redis_restart(self) -> None:
        started = time.monotonic()
        self.stack.redis.stop()
        time.sleep(self.args.down_seconds)
        self.stack.redis.start()
        self.record("redis_restart", "redis", started)

    def pg_restart(self) -> None:
        started = time.monotonic()
        self.stack.pg.fast_stop()
        time.sleep(self.args.down_seconds)
        self.stack.pg.start()
        self.record("pg_restart", "postgres", started, "fast shutdown, start")

    def pg_crash(self) -> None:
        started = time.monotonic()
        self.stack.pg.crash()
        self.stack.pg.start()
        self.record("pg_crash", "postgres", started, "SIGKILL of the cluster, crash recovery")

    def run(self, kind: str) -> None:
        action: Callable[[], None] = getattr(self, kind)
        action()


def every_from(args: argparse.Namespace) -> dict[str, float]:
    return {kind: getattr(args, f"{kind}_every") for kind in FAULT_KINDS}


def fault_loop(faults: Faults, args: argparse.Namespace, end: float) -> None:
    """One fault at a time, each kind on its own interval; the first of each kind comes after
    the warm-up, `stagger` seconds apart. An aimed worker kill that waits for a cycle lets
    the other kinds go first."""
    every = {kind: s for kind, s in every_from(args).items() if s > 0}
    start = faults.ledger.started
    owed = {kind: start + args.warmup + i * args.stagger for i, kind in enumerate(every)}
    due = dict(owed)
    while time.monotonic() < end and due:
        kind = min(due, key=lambda k: due[k])
        wait = due[kind] - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, max(0.0, end - time.monotonic())))
            continue
        if kind == "worker_kill" and not faults.worker_kill_ready(owed[kind]):
            due[kind] = time.monotonic() + 0.5
            continue
        faults.run(kind)
        owed[kind] += every[kind]
        due[kind] = max(owed[kind], time.monotonic())


def reporter(
    ledger: Ledger, watch: Watch, faults: Faults, stop: threading.Event, every: float
) -> None:
    while not stop.wait(every):
        log(
            f"{ledger.now():6.0f} s: acked {len(ledger.impressions)} impressions, "
            f"{len(ledger.interactions)} interactions; faults {len(faults.log)} "
            f"({dict(Counter(f.kind for f in faults.log))}); versions {watch.versions}, "
            f"cycles finished {watch.finished_cycles}, max active cycles {watch.max_active_cycles}"
        )


# --- The end: proof from the database --------------------------------------------------------


def verify(
    url: str, ledger: Ledger, watch: Watch, *, first_version: int, stall_after: float
) -> dict[str, Any]:
    """Compare what the clients were told with what the database holds, and check the loop's
    guarantees over the whole history the database keeps. A cycle still active with nothing
    done for `stall_after` seconds counts as stalled."""
    from sqlalchemy import func, select, text

    from app.database import make_engine
    from app.models import (
        Artifact,
        GeneratorVersion,
        Image,
        Impression,
        Interaction,
        Rollout,
        TrainingRun,
    )

    engine = make_engine(url)
    problems: list[str] = []
    with engine.connect() as db:
        stored_impressions = {
            row.id: (row.version_id, row.image_id)
            for row in db.execute(select(Impression.id, Impression.version_id, Impression.image_id))
        }
        stored_interactions = {
            (row.impression_id, row.kind): row.id
            for row in db.execute(
                select(Interaction.impression_id, Interaction.kind, Interaction.id)
            )
        }
        versions = db.execute(
            select(
                GeneratorVersion.id,
                GeneratorVersion.parent_id,
                GeneratorVersion.status,
                GeneratorVersion.source,
                GeneratorVersion.batch_size,
                GeneratorVersion.checkpoint_key,
                GeneratorVersion.config,
                GeneratorVersion.promoted_at,
            ).order_by(GeneratorVersion.id)
        ).all()
        image_counts = dict(
            db.execute(select(Image.version_id, func.count()).group_by(Image.version_id)).all()
        )
        artifact_keys = set(db.scalars(select(Artifact.key)))
        runs = db.execute(
            select(
                TrainingRun.id,
                TrainingRun.status,
                TrainingRun.attempts,
                TrainingRun.created_at,
                TrainingRun.started_at,
                TrainingRun.finished_at,
                TrainingRun.metrics,
                TrainingRun.error,
            )
            .where(TrainingRun.kind == "cycle")
            .order_by(TrainingRun.created_at)
        ).all()
        first_served = dict(
            db.execute(
                select(Impression.version_id, func.min(Impression.created_at)).group_by(
                    Impression.version_id
                )
            ).all()
        )
        wrong_image = db.scalar(
            select(func.count())
            .select_from(Impression)
            .join(Image, Image.id == Impression.image_id)
            .where(Image.version_id != Impression.version_id)
        )
        flagged = db.scalar(select(func.count()).where(Impression.flagged.is_(True)))
        rollouts = Counter(db.scalars(select(Rollout.status)))
        database_now = db.scalar(text("SELECT now()"))
        constraint = db.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
            {"name": "uq_training_runs_one_active_cycle"},
        )
    engine.dispose()

    # Acknowledged events.
    lost_impressions = sorted(set(ledger.impressions) - set(stored_impressions))
    changed_impressions = [
        i
        for i, shown in ledger.impressions.items()
        if i in stored_impressions and stored_impressions[i] != shown
    ]
    lost_interactions = sorted(set(ledger.interactions) - set(stored_interactions))
    changed_interactions = [
        key
        for key, interaction_id in ledger.interactions.items()
        if key in stored_interactions and stored_interactions[key] != interaction_id
    ]
    if lost_impressions:
        problems.append(
            f"{len(lost_impressions)} acknowledged impressions lost: {lost_impressions[:10]}"
        )
    if changed_impressions:
        problems.append(
            "impressions stored with another version or image than acknowledged: "
            f"{changed_impressions[:10]}"
        )
    if lost_interactions:
        problems.append(
            f"{len(lost_interactions)} acknowledged interactions lost: {lost_interactions[:10]}"
        )
    if changed_interactions or ledger.interaction_mismatch:
        problems.append(
            "interactions answered with another id than stored: "
            f"{changed_interactions[:10]} {ledger.interaction_mismatch[:5]}"
        )

    # One active cycle at a time: the intervals [created, finished) never overlap.
    overlaps = []
    for earlier, later in itertools.pairwise(runs):
        if earlier.finished_at is None or later.created_at < earlier.finished_at:
            overlaps.append((earlier.id, later.id))
    if overlaps:
        problems.append(f"cycles active at the same time: {overlaps}")
    if watch.max_active_cycles > 1:
        problems.append(f"{watch.max_active_cycles} active cycles seen in one sample")
    if not constraint:
        problems.append("the one-active-cycle index is missing")
    if watch.max_serving > 1:
        problems.append(f"{watch.max_serving} versions serving at once")

    # Each cycle made at most one version; a succeeded one exactly the one it names.
    by_run: dict[int, list[int]] = {}
    for version in versions:
        if version.parent_id is not None:
            by_run.setdefault(int(version.config.get("run_id", -1)), []).append(version.id)
    for run_id, made in by_run.items():
        if len(made) > 1:
            problems.append(f"cycle run {run_id} made {len(made)} versions: {made}")
    run_by_id = {run.id: run for run in runs}
    for run in runs:
        made = by_run.get(run.id, [])
        if run.status == "succeeded" and made != [run.metrics.get("version_id")]:
            named = run.metrics.get("version_id")
            problems.append(f"succeeded run {run.id} names version {named} but made {made}")
        if run.status != "succeeded" and made:
            problems.append(f"{run.status} run {run.id} made versions {made}")

    # No impression showed a version before it was whole and published.
    half_made_served = []
    for version in versions:
        if version.id not in first_served:
            continue
        whole = (
            version.batch_size > 0
            and image_counts.get(version.id, 0) == version.batch_size
            and (version.source == "placeholder" or version.checkpoint_key in artifact_keys)
            and version.status not in ("training", "ready", "failed")
        )
        if version.parent_id is None:
            published = version.promoted_at
        else:
            maker = run_by_id.get(int(version.config.get("run_id", -1)))
            published = (
                maker.finished_at if maker is not None and maker.status == "succeeded" else None
            )
        if not whole or published is None or first_served[version.id] < published:
            half_made_served.append(version.id)
    if half_made_served:
        problems.append(f"versions served before they were whole: {half_made_served}")
    if wrong_image:
        problems.append(f"{wrong_image} impressions showed an image of another version")
    if watch.half_made:
        problems.append(f"served versions seen not whole: {watch.half_made[:10]}")

    # Liveness: an active cycle that nothing has moved on for a long while is lost work (its
    # task never reached the broker, or was never handed on after its worker died).
    stalled = []
    for run in runs:
        if run.status not in ("queued", "running"):
            continue
        moved = max(
            run.created_at,
            run.started_at or run.created_at,
            _progress_time(run.metrics) or run.created_at,
        )
        idle = (database_now - moved).total_seconds()
        if idle > stall_after:
            stalled.append(f"run {run.id} {run.status}, attempts {run.attempts}, idle {idle:.0f} s")
    if stalled:
        problems.append(f"cycles stalled: {stalled}")

    new_versions = [v.id for v in versions if v.id > first_version]
    if not new_versions:
        problems.append("the loop made no new version")

    statuses = Counter(run.status for run in runs)
    interrupted = [run for run in runs if run.attempts > 1]
    return {
        "impressions_acknowledged": len(ledger.impressions),
        "impressions_lost": len(lost_impressions),
        "interactions_acknowledged": len(ledger.interactions),
        "interactions_lost": len(lost_interactions),
        "impressions_stored": len(stored_impressions),
        "interactions_stored": len(stored_interactions),
        "impressions_flagged": flagged,
        "cycles": {
            "started": len(runs),
            "succeeded": statuses.get("succeeded", 0),
            "failed": statuses.get("failed", 0),
            "active_at_end": statuses.get("queued", 0) + statuses.get("running", 0),
            "stalled": stalled,
            "redelivered (attempts > 1)": len(interrupted),
            "redelivered and succeeded": sum(r.status == "succeeded" for r in interrupted),
            "failure_reasons": sorted(
                {(r.error or "").splitlines()[0][:160] for r in runs if r.status == "failed"}
            ),
            "max_active_sampled": watch.max_active_cycles,
            "overlapping_pairs": len(overlaps),
            "one_active_cycle_index": bool(constraint),
        },
        "versions": {
            "new": len(new_versions),
            "promoted": rollouts.get("promoted", 0),
            "rollouts": dict(rollouts),
            "half_made_served": len(half_made_served) + len(watch.half_made),
            "impressions_of_another_versions_image": wrong_image,
            "max_serving_sampled": watch.max_serving,
        },
        "samples": {"taken": watch.samples, "failed_while_database_down": watch.failed_samples},
        "problems": problems,
    }


def _progress_time(metrics: dict[str, Any]) -> datetime | None:
    updated = (metrics or {}).get("progress", {}).get("updated_at")
    return datetime.fromisoformat(updated) if updated else None


# --- Output ----------------------------------------------------------------------------------

COLOURS = {
    "api_kill": (224, 123, 36),
    "worker_kill": (155, 77, 202),
    "redis_restart": (194, 59, 59),
    "pg_restart": (47, 143, 91),
    "pg_crash": (17, 17, 17),
}


def plot(path: Path, ledger: Ledger, faults: list[Fault], seconds: float) -> None:
    """Acknowledged events per second, with a line at each fault (Pillow: the project ships no
    plotting library)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 1200, 420, 60, 20, 40, 70
    per_second = Counter(int(t) for t in ledger.ack_times)
    span = max(1, int(seconds) + 1)
    peak = max(1, int(max(per_second.values(), default=1) * 1.1))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + plot_w * t / span

    def y(v: float) -> float:
        return top + plot_h * (1 - v / peak)

    for tick in range(0, peak + 1, max(1, peak // 5)):
        draw.line([(left, y(tick)), (width - right, y(tick))], fill=(229, 231, 235))
        draw.text((8, y(tick) - 6), str(tick), fill="black", font=font)
    for tick in range(0, span + 1, max(10, (span // 10) // 10 * 10)):
        draw.text((x(tick) - 8, height - bottom + 6), f"{tick}", fill="black", font=font)
    draw.text((left + plot_w // 2 - 60, height - bottom + 22), "seconds into the soak", "black")
    for second in range(span):
        count = per_second.get(second, 0)
        if count:
            bar = [x(second), y(count), max(x(second), x(second + 1) - 1), y(0)]
            draw.rectangle(bar, fill=(36, 99, 166))
    for fault in faults:
        colour = COLOURS[fault.kind]
        draw.line([(x(fault.at), top), (x(fault.at), y(0))], fill=colour, width=2)
    title = f"acknowledged events per second, {seconds:.0f} s soak; lines: faults"
    draw.text((left, 10), title, fill="black", font=font)
    legend_x = left + 360
    for kind, colour in COLOURS.items():
        draw.line([(legend_x, 16), (legend_x + 18, 16)], fill=colour, width=3)
        draw.text((legend_x + 22, 10), kind, fill="black", font=font)
        legend_x += 130
    draw.rectangle([left, top, width - right, y(0)], outline=(156, 163, 175))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def longest_silence(ack_times: list[float], until: float) -> tuple[float, float]:
    """The longest stretch with no acknowledged event at all, and where it began."""
    times = sorted(ack_times)
    best, at = 0.0, 0.0
    for before, after in zip([0.0, *times], [*times, until], strict=True):
        if after - before > best:
            best, at = after - before, before
    return best, at


def table(result: dict[str, Any]) -> str:
    cycles, versions = result["cycles"], result["versions"]
    rows = [
        ("soak", f"{result['soak_seconds']:.0f} s of traffic and faults"),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in result["faults_by_kind"].items())),
        ("impressions acknowledged / lost", f"{result['impressions_acknowledged']} / "
                                             f"{result['impressions_lost']}"),
        ("interactions acknowledged / lost", f"{result['interactions_acknowledged']} / "
                                              f"{result['interactions_lost']}"),
        ("events given up unacknowledged at the end", str(sum(result["given_up"].values()))),
        ("cycles started / succeeded / failed", f"{cycles['started']} / {cycles['succeeded']} / "
                                                f"{cycles['failed']}"),
        ("worker kills mid-cycle", str(result["worker_kills_mid_cycle"])),
        ("cycles stalled", str(len(cycles["stalled"]))),
        ("cycles redelivered / of them succeeded", f"{cycles['redelivered (attempts > 1)']} / "
                                                   f"{cycles['redelivered and succeeded']}"),
        ("max active cycles (sampled) / overlapping", f"{cycles['max_active_sampled']} / "
                                                      f"{cycles['overlapping_pairs']}"),
        ("new versions / promoted", f"{versions['new']} / {versions['promoted']}"),
        ("half-made versions served", str(versions["half_made_served"])),
        ("longest wait of one event for its 2xx", f"{result['longest_wait_seconds']:.1f} s"),
        ("longest time with no event acknowledged", f"{result['longest_silence_seconds']:.1f} s"),
        ("verdict", "PASS" if not result["problems"] else "FAIL"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# --- Main ------------------------------------------------------------------------------------


def soak(args: argparse.Namespace) -> dict[str, Any]:
    missing = missing_tools()
    if missing:
        raise SystemExit("chaos needs: " + "; ".join(missing))
    work = Path(tempfile.mkdtemp(prefix="pirloop-chaos-"))
    stack: Stack | None = None
    stop_traffic, give_up, stop_watch = threading.Event(), threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    try:
        log(f"starting the private stack in {work}")
        building = time.monotonic()
        # The cluster's directory must be reachable by the postgres user.
        work.chmod(0o755)
        stack = Stack(work, PrivatePostgres(work / "pg"), PrivateRedis(work / "redis"), env={})
        build_stack(stack, args)
        log(
            f"stack up: PostgreSQL :{stack.pg.port}, Redis :{stack.redis.port}, "
            f"APIs {' '.join(stack.bases)}, 2 workers, beat; {time.monotonic() - building:.0f} s"
        )
        from sqlalchemy import create_engine, func, select

        from app.models import GeneratorVersion

        engine = create_engine(stack.pg.url)
        with engine.connect() as db:
            first_version = int(db.scalar(select(func.max(GeneratorVersion.id))) or 0)
        engine.dispose()

        started = time.monotonic()
        ledger = Ledger(started)
        watch = Watch()
        faults = Faults(stack, ledger, watch, args)
        users = [
            User(
                n,
                stack.bases,
                ledger,
                interval=args.users / args.rate,
                stop=stop_traffic,
                give_up=give_up,
            )
            for n in range(args.users)
        ]
        threads = [threading.Thread(target=u.run, name=f"user-{u.number}") for u in users]
        threads.append(
            threading.Thread(
                target=watch_database,
                args=(stack.pg.url, watch, ledger, stop_watch, args.sample_every),
                daemon=True,
            )
        )
        threads.append(
            threading.Thread(
                target=reporter, args=(ledger, watch, faults, stop_watch, 15.0), daemon=True
            )
        )
        for thread in threads:
            thread.start()
        end = started + args.minutes * 60
        fault_loop(faults, args, end)
        time.sleep(max(0.0, end - time.monotonic()))
        soak_seconds = ledger.now()
        log(f"{soak_seconds:.0f} s: faults end; traffic stops (retries get {args.drain:.0f} s)")
        stop_traffic.set()
        drain_end = time.monotonic() + args.drain
        for thread in threads[: args.users]:
            thread.join(max(0.0, drain_end - time.monotonic()))
        give_up.set()
        for thread in threads[: args.users]:
            thread.join()
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end and watch.running_cycle is not None:
            time.sleep(1)
        stop_watch.set()
        # Processes first (a warm shutdown finishes a running task), then the proof.
        stopping = time.monotonic()
        stop_all(stack.all_procs())
        log(f"processes stopped in {time.monotonic() - stopping:.0f} s; checking the database")
        checked = verify(
            stack.pg.url,
            ledger,
            watch,
            first_version=first_version,
            stall_after=args.visibility_timeout + 60,
        )
        silence, silence_at = longest_silence(ledger.ack_times, soak_seconds)
        logs = {
            proc.name: {
                "tracebacks": proc.log_path.read_text(errors="replace").count("Traceback"),
                "starts": proc.starts,
            }
            for proc in stack.all_procs()
        }
        result: dict[str, Any] = {
            "soak_seconds": round(soak_seconds, 1),
            "settings": {
                "users": args.users,
                "rate_per_second": args.rate,
                "every_seconds": every_from(args),
                "down_seconds": args.down_seconds,
                "visibility_timeout": args.visibility_timeout,
                "loop": TOY_LOOP,
            },
            "faults_by_kind": dict(Counter(f.kind for f in faults.log)),
            "faults": [f.__dict__ for f in faults.log],
            "worker_kills_mid_cycle": sum(f.detail.startswith("mid-cycle") for f in faults.log),
            **{k: v for k, v in checked.items() if k != "problems"},
            "given_up": dict(ledger.given_up),
            "refused_4xx": dict(ledger.refused),
            "responses": dict(ledger.statuses),
            "longest_wait_seconds": round(ledger.longest_wait, 2),
            "longest_wait_began_at": round(ledger.longest_wait_at, 1),
            "longest_silence_seconds": round(silence, 2),
            "longest_silence_began_at": round(silence_at, 1),
            "process_logs": logs,
            "problems": checked["problems"],
        }
        if args.plot:
            plot(args.plot, ledger, faults.log, soak_seconds)
            result["plot"] = str(args.plot)
        if args.keep:
            result["work"] = str(work)
        return result
    finally:
        stop_traffic.set()
        give_up.set()
        stop_watch.set()
        tear_down(stack)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic and faults")
    for kind in FAULT_KINDS:
        parser.add_argument(
            f"--{kind.replace('_', '-')}-every",
            type=float,
            default=DEFAULT_EVERY[kind],
            metavar="SECONDS",
            help=f"seconds between two {kind} faults (0: none; default {DEFAULT_EVERY[kind]:.0f})",
        )
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before any fault")
    parser.add_argument("--stagger", type=float, default=8.0, help="between first faults")
    parser.add_argument("--down-seconds", type=float, default=2.0, help="before a restart")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--rate", type=float, default=10.0, help="impressions per second, all")
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        default=40,
        help="seconds after which the broker hands a killed worker's task on (longer than a "
        "cycle, or a running cycle is handed on too)",
    )
    parser.add_argument(
        "--cycle-wait", type=float, default=60.0, help="a mid-cycle kill waits this long"
    )
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=60.0, help="for last retries")
    parser.add_argument(
        "--settle", type=float, default=90.0, help="wait for a running cycle at the end"
    )
    parser.add_argument("--json", type=Path, default=None, help="instead of bench/results")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "chaos.png")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument(
        "--placeholder",
        action="store_true",
        help="v1 serves placeholder images: a quicker start, for a check of durability alone",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = soak(args)
    log("")
    log(table(result))
    for problem in result["problems"]:
        log(f"PROBLEM: {problem}")
    payload = {"command": "python -m bench.chaos " + " ".join(sys.argv[1:]), **result}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
        log(f"wrote {args.json}")
    else:
        log(f"wrote {write_result('chaos', json.loads(json.dumps(payload, default=str)))}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
