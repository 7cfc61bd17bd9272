"""Bot rules that do not rest on what the client claims (issue 13): a bot that sends a new
visitor id with every impression is still caught by its address and user agent together,
while many people behind one address are never flagged for their volume; and flagging runs
on the embedded scheduler and on beat with or without the ML stack. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import main as app_main
from app import queries
from app.abuse import flag_implausible_visitors
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.models import Impression, utcnow
from app.scheduler import FLAGGING
from app.settings import Settings, get_settings
from app.tokens import hash_visitor
from tests.conftest import TEST_SECRET, make_settings, service_env

REPO = Path(__file__).resolve().parents[2]


def test_impressions_store_a_client_hash_whatever_the_visitor_id(
    client: TestClient, settings: Settings
) -> None:
    for n in range(3):
        answer = client.post(
            "/v1/impressions",
            json={"placement": "background", "visitor_id": f"rotating-{n}"},
            headers={"User-Agent": "agent-one"},
        )
        assert answer.status_code == 201
    client.post(
        "/v1/impressions", json={"placement": "background"}, headers={"User-Agent": "agent-two"}
    )
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Impression.visitor_hash, Impression.client_hash).order_by(Impression.id)
        ).all()
    engine.dispose()
    one = hash_visitor(TEST_SECRET, "ip:testclient|ua:agent-one")
    two = hash_visitor(TEST_SECRET, "ip:testclient|ua:agent-two")
    assert [client_hash for _, client_hash in rows] == [one, one, one, two]
    assert len({visitor for visitor, _ in rows[:3]}) == 3  # the ids did rotate
    assert rows[3][0] == two  # no visitor id: the visitor is the connection


# What a test logs: (visitor, client, seconds after the start, seconds to a click or None).
Shown = list[tuple[str, str, float, float | None]]


class Log:
    """Impressions and interactions written straight into the log, with chosen times."""

    def __init__(self, settings: Settings) -> None:
        engine = make_engine(settings.resolved_database_url)
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_session_factory(engine)
        ensure_initial_version(self.sessions, settings, placeholder=True)
        with session_scope(self.sessions) as session:
            serving = queries.serving_version(session)
            assert serving is not None
            self.version = serving.id
            self.images = queries.batch_image_ids(session, serving.id)
        self.start = utcnow() - timedelta(minutes=10)
        self.ids: dict[str, list[int]] = {}

    def add(self, group: str, shown: Shown, placement: str = "background") -> None:
        """`shown`: (visitor, client, seconds after start, seconds to a click or None)."""
        rows = [
            {
                "image_id": self.images[n % len(self.images)],
                "version_id": self.version,
                "placement": placement,
                "visitor_hash": visitor,
                "client_hash": client,
                "simulated": False,
                "created_at": self.start + timedelta(seconds=at),
            }
            for n, (visitor, client, at, _) in enumerate(shown)
        ]
        with session_scope(self.sessions) as session:
            ids = queries.insert_impressions(session, rows)
            queries.insert_new_interactions(
                session,
                [
                    {
                        "impression_id": impression_id,
                        "kind": "click",
                        "value": 1.0,
                        "created_at": self.start + timedelta(seconds=at + delay),
                    }
                    for impression_id, (_, _, at, delay) in zip(ids, shown, strict=True)
                    if delay is not None
                ],
            )
        self.ids[group] = ids

    def flag(self, settings: Settings) -> dict[str, int]:
        with session_scope(self.sessions) as session:
            return flag_implausible_visitors(
                session, positive_kinds=settings.positive_kinds, since=self.start
            )

    def flagged(self) -> set[int]:
        with self.engine.connect() as connection:
            return set(connection.scalars(select(Impression.id).where(Impression.flagged)))

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def log(settings: Settings) -> Iterator[Log]:
    opened = Log(settings)
    yield opened
    opened.close()


def people(prefix: str, count: int, *, rng: random.Random, client: str | None = None) -> Shown:
    """`count` people, three pages each within a minute, clicking a few percent of them a
    second or more after seeing the image; each behind `client`, else a client of their own."""
    shown: Shown = []
    for n in range(count):
        for _ in range(3):
            delay = rng.uniform(1.0, 4.0) if rng.random() < 0.05 else None
            shown.append(
                (f"{prefix}-{n}", client or f"{prefix}-client-{n}", rng.uniform(0, 50), delay)
            )
    return shown


def test_a_click_all_bot_rotating_visitor_ids_is_caught_by_its_client(
    log: Log, settings: Settings
) -> None:
    rng = random.Random(1)
    # 40 impressions, each with a new visitor id, every one clicked (two seconds later: no
    # faster than a person), from one address and user agent.
    log.add("bot", [(f"bot-id-{n}", "bot-client", 2.0 * n, 2.0) for n in range(40)])
    log.add("people", people("person", 30, rng=rng))
    result = log.flag(settings)
    assert result["click_all"] == 0  # no visitor id was used often enough to tell
    assert result["click_all_client"] == 1
    assert log.flagged() == set(log.ids["bot"])


def test_a_too_fast_bot_rotating_visitor_ids_is_caught_by_its_client(
    log: Log, settings: Settings
) -> None:
    rng = random.Random(2)
    # Ratings within 50 ms of each impression, a new visitor id each time.
    log.add("bot", [(f"fast-id-{n}", "fast-client", 3.0 * n, 0.05) for n in range(8)], "rating")
    log.add("people", people("person", 30, rng=rng))
    result = log.flag(settings)
    assert result["too_fast"] == 0
    assert result["too_fast_client"] == 1
    assert log.flagged() == set(log.ids["bot"])


def test_many_people_behind_one_address_are_not_flagged_for_their_volume(
    log: Log, settings: Settings
) -> None:
    rng = random.Random(3)
    # An office: 200 people behind one address with one browser build (600 impressions in
    # a minute, five times the per-visitor flood line), a few of them clicking, and six
    # quick clicks by chance among them.
    office = people("office", 200, rng=rng, client="office-client")
    office += [(f"quick-{n}", "office-client", 10.0 + n, 0.1) for n in range(6)]
    log.add("office", office)
    # A mobile carrier: 300 people behind one address, each with a browser of their own.
    log.add("carrier", people("carrier", 300, rng=rng))
    result = log.flag(settings)
    assert result["impressions_flagged"] == 0, result
    assert log.flagged() == set()


def wait_until(condition: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def job_environment(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The process environment the in-process jobs read their settings from (as
    `pirloop serve` has it), pointing at this test's database."""
    from worker.jobs.context import job_context

    env = service_env(tmp_path, PIRLOOP_DATABASE_URL=settings.resolved_database_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    job_context.cache_clear()
    yield
    job_context().engine.dispose()
    get_settings.cache_clear()
    job_context.cache_clear()


@pytest.mark.usefixtures("job_environment")
def test_the_embedded_scheduler_flags_bots_without_the_ml_stack(
    log: Log, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.add("bot", [(f"bot-id-{n}", "bot-client", 2.0 * n, 2.0) for n in range(40)])
    monkeypatch.setattr(app_main, "ml_available", lambda: False)
    serve_only = make_settings(
        settings.database_url,
        tmp_path,
        embedded_scheduler=True,
        scheduler_interval_seconds=0.05,
    )
    with TestClient(app_main.create_app(serve_only)) as client:
        scheduler = client.app.state.scheduler  # type: ignore[attr-defined]
        assert scheduler is not None
        assert scheduler.tasks == FLAGGING
        wait_until(lambda: log.flagged() == set(log.ids["bot"]), timeout=30, what="the bot flagged")


def celery_app_without(blocked: list[str], tmp_path: Path) -> dict[str, list[str]]:
    """The Celery app's tasks and beat schedule, imported in a process where the `blocked`
    modules cannot be imported (as on a worker image without the ML stack)."""
    # A finder that says "not installed", as on such an image: `'torch' in sys.modules` stays
    # false (a None entry there instead breaks libraries that probe for torch, such as scipy).
    script = (
        "import importlib.abc, json, sys\n"
        "class NotInstalled(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "from worker.celery_app import celery_app\n"
        "import worker.tasks\n"
        "print(json.dumps({'tasks': sorted(t for t in celery_app.tasks if t.startswith("
        "'worker.')), 'beat': sorted(celery_app.conf.beat_schedule)}))\n"
    )
    env = {**os.environ, **service_env(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_beat_and_worker_flag_bots_without_the_ml_stack(tmp_path: Path) -> None:
    without = celery_app_without(["torch", "torchvision"], tmp_path)
    assert "worker.flag_visitors" in without["tasks"]
    assert without["beat"] == ["flag-visitors"]


def test_beat_checks_cycles_too_with_the_ml_stack(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    with_ml = celery_app_without([], tmp_path)
    assert with_ml["beat"] == ["flag-visitors", "maybe-start-cycle"]
