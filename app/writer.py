"""Group commit for the public write endpoints.

A 2xx on an impression or interaction promises the row is stored, so each answer waits for
a COMMIT. One COMMIT (one fsync on the database) per request caps the service at a few
hundred writes a second; one COMMIT for every write that arrived while the previous one was
running costs the same fsync for a hundred rows. So the route functions stay async and hand
their rows to a writer: it takes everything queued, applies it in a single transaction,
commits, and only then resolves each waiting request. Under light load a group is one row
and the answer is as fast as before; under heavy load groups grow by themselves.

Under heavy load PostgresWriter also waits a little for its group to fill (`Gathering`): each
statement costs the machine about as much as a dozen of its rows (a round trip that wakes two
processes, the commit's WAL flush, psycopg's own bookkeeping), so a group of 24 costs less per
row than two of 12. Kafka's producer does the same (batch.size, linger.ms). Only after a group
big enough to show load, so a lone request never waits for a timer.

Two writers, one contract (`GroupCommitWriter`), chosen by the database (`make_writer`):
- `PostgresWriter` (app/writer_postgres.py): a task on the API's event loop with psycopg's
  asyncio connection. No thread hop at all: the database socket is one more file the loop
  waits on, and an answer is a future set on the same loop. This is the service's hot path.
- `SessionWriter` (app/writer_session.py): a thread running SQLAlchemy Sessions, for SQLite,
  whose driver has no asyncio interface (and a database call never runs on the loop).

What a write does in the database is a `BatchKind`: it turns a list of items into one result
per item, with the SQL shared by the whole list. An item the kind refuses (its token names no
impression, nothing is being served) gets its own exception while its neighbours are stored.
A request that carries many items (POST /v1/interactions/batch) submits them together: one
entry, one future, and all its items in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Told each transaction's number of writes and seconds (app/metrics.py).
OnCommit = Callable[[int, float], None]


class WriteUnavailable(Exception):
    """The transaction holding this write did not commit: nothing of it is stored and the
    request may be retried (the API answers 503)."""


class BatchKind(ABC, Generic[ItemT, ResultT]):
    """One kind of write, applied to many items inside the writer's transaction."""

    # apply_postgresql's writes are one statement: on its own in a group it needs no
    # BEGIN/COMMIT round trips around it (autocommit commits it, durably, before it answers).
    one_statement = False

    @abstractmethod
    def apply(self, session: Session, items: Sequence[ItemT]) -> list[ResultT | Exception]:
        """One result per item, in order; an exception in place of a result refuses that item
        alone. Must not commit: the writer does, once for the whole group. Runs on any
        database, in SessionWriter's thread."""

    async def apply_postgresql(
        self, connection: AsyncConnection[Any], items: Sequence[ItemT]
    ) -> list[ResultT | Exception]:
        """The same on PostgreSQL, on the event loop, through PostgresWriter's connection
        (statements in app/queries_pg.py): a Session's BEGIN, COMMIT and bookkeeping cost
        more CPU per group than the statement itself (docs/BENCHMARKS.md). The writer wraps
        it in a transaction unless it is `one_statement` and alone in its group. A kind
        without it is applied through `apply`, in a thread."""
        raise NotImplementedError

    @classmethod
    def has_postgresql(cls) -> bool:
        return cls.apply_postgresql is not BatchKind.apply_postgresql


@dataclass
class Pending:
    """One submission waiting for its group's commit."""

    kind: BatchKind[Any, Any]
    items: list[Any]
    future: asyncio.Future[Any]
    # True: the future gets the list of outcomes, exceptions included (`submit_many`);
    # False: the one item's result, or its exception raised (`submit`).
    many: bool


Write = tuple[BatchKind[Any, Any], Any]  # one item of a group, with its kind


