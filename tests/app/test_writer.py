"""The group-commit writer (app/writer.py) and the writes of the public endpoints
(app/ingest.py): requests share commits, a failed commit acknowledges nothing, a refused
item fails alone, repeats are stored once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app import queries
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.ingest import (
    InteractionWrites,
    NewInteraction,
    RatingNotAllowed,
    StoredInteraction,
    UnknownImpression,
)
from app.main import create_app
from app.models import Impression, Interaction
from app.settings import Settings
from app.writer import BatchKind, GroupCommitWriter, WriteUnavailable
from tests.app.faults import commits_fail


class Doubling(BatchKind[int, int]):
    """Records each batch; refuses negative items; can hold the writer on its first batch."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.hold = hold

    def apply(self, session: Session, items: Sequence[int]) -> list[int | Exception]:
        if self.hold is not None and not self.batches:
            self.hold.wait(10)
        self.batches.append(list(items))
        if 1013 in items:
            raise ValueError("the database refuses 1013")
        return [ValueError(f"{i} is negative") if i < 0 else 2 * i for i in items]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[GroupCommitWriter]:
    engine = make_engine(f"sqlite:///{tmp_path / 'writer.db'}")
    writer = GroupCommitWriter(make_session_factory(engine))
    writer.start()
    yield writer
    writer.stop()
    engine.dispose()


async def _submit_while_held(
    writer: GroupCommitWriter, kind: Doubling, hold: threading.Event, items: list[int]
) -> list[int | BaseException]:
    """The first item blocks the writer; the rest queue behind it; then release."""
    first = asyncio.ensure_future(writer.submit(kind, items[0]))
    await asyncio.sleep(0.05)  # the writer is inside the first batch now, held
    rest = [asyncio.ensure_future(writer.submit(kind, item)) for item in items[1:]]
    await asyncio.sleep(0.05)
    hold.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_concurrent_writes_share_one_commit(writer: GroupCommitWriter) -> None:
    hold = threading.Event()
    kind = Doubling(hold)
    results = asyncio.run(_submit_while_held(writer, kind, hold, list(range(50))))
    assert results == [2 * i for i in range(50)]
    # One batch for the first item, one for the 49 that queued while it was committing.
    assert kind.batches == [[0], list(range(1, 50))]
    assert writer.batches == 2


def test_a_refused_item_fails_alone(writer: GroupCommitWriter) -> None:
    hold = threading.Event()
    kind = Doubling(hold)
    results = asyncio.run(_submit_while_held(writer, kind, hold, [1, 2, -3, 4]))
    assert results[:2] == [2, 4]
    assert isinstance(results[2], ValueError)
    assert results[3] == 8


def test_a_row_the_database_refuses_fails_only_its_own_request(
    writer: GroupCommitWriter,
) -> None:
    hold = threading.Event()
    kind = Doubling(hold)
    results = asyncio.run(_submit_while_held(writer, kind, hold, [1, 2, 1013, 4]))
    assert results[0] == 2
    assert results[1] == 4
    assert isinstance(results[2], ValueError)
    assert results[3] == 8
    # The batch [2, 1013, 4] failed as a whole, then each was applied on its own.
    assert kind.batches[1:] == [[2, 1013, 4], [2], [1013], [4]]


def test_submit_many_is_one_entry_committed_with_its_neighbours(
    writer: GroupCommitWriter,
) -> None:
    hold = threading.Event()
    kind = Doubling(hold)

    async def go() -> list[object]:
        first = asyncio.ensure_future(writer.submit(kind, 0))
        await asyncio.sleep(0.05)  # the writer is inside the first batch now, held
        many = asyncio.ensure_future(writer.submit_many(kind, [1, -2, 3]))
        single = asyncio.ensure_future(writer.submit(kind, 4))
        await asyncio.sleep(0.05)
        hold.set()
        return list(await asyncio.gather(first, many, single, return_exceptions=True))

    first, many, single = asyncio.run(go())
    assert first == 0
    assert isinstance(many, list)
    assert many[0] == 2
    assert isinstance(many[1], ValueError)  # refused alone, in its place in the list
    assert many[2] == 6
    assert single == 8
    assert kind.batches == [[0], [1, -2, 3, 4]]


def test_submit_many_retries_its_items_one_by_one_when_the_database_refuses_one(
    writer: GroupCommitWriter,
) -> None:
    kind = Doubling()
    results = asyncio.run(writer.submit_many(kind, [1, 1013, 2]))
    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert results[2] == 4
    assert kind.batches == [[1, 1013, 2], [1], [1013], [2]]


def test_an_unavailable_database_fails_the_whole_batch(writer: GroupCommitWriter) -> None:
    class Down(BatchKind[int, int]):
        def apply(self, session: Session, items: Sequence[int]) -> list[int | Exception]:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    async def go() -> list[int | BaseException]:
        return await asyncio.gather(
            *(writer.submit(Down(), i) for i in range(5)), return_exceptions=True
        )

    results = asyncio.run(go())
    assert all(isinstance(result, WriteUnavailable) for result in results)


def test_a_stopped_writer_refuses(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'stopped.db'}")
    writer = GroupCommitWriter(make_session_factory(engine))
    with pytest.raises(WriteUnavailable):
        asyncio.run(writer.submit(Doubling(), 1))
    engine.dispose()


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
