"""The group-commit writer (app/writer.py) and the writes of the public endpoints
(app/ingest.py): requests share commits, a failed commit acknowledges nothing, a refused
item fails alone, repeats are stored once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg import AsyncConnection
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app import queries
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.ingest import (
    ImpressionWrites,
    InteractionWrites,
    NewImpression,
    NewInteraction,
    RatingNotAllowed,
    StoredImpression,
    StoredInteraction,
    UnknownImpression,
)
from app.main import create_app
from app.models import Impression, Interaction
from app.settings import Settings
from app.writer import BatchKind, GroupCommitWriter, WriteUnavailable, make_writer
from app.writer_postgres import PostgresWriter
from app.writer_session import SessionWriter
from tests.app.faults import commits_fail


class Doubling(BatchKind[int, int]):
    """Records each group; refuses negative items; can hold the writer on its first group.
    The same on both writers: through a Session, or on PostgresWriter's connection."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.hold = hold

    def apply(self, session: Session, items: Sequence[int]) -> list[int | Exception]:
        if self.hold is not None and not self.batches:
            self.hold.wait(10)
        session.execute(select(1))
        return self._double(items)

    async def apply_postgresql(
        self, connection: AsyncConnection[Any], items: Sequence[int]
    ) -> list[int | Exception]:
        if self.hold is not None and not self.batches:
            while not self.hold.is_set():  # on the loop: the test releases it from there
                await asyncio.sleep(0.005)
        await connection.execute("SELECT 1")
        return self._double(items)

    def _double(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        if 1013 in items:
            raise ValueError("the database refuses 1013")
        return [ValueError(f"{i} is negative") if i < 0 else 2 * i for i in items]


class SessionOnly(Doubling):
    """A kind without statements of its own for PostgreSQL: applied through a Session."""

    apply_postgresql = BatchKind.apply_postgresql  # type: ignore[assignment]


T = TypeVar("T")
Scenario = Callable[[GroupCommitWriter], Awaitable[T]]


@pytest.fixture
def run_writer(database_url: str) -> Iterator[Callable[[Scenario[Any]], Any]]:
    """Runs a scenario against the database's writer (SessionWriter on SQLite, PostgresWriter
    on PostgreSQL), started and stopped on the scenario's event loop as the app's lifespan
    does."""
    engine = make_engine(database_url)
    factory = make_session_factory(engine)

    def run(scenario: Scenario[T]) -> T:
        async def go() -> T:
            writer = make_writer(factory)
            writer.start()
            try:
                return await scenario(writer)
            finally:
                await writer.stop()

        return asyncio.run(go())

    yield run
    engine.dispose()


def test_the_database_picks_the_writer(run_writer: Callable[[Scenario[Any]], Any]) -> None:
    async def which(writer: GroupCommitWriter) -> type[GroupCommitWriter]:
        return type(writer)

    assert run_writer(which) in (SessionWriter, PostgresWriter)


async def _submit_while_held(
    writer: GroupCommitWriter, kind: Doubling, hold: threading.Event, items: list[int]
) -> list[int | BaseException]:
    """The first item blocks the writer; the rest queue behind it; then release."""
    first = asyncio.ensure_future(writer.submit(kind, items[0]))
    await asyncio.sleep(0.05)  # the writer is inside the first group now, held
    rest = [asyncio.ensure_future(writer.submit(kind, item)) for item in items[1:]]
    await asyncio.sleep(0.05)
    hold.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


@pytest.mark.parametrize("kind_type", [Doubling, SessionOnly])
def test_concurrent_writes_share_one_commit(
    run_writer: Callable[[Scenario[Any]], Any], kind_type: type[Doubling]
) -> None:
    hold = threading.Event()
    kind = kind_type(hold)

    async def scenario(writer: GroupCommitWriter) -> tuple[list[int | BaseException], int]:
        results = await _submit_while_held(writer, kind, hold, list(range(50)))
        return results, writer.batches

    results, transactions = run_writer(scenario)
    assert results == [2 * i for i in range(50)]
    # One group for the first item, one for the 49 that queued while it was committing.
    assert kind.batches == [[0], list(range(1, 50))]
    assert transactions == 2


def test_a_refused_item_fails_alone(run_writer: Callable[[Scenario[Any]], Any]) -> None:
    hold = threading.Event()
    kind = Doubling(hold)
    results = run_writer(lambda writer: _submit_while_held(writer, kind, hold, [1, 2, -3, 4]))
    assert results[:2] == [2, 4]
    assert isinstance(results[2], ValueError)
    assert results[3] == 8


def test_a_row_the_database_refuses_fails_only_its_own_request(
    run_writer: Callable[[Scenario[Any]], Any],
) -> None:
    hold = threading.Event()
    kind = Doubling(hold)
    results = run_writer(lambda writer: _submit_while_held(writer, kind, hold, [1, 2, 1013, 4]))
    assert results[0] == 2
    assert results[1] == 4
    assert isinstance(results[2], ValueError)
    assert results[3] == 8
    # The group [2, 1013, 4] failed as a whole, then each was applied on its own.
    assert kind.batches[1:] == [[2, 1013, 4], [2], [1013], [4]]


def test_submit_many_is_one_entry_committed_with_its_neighbours(
    run_writer: Callable[[Scenario[Any]], Any],
) -> None:
    hold = threading.Event()
    kind = Doubling(hold)

    async def scenario(writer: GroupCommitWriter) -> list[object]:
        first = asyncio.ensure_future(writer.submit(kind, 0))
        await asyncio.sleep(0.05)  # the writer is inside the first group now, held
        many = asyncio.ensure_future(writer.submit_many(kind, [1, -2, 3]))
        single = asyncio.ensure_future(writer.submit(kind, 4))
        await asyncio.sleep(0.05)
        hold.set()
        return list(await asyncio.gather(first, many, single, return_exceptions=True))

    first, many, single = run_writer(scenario)
    assert first == 0
    assert isinstance(many, list)
    assert many[0] == 2
    assert isinstance(many[1], ValueError)  # refused alone, in its place in the list
    assert many[2] == 6
    assert single == 8
    assert kind.batches == [[0], [1, -2, 3, 4]]


def test_submit_many_retries_its_items_one_by_one_when_the_database_refuses_one(
    run_writer: Callable[[Scenario[Any]], Any],
) -> None:
    kind = Doubling()
    results = run_writer(lambda writer: writer.submit_many(kind, [1, 1013, 2]))
    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert results[2] == 4
    assert kind.batches == [[1, 1013, 2], [1], [1013], [2]]


def test_an_unavailable_database_fails_the_whole_group(
    run_writer: Callable[[Scenario[Any]], Any],
) -> None:
    class Down(BatchKind[int, int]):
        def apply(self, session: Session, items: Sequence[int]) -> list[int | Exception]:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

        async def apply_postgresql(
            self, connection: AsyncConnection[Any], items: Sequence[int]
        ) -> list[int | Exception]:
            raise psycopg.OperationalError("server closed the connection")

    async def scenario(writer: GroupCommitWriter) -> list[int | BaseException]:
        kind = Down()
        return await asyncio.gather(
            *(writer.submit(kind, i) for i in range(5)), return_exceptions=True
        )

    results = run_writer(scenario)
    assert all(isinstance(result, WriteUnavailable) for result in results)


def test_stop_commits_and_answers_what_is_queued(
    run_writer: Callable[[Scenario[Any]], Any],
) -> None:
    hold = threading.Event()
    kind = Doubling(hold)

    async def scenario(writer: GroupCommitWriter) -> list[object]:
        queued = [asyncio.ensure_future(writer.submit(kind, i)) for i in range(5)]
        await asyncio.sleep(0.05)  # the first is held inside its group, the rest queued
        hold.set()
        await writer.stop()
        refused = await asyncio.gather(writer.submit(kind, 9), return_exceptions=True)
        return [*(await asyncio.gather(*queued)), *refused]

    *answered, late = run_writer(scenario)
    assert answered == [0, 2, 4, 6, 8]
    assert isinstance(late, WriteUnavailable)


def test_a_stopped_writer_refuses(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'stopped.db'}")
    writer = make_writer(make_session_factory(engine))
    with pytest.raises(WriteUnavailable):
        asyncio.run(writer.submit(Doubling(), 1))
    engine.dispose()


@pytest.mark.postgres
def test_postgres_writer_takes_writes_from_another_event_loop(pg_url: str) -> None:
    """The writer lives on the loop that started it; a request on another loop (a test
    client's) is queued through that loop and answered on its own."""
    engine = make_engine(pg_url)
    writer = make_writer(make_session_factory(engine))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(_start(writer), loop).result(10)
        kind = Doubling()
        assert asyncio.run(writer.submit(kind, 21)) == 42
        asyncio.run_coroutine_threadsafe(writer.stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        engine.dispose()
    with pytest.raises(WriteUnavailable):  # its loop is gone
        asyncio.run(writer.submit(kind, 1))


async def _start(writer: GroupCommitWriter) -> None:
    writer.start()


def _prepared_app(settings: Settings) -> FastAPI:
    engine = make_engine(settings.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    return create_app(settings)


def _count(settings: Settings, model: type[Impression] | type[Interaction]) -> int:
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        count = connection.scalar(select(func.count()).select_from(model)) or 0
    engine.dispose()
    return count


def test_a_failed_commit_answers_503_to_every_waiting_request_and_stores_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _prepared_app(settings)

    async def go() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                with commits_fail(settings, monkeypatch, table="impressions"):
                    return await asyncio.gather(
                        *(
                            client.post("/v1/impressions", json={"placement": "background"})
                            for _ in range(20)
                        )
                    )

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [503] * 20
    assert {r.json()["error"] for r in responses} == {"unavailable"}
    assert all("database" in r.json()["message"] for r in responses)
    assert _count(settings, Impression) == 0
    assert 1 <= app.state.ingest.writer.batches < 20  # the 20 requests shared transactions


def test_concurrent_repeats_store_one_row_and_answer_the_first_value(settings: Settings) -> None:
    app = _prepared_app(settings)

    async def go() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                served = await client.post("/v1/impressions", json={"placement": "rating"})
                token = served.json()["token"]
                return await asyncio.gather(
                    *(
                        client.post(
                            "/v1/interactions",
                            json={"token": token, "kind": "rating", "value": value},
                        )
                        for value in (1, 2, 3, 4, 5, 1, 2, 3, 4, 5)
                    )
                )

    responses = asyncio.run(go())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [201]
    first = next(r.json() for r in responses if r.status_code == 201)
    assert {r.json()["value"] for r in responses} == {first["value"]}
    assert {r.json()["interaction_id"] for r in responses} == {first["interaction_id"]}
    assert _count(settings, Interaction) == 1


def test_interaction_writes_in_one_batch(settings: Settings) -> None:
    """Repeats inside one batch, a rating on a background impression, a token for an
    impression that is not stored: one statement for the batch, each item its own answer."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    ensure_initial_version(factory, settings, placeholder=True)
    with session_scope(factory) as session:
        version = queries.serving_version(session)
        assert version is not None
        image_id = queries.batch_image_ids(session, version.id)[0]
        rating, background = queries.insert_impressions(
            session,
            [
                {
                    "image_id": image_id,
                    "version_id": version.id,
                    "placement": placement,
                    "visitor_hash": "v",
                    "simulated": False,
                }
                for placement in ("rating", "background")
            ],
        )
    items = [
        NewInteraction(impression_id=rating, image_id=image_id, kind="rating", value=5),
        NewInteraction(impression_id=rating, image_id=image_id, kind="rating", value=1),
        NewInteraction(impression_id=background, image_id=image_id, kind="rating", value=3),
        NewInteraction(impression_id=background, image_id=image_id, kind="click", value=1),
        NewInteraction(impression_id=background + 100, image_id=image_id, kind="click", value=1),
        NewInteraction(impression_id=background, image_id=image_id + 1, kind="click", value=1),
    ]
    with session_scope(factory) as session:
        first = InteractionWrites().apply(session, items)
    with session_scope(factory) as session:
        again = InteractionWrites().apply(session, items[:1])
    engine.dispose()

    assert isinstance(first[0], StoredInteraction)
    assert first[0].created
    assert first[0].value == 5
    assert isinstance(first[1], StoredInteraction)
    assert not first[1].created
    assert first[1].value == 5
    assert first[1].interaction_id == first[0].interaction_id
    assert isinstance(first[2], RatingNotAllowed)
    assert isinstance(first[3], StoredInteraction)
    assert first[3].created
    assert isinstance(first[4], UnknownImpression)
    assert isinstance(first[5], UnknownImpression)  # signed for another image
    assert isinstance(again[0], StoredInteraction)
    assert not again[0].created
    assert again[0].interaction_id == first[0].interaction_id
    assert _count(settings, Interaction) == 2


class _ScriptedPicker:
    """Picks what it is told, in order: (version id, image id) pairs."""

    def __init__(self, picks: list[tuple[int, int]]) -> None:
        self.picks = list(picks)

    def needs_reading(self) -> bool:
        return False

    def pick(self, session: Session | None = None) -> tuple[int, int]:
        return self.picks.pop(0)


def test_an_impression_of_an_image_outside_its_version_is_refused_alone(
    settings: Settings,
) -> None:
    """Impressions carry no foreign keys (migration 0005): the writes check that the image
    belongs to the version, all rows of a statement or none, and the group commit then
    stores the good rows of a group and refuses the bad one."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    ensure_initial_version(factory, settings, placeholder=True)
    with session_scope(factory) as session:
        version = queries.serving_version(session)
        assert version is not None
        image_id = queries.batch_image_ids(session, version.id)[0]
        good, bad = (version.id, image_id), (version.id + 1, image_id)
        with pytest.raises(queries.ImageNotInVersion):
            queries.insert_impressions(
                session,
                [
                    {"image_id": i, "version_id": v, "placement": "background", "visitor_hash": "v"}
                    | {"simulated": False}
                    for v, i in (good, bad)
                ],
            )
    assert _count(settings, Impression) == 0

    # The group, then each item again on its own (a retried item is picked again).
    picker = _ScriptedPicker([good, bad, good, good, bad, good])
    kind = ImpressionWrites(picker)  # type: ignore[arg-type]
    item = NewImpression(placement="background", visitor_hash="v", simulated=False)

    async def go() -> list[object]:
        writer = make_writer(factory)
        writer.start()
        try:
            return await writer.submit_many(kind, [item, item, item])
        finally:
            await writer.stop()

    first, refused, third = asyncio.run(go())
    engine.dispose()
    assert isinstance(first, StoredImpression)
    assert isinstance(third, StoredImpression)
    assert isinstance(refused, queries.ImageNotInVersion)
    assert _count(settings, Impression) == 2
    assert picker.picks == []