@dataclass(frozen=True)
class Gathering:
    """How long a busy writer waits for its next group to fill before it commits.

    After a group of at least `busy_from` items, with writes already queued behind it (the
    sign of load: under light load groups are one or two, and the writer waits for work
    between them), the writer waits until `target` items are queued, `linger_seconds` have
    passed, or no write has come for `quiet_seconds`, whichever comes first
    (docs/BENCHMARKS.md measures it). The quiet spell ends the wait after a burst: a page's
    visitors arrive in bursts, and waiting on after one adds latency and gathers nothing.
    Zero linger_seconds: never wait."""

    target: int = 24
    linger_seconds: float = 0.002
    quiet_seconds: float = 0.0005

    @property
    def busy_from(self) -> int:
        return max(2, self.target // 3)

    def lingers_after(self, group_items: int, queued_items: int) -> bool:
        """Whether to wait for more, after a group of `group_items` with this many queued."""
        busy = group_items >= self.busy_from
        return self.linger_seconds > 0 and busy and queued_items < self.target


def is_unavailable(exc: BaseException) -> bool:
    """The database is down or unreachable, as opposed to refusing one particular row."""
    if isinstance(exc, OperationalError | PoolTimeout | psycopg.OperationalError):
        return True
    if isinstance(exc, psycopg.InterfaceError):  # the connection is closed
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def failure_outcomes(exc: Exception, count: int) -> list[Any] | None:
    """What the `count` writes of a group that raised `exc` answer; None: apply each on its
    own, so that one row the database refuses fails one item, not its whole group."""
    if is_unavailable(exc):
        log.warning("a group of %d writes failed: %s", count, exc.__class__.__name__)
        return [WriteUnavailable(str(exc)) for _ in range(count)]
    if count == 1:
        log.exception("a write failed", exc_info=exc)
        return [exc]
    log.warning("a group of %d writes failed; retrying them one by one", count)
    return None


def take_group(queue: list[Pending], max_items: int) -> list[Pending]:
    """The oldest entries of `queue`, removed from it, up to `max_items` items (an entry of
    many items is never split, so a group may pass the limit by one entry)."""
    size = 0
    taken = 0
    for pending in queue:
        if taken and size >= max_items:
            break
        size += len(pending.items)
        taken += 1
    group = queue[:taken]
    del queue[:taken]
    return group


def group_writes(group: list[Pending]) -> list[Write]:
    return [(pending.kind, item) for pending in group for item in pending.items]


def by_kind(writes: list[Write]) -> dict[BatchKind[Any, Any], list[int]]:
    """Each kind's positions in the group: a kind applies its items as one list."""
    positions: dict[BatchKind[Any, Any], list[int]] = {}
    for index, (kind, _) in enumerate(writes):
        positions.setdefault(kind, []).append(index)
    return positions


def answers(group: list[Pending], outcomes: list[Any]) -> list[tuple[Pending, Any]]:
    """Each entry with what its future gets: its item's outcome, or its items' list."""
    paired = []
    start = 0
    for pending in group:
        end = start + len(pending.items)
        paired.append((pending, outcomes[start:end] if pending.many else outcomes[start]))
        start = end
    return paired


def resolve(answered: list[tuple[Pending, Any]]) -> None:
    """On the requests' event loop: hand each its result or exception."""
    for pending, outcome in answered:
        future = pending.future
        if future.done():  # the client went away; its row may be stored all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class GroupCommitWriter(ABC):
    """What the routes see: submit writes, await their commit."""

    def __init__(self, *, max_batch: int = 256, on_commit: OnCommit | None = None) -> None:
        self._max_batch = max_batch
        # Called after the group's answers: they wait for nothing else.
        self._on_commit = on_commit
        self.batches = 0  # transactions tried, for tests and diagnostics

    @abstractmethod
    def start(self) -> None:
        """Start taking writes (PostgresWriter: on the running event loop, which it joins)."""

    @abstractmethod
    async def stop(self) -> None:
        """Commit and answer every write already queued, then stop."""

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
        database refuses the group and the items are retried one by one."""
        if not items:
            return []
        outcomes: list[ResultT | Exception] = await self._enqueue(kind, list(items), many=True)
        return outcomes

    @abstractmethod
    async def _enqueue(self, kind: BatchKind[Any, Any], items: list[Any], *, many: bool) -> Any:
        """Queue the entry and await its future."""


def make_writer(
    session_factory: sessionmaker[Session],
    *,
    database_pooler: str = "none",
    on_commit: OnCommit | None = None,
    gathering: Gathering | None = None,
) -> GroupCommitWriter:
    """The writer for the engine's database: PostgresWriter on PostgreSQL (with `gathering`),
    else SessionWriter."""
    from app.writer_postgres import PostgresWriter
    from app.writer_session import SessionWriter

    engine = session_factory.kw["bind"]
    if engine.dialect.name == "postgresql":
        return PostgresWriter(
            session_factory,
            database_pooler=database_pooler,
            on_commit=on_commit,
            gathering=gathering,
        )
    return SessionWriter(session_factory, on_commit=on_commit)
