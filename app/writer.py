"""Group commit for the public write endpoints.

A 2xx on an impression or interaction promises the row is stored, so each answer waits for
a COMMIT. One COMMIT (one fsync on the database) per request caps the service at a few
hundred writes a second; one COMMIT for every write that arrived while the previous one was
running costs the same fsync for a hundred rows. So the route functions stay async and hand
their rows to this writer: one thread per process takes everything queued, applies it in a
single transaction (the only thread hop of a write), commits, and only then resolves each
waiting request. Under light load a batch is one row and the answer
is as fast as before; under heavy load batches grow by themselves and no timer adds latency.

The writer is a plain thread fed by a thread-safe queue, not a task of one event loop: the
answer goes back to whichever loop asked (uvicorn has one per process; test clients may run
a loop per request), and database calls never run on a loop.

What a write does in the database is a `BatchKind`: it turns a list of items into one result
per item, with the SQL shared by the whole list. An item the kind refuses (its token names no
impression, nothing is being served) gets its own exception while its neighbours are stored.
A request that carries many items (POST /v1/interactions/batch) submits them together: one
queue entry, one future, and all its items in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import Connection as PgConnection
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class WriteUnavailable(Exception):
    """The transaction holding this write did not commit: nothing of it is stored and the
    request may be retried (the API answers 503)."""


class BatchKind(ABC, Generic[ItemT, ResultT]):
    """One kind of write, applied to many items inside the writer's transaction."""

    # apply_postgresql's writes are one statement: on its own in a batch it needs no
    # BEGIN/COMMIT round trips around it (autocommit commits it, durably, before it answers).
    one_statement = False

    @abstractmethod
    def apply(self, session: Session, items: Sequence[ItemT]) -> list[ResultT | Exception]:
        """One result per item, in order; an exception in place of a result refuses that item
        alone. Must not commit: the writer does, once for the whole batch."""

    def apply_postgresql(
        self, connection: PgConnection[Any], items: Sequence[ItemT]
    ) -> list[ResultT | Exception]:
        """The same on PostgreSQL, on psycopg's own connection (app/queries_pg.py), which the
        writer uses for a kind that has it: a Session's BEGIN, COMMIT and bookkeeping cost
        more CPU per group than the statement itself (docs/BENCHMARKS.md). The writer wraps
        it in a transaction unless it is `one_statement` and alone in its group. Kinds
        without it go through `apply` on every database."""
        raise NotImplementedError


@dataclass
class _Pending:
    kind: BatchKind[Any, Any]
    items: list[Any]
    future: asyncio.Future[Any]
    # True: the future gets the list of outcomes, exceptions included (`submit_many`);
    # False: the one item's result, or its exception raised (`submit`).
    many: bool


_STOP = object()


