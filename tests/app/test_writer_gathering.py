"""PostgresWriter's gathering (app/writer.py, `Gathering`): after a busy group it waits a
little for the next one to fill, while writes keep coming; a write under light load never
waits for the timer; stop() ends a wait at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from app.database import make_engine, make_session_factory
from app.writer import Gathering
from app.writer_postgres import PostgresWriter
from tests.app.test_writer import Doubling

T = TypeVar("T")


def test_it_lingers_only_after_a_busy_group_and_below_its_target() -> None:
    gathering = Gathering(target=24, linger_seconds=0.002)
    assert gathering.busy_from == 8
    assert not gathering.lingers_after(group_items=1, queued_items=1)  # light load
    assert not gathering.lingers_after(group_items=7, queued_items=1)
    assert gathering.lingers_after(group_items=8, queued_items=3)
    assert not gathering.lingers_after(group_items=30, queued_items=24)  # full already
    assert not Gathering(target=24, linger_seconds=0).lingers_after(30, 1)
    assert Gathering(target=1).busy_from == 2


def _run(
    pg_url: str, gathering: Gathering, scenario: Callable[[PostgresWriter], Awaitable[T]]
) -> T:
    engine = make_engine(pg_url)

    async def go() -> T:
        writer = PostgresWriter(make_session_factory(engine), gathering=gathering)
        writer.start()
        try:
            return await scenario(writer)
        finally:
            await writer.stop()

    try:
        return asyncio.run(go())
    finally:
        engine.dispose()


async def _behind_a_busy_group(writer: PostgresWriter, kind: Doubling, item: int) -> Any:
    """A writer under load: 40 writes in one group, held until `item` has queued behind
    them, then committed. Returns `item`'s pending answer."""
    assert kind.hold is not None
    busy = [asyncio.ensure_future(writer.submit(kind, 2000 + i)) for i in range(40)]
    await asyncio.sleep(0.05)  # the writer holds them, in one group
    behind = asyncio.ensure_future(writer.submit(kind, item))
    await asyncio.sleep(0)  # queued
    kind.hold.set()
    await asyncio.gather(*busy)
    return behind


@pytest.mark.postgres
def test_after_a_busy_group_writes_arriving_apart_share_the_next_commit(pg_url: str) -> None:
    kind = Doubling(threading.Event())

    async def scenario(writer: PostgresWriter) -> tuple[list[Any], float]:
        started = time.perf_counter()
        arriving = [await _behind_a_busy_group(writer, kind, 0)]
        for item in range(1, 10):
            await asyncio.sleep(0.01)
            arriving.append(asyncio.ensure_future(writer.submit(kind, item)))
        return await asyncio.gather(*arriving), time.perf_counter() - started

    # Far longer than the arrivals take: the group commits when its 10th write arrives.
    gathering = Gathering(target=10, linger_seconds=30, quiet_seconds=30)
    results, seconds = _run(pg_url, gathering, scenario)
    assert results == [2 * item for item in range(10)]
    assert kind.batches[1:] == [list(range(10))]
    assert seconds < 10


@pytest.mark.postgres
def test_the_linger_ends_at_its_deadline_and_an_idle_writer_never_waits(pg_url: str) -> None:
    kind = Doubling(threading.Event())
    linger = 1.0

    async def scenario(writer: PostgresWriter) -> tuple[float, float]:
        started = time.perf_counter()
        # It waits for a group of 100 that never comes.
        assert await (await _behind_a_busy_group(writer, kind, 1)) == 2
        lingered = time.perf_counter() - started
        started = time.perf_counter()
        assert await writer.submit(kind, 2) == 4  # it was idle before this one: no wait
        return lingered, time.perf_counter() - started

    gathering = Gathering(target=100, linger_seconds=linger, quiet_seconds=linger)
    lingered, alone = _run(pg_url, gathering, scenario)
    assert lingered >= linger * 0.9
    assert alone < linger / 2
    assert kind.batches[1:] == [[1], [2]]


@pytest.mark.postgres
def test_a_busy_group_then_idle_is_light_load_again(pg_url: str) -> None:
    """The load a big group showed is over once the writer has waited for work: the next
    lone write is committed at once."""
    kind = Doubling()

    async def scenario(writer: PostgresWriter) -> float:
        await asyncio.gather(*(writer.submit(kind, 2000 + i) for i in range(40)))
        await asyncio.sleep(0.05)  # idle
        started = time.perf_counter()
        assert await writer.submit(kind, 1) == 2
        return time.perf_counter() - started

    gathering = Gathering(target=100, linger_seconds=20, quiet_seconds=20)
    assert _run(pg_url, gathering, scenario) < 10
    assert kind.batches == [[2000 + i for i in range(40)], [1]]


@pytest.mark.postgres
def test_a_quiet_spell_ends_the_linger(pg_url: str) -> None:
    """After a burst nothing more is coming: waiting out the whole linger would gather
    nothing and add its latency to the burst's last writes."""
    kind = Doubling(threading.Event())
    quiet = 0.3

    async def scenario(writer: PostgresWriter) -> float:
        started = time.perf_counter()
        assert await (await _behind_a_busy_group(writer, kind, 1)) == 2
        return time.perf_counter() - started

    gathering = Gathering(target=100, linger_seconds=60, quiet_seconds=quiet)
    waited = _run(pg_url, gathering, scenario)
    assert quiet * 0.9 <= waited < 30
    assert kind.batches[1:] == [[1]]


@pytest.mark.postgres
def test_stop_ends_a_linger_at_once_and_commits_what_is_queued(pg_url: str) -> None:
    kind = Doubling(threading.Event())

    async def scenario(writer: PostgresWriter) -> tuple[int, float]:
        queued = await _behind_a_busy_group(writer, kind, 21)
        await asyncio.sleep(0.05)  # the writer is lingering for more
        started = time.perf_counter()
        await writer.stop()
        return await queued, time.perf_counter() - started

    gathering = Gathering(target=100, linger_seconds=60, quiet_seconds=60)
    answer, stopping = _run(pg_url, gathering, scenario)
    assert answer == 42
    assert stopping < 10
    assert kind.batches[1:] == [[21]]
