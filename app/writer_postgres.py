"""The group-commit writer on PostgreSQL (app/writer.py): a task on the API's event loop.

Each API process has one event loop (uvicorn's), and this writer lives on it with one psycopg
asyncio connection in autocommit mode. A request queues its entry and awaits a future; the
writer takes everything queued, runs the group's statements (app/queries_pg.py; a group of
one kind is one statement, so one round trip, committed and durable when it answers) and
sets the futures. Nothing crosses a thread: the thread writer it replaced spent a tenth of
an impression's CPU on waking threads, handing over the GIL and waking the loop back
(docs/BENCHMARKS.md). What runs on the loop is the Python of a group, which is the work the
route's own code would do anyway; the database is awaited, never waited for.

The writer belongs to the loop that started it (the app's lifespan). A request on another
loop (some test clients run one per request) is queued through the writer's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.database import connect_postgresql
from app.writer import (
    BatchKind,
    Gathering,
    GroupCommitWriter,
    OnCommit,
    Pending,
    Write,
    WriteUnavailable,
    answers,
    by_kind,
    failure_outcomes,
    group_writes,
    is_unavailable,
    resolve,
    take_group,
)
from app.writer_session import SessionWriter


class PostgresWriter(GroupCommitWriter):
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        database_pooler: str = "none",
        max_batch: int = 256,
        on_commit: OnCommit | None = None,
        gathering: Gathering | None = None,
    ) -> None:
        super().__init__(max_batch=max_batch, on_commit=on_commit)
        self._gathering = gathering or Gathering()
        self._engine: Engine = session_factory.kw["bind"]
        # Its connect arguments follow the pooler, as the engine's do (app/database.py).
        self._pooler = database_pooler
        # Kept between groups; dropped when the database goes away, so the next group
        # connects afresh (the failed group is answered 503, nothing of it acknowledged).
        self._connection: AsyncConnection[Any] | None = None
        # A group with a kind that has no apply_postgresql goes through its Session path, in
        # a worker thread (never on the loop).
        self._sessions = SessionWriter(session_factory)
        self._queue: list[Pending] = []
        self._queued_items = 0
        # The size of the group committed last; 0 once the writer has waited for work.
        self._last_group_items = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._open = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._open = True
        self._task = self._loop.create_task(self._run(), name="pirloop-writer")

    async def stop(self) -> None:
        if not self._open or self._task is None or self._wake is None:
            return
        self._open = False
        self._wake.set()
        await self._task

    async def _enqueue(self, kind: BatchKind[Any, Any], items: list[Any], *, many: bool) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is None or self._loop.is_closed():
                raise WriteUnavailable("the writer is not running")
            queued = asyncio.run_coroutine_threadsafe(
                self._enqueue(kind, items, many=many), self._loop
            )
            return await asyncio.wrap_future(queued)
        if not self._open or self._wake is None:
            raise WriteUnavailable("the writer is not running")
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(Pending(kind, items, future, many))
        self._queued_items += len(items)
        self._wake.set()
        return await future

    async def _run(self) -> None:
        assert self._wake is not None
        group: list[Pending] = []
        try:
            while self._open or self._queue:
                if not self._queue:
                    # Idle: whatever load the last group showed is over.
                    self._last_group_items = 0
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                await self._linger()
                group = take_group(self._queue, self._max_batch)
                writes = group_writes(group)
                self._queued_items -= len(writes)
                self._last_group_items = len(writes)
                started = time.perf_counter()
                outcomes = await self._commit(writes)
                seconds = time.perf_counter() - started
                self.batches += 1
                resolve(answers(group, outcomes))
                group = []
                if self._on_commit is not None:
                    self._on_commit(len(writes), seconds)
        finally:
            # Cancelled (the loop is going away): whatever is not answered was not
            # acknowledged; it may be retried.
            unanswered = WriteUnavailable("the writer stopped")
            resolve([(pending, unanswered) for pending in [*group, *self._queue]])
            self._queue.clear()
            self._queued_items = 0
            await self._drop_connection()
            await asyncio.to_thread(self._sessions.close)

    async def _linger(self) -> None:
        """Under load, let the next group fill (app/writer.py, `Gathering`): wait while writes
        keep arriving, until the target, the linger's end or a quiet spell; stop() ends the
        wait at once."""
        assert self._wake is not None
        gathering = self._gathering
        if not self._open or not gathering.lingers_after(
            self._last_group_items, self._queued_items
        ):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + gathering.linger_seconds
        try:
            while self._open and self._queued_items < gathering.target:
                wait = min(deadline - loop.time(), gathering.quiet_seconds)
                if wait <= 0:
                    return
                self._wake.clear()
                async with asyncio.timeout(wait):
                    await self._wake.wait()  # the next arrival, or stop()
        except TimeoutError:
            return  # the linger is over, or no write came for quiet_seconds

    async def _commit(self, writes: list[Write]) -> list[Any]:
        kinds = by_kind(writes)
        if not all(kind.has_postgresql() for kind in kinds):
            return await asyncio.to_thread(self._sessions.commit, writes)
        try:
            return await self._apply(writes, kinds)
        except Exception as exc:
            if is_unavailable(exc):
                await self._drop_connection()
            outcomes = failure_outcomes(exc, len(writes))
            if outcomes is not None:
                return outcomes
            return [outcome for write in writes for outcome in await self._commit([write])]

    async def _apply(
        self, writes: list[Write], kinds: dict[BatchKind[Any, Any], list[int]]
    ) -> list[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = await connect_postgresql(self._engine, self._pooler)
        connection = self._connection
        outcomes: list[Any] = [None] * len(writes)
        alone = len(kinds) == 1 and next(iter(kinds)).one_statement
        async with contextlib.nullcontext() if alone else connection.transaction():
            for kind, indices in kinds.items():
                results = await kind.apply_postgresql(connection, [writes[i][1] for i in indices])
                for index, result in zip(indices, results, strict=True):
                    outcomes[index] = result
        return outcomes

    async def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # it may be broken already
                await self._connection.close()
            self._connection = None