def is_unavailable(exc: BaseException) -> bool:
    """The database is down or unreachable, as opposed to refusing one particular row."""
    if isinstance(exc, OperationalError | PoolTimeout | psycopg.OperationalError):
        return True
    if isinstance(exc, psycopg.InterfaceError):  # the connection is closed
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _resolve(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """On the requests' event loop: hand each its result or exception."""
    for future, outcome in answers:
        if future.done():  # the client went away; its row may be stored all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class GroupCommitWriter:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        max_batch: int = 256,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        # The writer keeps one connection of its own between groups: checking one out of the
        # pool for every group (and the pool's liveness ping) cost a round trip each. On
        # PostgreSQL it is psycopg's own, in autocommit mode (see BatchKind.apply_postgresql).
        # Dropped when the database goes away, so the next group connects afresh (the failed
        # group is answered 503, nothing of it acknowledged).
        self._engine: Engine = session_factory.kw["bind"]
        self._connection: Connection | None = None
        # psycopg's connection under one of the pool's (so it connects with the engine's
        # arguments: timeouts, prepared statements behind a pooler, app/database.py).
        self._pooled: PoolProxiedConnection | None = None
        self._pg: PgConnection[Any] | None = None
        self._max_batch = max_batch
        # Told each transaction's writes and seconds (app/metrics.py), on the writer thread.
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        # Guards `_open` together with the queue, so nothing is queued behind the stop mark.
        self._lock = threading.Lock()
        self._open = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # transactions tried, for tests and diagnostics

    def start(self) -> None:
        with self._lock:
            self._open = True
        self._thread = threading.Thread(target=self._run, name="pirloop-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit and answer every write already queued, then stop."""
        with self._lock:
            if not self._open:
                return
            self._open = False
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()

    async def submit(self, kind: BatchKind[ItemT, ResultT], item: ItemT) -> ResultT:
        """Queue one write and return its result once its transaction has committed."""
        outcome: ResultT = await self._enqueue(kind, [item], many=False)
        return outcome

    async def submit_many(
        self, kind: BatchKind[ItemT, ResultT], items: Sequence[ItemT]
    ) -> list[ResultT | Exception]:
        """Queue several writes as one entry and return one outcome per item, in order, once
        the transaction holding them has committed. A refused item gets its exception in
        the list; its neighbours are stored. Never split across transactions unless the
        database refuses the batch and the items are retried one by one."""
        if not items:
            return []
        outcomes: list[ResultT | Exception] = await self._enqueue(kind, list(items), many=True)
        return outcomes

    async def _enqueue(self, kind: BatchKind[Any, Any], items: list[Any], *, many: bool) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._lock:
            if not self._open:
                raise WriteUnavailable("the writer is not running")
            self._queue.put(_Pending(kind, items, future, many))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Pending] = [first]  # type: ignore[list-item]
            # Counted in items: an entry of many items is never split, even past max_batch.
            size = len(batch[0].items)
            while size < self._max_batch:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is _STOP:
                    stopping = True
                    break
                batch.append(pending)  # type: ignore[arg-type]
                size += len(pending.items)  # type: ignore[attr-defined]
            writes = [(pending.kind, item) for pending in batch for item in pending.items]
            started = time.perf_counter()
            outcomes = self._commit(writes)
            seconds = time.perf_counter() - started
            self.batches += 1
            self._answer(batch, outcomes)
            if self._on_commit is not None:  # after the answers: they wait for nothing else
                self._on_commit(len(writes), seconds)
        if self._connection is not None:
            self._connection.close()
        if self._pooled is not None and self._pg is not None:
            self._pg.autocommit = False  # as the pool hands its connections out
            self._pooled.close()

    @staticmethod
    def _answer(batch: list[_Pending], outcomes: list[Any]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        start = 0
        for pending in batch:
            end = start + len(pending.items)
            outcome = outcomes[start:end] if pending.many else outcomes[start]
            start = end
            by_loop.setdefault(pending.future.get_loop(), []).append((pending.future, outcome))
        for loop, answers in by_loop.items():
            # One wake-up per loop and batch; a closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, answers)

    def _commit(self, writes: list[tuple[BatchKind[Any, Any], Any]]) -> list[Any]:
        try:
            return self._apply(writes)
        except Exception as exc:
            if is_unavailable(exc):
                self._drop_connection()
                log.warning("a batch of %d writes failed: %s", len(writes), exc.__class__.__name__)
                return [WriteUnavailable(str(exc)) for _ in writes]
            if len(writes) == 1:
                log.exception("a write failed")
                return [exc]
            # Not an outage but a row the database refused: apply each write on its own, so
            # one bad row fails one item, not every item that shared its transaction.
            log.warning("a batch of %d writes failed; retrying them one by one", len(writes))
            return [outcome for write in writes for outcome in self._commit([write])]

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # it is broken already; close what is left
                self._connection.invalidate()
                self._connection.close()
            self._connection = None
        if self._pooled is not None:
            with contextlib.suppress(Exception):
                self._pooled.invalidate()  # closed, and never handed out again
            self._pooled = self._pg = None

    def _pg_connection(self) -> PgConnection[Any]:
        if self._pg is None:
            self._pooled = self._engine.raw_connection()
            pg = self._pooled.driver_connection
            assert isinstance(pg, PgConnection)  # the engine's driver is psycopg
            pg.autocommit = True
            self._pg = pg
        return self._pg

    def _apply(self, writes: list[tuple[BatchKind[Any, Any], Any]]) -> list[Any]:
        by_kind: dict[BatchKind[Any, Any], list[int]] = {}
        for index, (kind, _) in enumerate(writes):
            by_kind.setdefault(kind, []).append(index)
        on_postgresql = self._engine.dialect.name == "postgresql"
        if on_postgresql and all(
            type(kind).apply_postgresql is not BatchKind.apply_postgresql for kind in by_kind
        ):
            return self._apply_postgresql(writes, by_kind)
        if self._connection is None:
            self._connection = self._engine.connect()
        outcomes: list[Any] = [None] * len(writes)
        with self._session_factory(bind=self._connection) as session, session.begin():
            for kind, indices in by_kind.items():
                results = kind.apply(session, [writes[i][1] for i in indices])
                for index, result in zip(indices, results, strict=True):
                    outcomes[index] = result
        return outcomes

    def _apply_postgresql(
        self,
        writes: list[tuple[BatchKind[Any, Any], Any]],
        by_kind: dict[BatchKind[Any, Any], list[int]],
    ) -> list[Any]:
        pg = self._pg_connection()
        outcomes: list[Any] = [None] * len(writes)
        alone = len(by_kind) == 1 and next(iter(by_kind)).one_statement
        with contextlib.nullcontext() if alone else pg.transaction():
            for kind, indices in by_kind.items():
                results = kind.apply_postgresql(pg, [writes[i][1] for i in indices])
                for index, result in zip(indices, results, strict=True):
                    outcomes[index] = result
        return outcomes
