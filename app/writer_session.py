"""The group-commit writer for SQLite (app/writer.py): a thread running SQLAlchemy Sessions.

SQLite's driver has no asyncio interface and a database call never runs on the event loop,
so one thread per process takes everything queued, applies it through `BatchKind.apply` in
a single transaction (the only thread hop of a write), commits, and then wakes each asking
event loop once per group. A thread, not a task of one loop: the answer goes back to
whichever loop asked (test clients may run a loop per request). It works on PostgreSQL too
(PostgresWriter applies kinds without `apply_postgresql` with its help).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app.writer import (
    BatchKind,
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
)

_STOP = object()


class SessionWriter(GroupCommitWriter):
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        max_batch: int = 256,
        on_commit: OnCommit | None = None,
    ) -> None:
        super().__init__(max_batch=max_batch, on_commit=on_commit)
        self._session_factory = session_factory
        # The writer keeps one connection of its own between groups: checking one out of the
        # pool for every group (and the pool's liveness ping) cost a round trip each.
        # Dropped when the database goes away, so the next group connects afresh (the failed
        # group is answered 503, nothing of it acknowledged).
        self._engine: Engine = session_factory.kw["bind"]
        self._connection: Connection | None = None
        self._queue: queue.SimpleQueue[Pending | object] = queue.SimpleQueue()
        # Guards `_open` together with the queue, so nothing is queued behind the stop mark.
        self._lock = threading.Lock()
        self._open = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._open = True
        self._thread = threading.Thread(target=self._run, name="pirloop-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            self._queue.put(_STOP)
        if self._thread is not None:
            # Off the loop: the queued writes' answers come back through it meanwhile.
            await asyncio.to_thread(self._thread.join)

    async def _enqueue(self, kind: BatchKind[Any, Any], items: list[Any], *, many: bool) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._lock:
            if not self._open:
                raise WriteUnavailable("the writer is not running")
            self._queue.put(Pending(kind, items, future, many))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group: list[Pending] = [first]  # type: ignore[list-item]
            # Counted in items: an entry of many items is never split, even past max_batch.
            size = len(group[0].items)
            while size < self._max_batch:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is _STOP:
                    stopping = True
                    break
                group.append(pending)  # type: ignore[arg-type]
                size += len(pending.items)  # type: ignore[attr-defined]
            writes = group_writes(group)
            started = time.perf_counter()
            outcomes = self.commit(writes)
            seconds = time.perf_counter() - started
            self.batches += 1
            self._answer(group, outcomes)
            if self._on_commit is not None:
                self._on_commit(len(writes), seconds)
        self._drop_connection(broken=False)

    @staticmethod
    def _answer(group: list[Pending], outcomes: list[Any]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Pending, Any]]] = {}
        for pending, outcome in answers(group, outcomes):
            by_loop.setdefault(pending.future.get_loop(), []).append((pending, outcome))
        for loop, answered in by_loop.items():
            # One wake-up per loop and group; a closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve, answered)

    def commit(self, writes: list[Write]) -> list[Any]:
        """Apply and commit the writes in one transaction: one outcome per write, in order.
        Blocking: on the writer's thread (or a worker thread of PostgresWriter's)."""
        try:
            return self._apply(writes)
        except Exception as exc:
            if is_unavailable(exc):
                self._drop_connection(broken=True)
            outcomes = failure_outcomes(exc, len(writes))
            if outcomes is not None:
                return outcomes
            return [outcome for write in writes for outcome in self.commit([write])]

    def _drop_connection(self, *, broken: bool) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(Exception):  # a broken one is gone already; close the rest
            if broken:
                self._connection.invalidate()
            self._connection.close()
        self._connection = None

    def close(self) -> None:
        """Give back the connection (when the writer is used only through `commit`)."""
        self._drop_connection(broken=False)

    def _apply(self, writes: list[Write]) -> list[Any]:
        if self._connection is None:
            self._connection = self._engine.connect()
        outcomes: list[Any] = [None] * len(writes)
        with self._session_factory(bind=self._connection) as session, session.begin():
            for kind, indices in by_kind(writes).items():
                results = kind.apply(session, [writes[i][1] for i in indices])
                for index, result in zip(indices, results, strict=True):
                    outcomes[index] = result
        return outcomes
