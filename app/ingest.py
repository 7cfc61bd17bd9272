"""What the public write endpoints store, as batch writes for the group-commit writer
(app/writer.py): impressions (which image to show, then the row) and interactions (at most
one per impression and kind). Routes check what needs no database (tokens, rate limits) and
`await` these; the answer comes after the COMMIT that holds the row."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy.orm import Session

from app import queries, queries_pg
from app.errors import PirloopError
from app.queries import InteractionKey
from app.serving import BatchPicker, NothingToServe
from app.writer import BatchKind, GroupCommitWriter


@dataclass(frozen=True)
class NewImpression:
    placement: str
    visitor_hash: str
    simulated: bool
    # The connection's address and user agent, hashed (app/abuse.py groups by it too).
    client_hash: str | None = None


@dataclass(frozen=True)
class StoredImpression:
    impression_id: int
    image_id: int
    version_id: int


@dataclass(frozen=True)
class NewInteraction:
    # From a verified token: the impression it was signed for and the image it showed.
    impression_id: int
    image_id: int
    kind: str
    value: float


@dataclass(frozen=True)
class StoredInteraction:
    interaction_id: int
    impression_id: int
    kind: str
    value: float
    # False: an interaction of this kind was stored before; the first one's value stands.
    created: bool


class UnknownImpression(PirloopError):
    """A validly signed token whose impression is not stored here (another database)."""

    status_code = 401


class RatingNotAllowed(PirloopError):
    """A rating for an impression that was not shown in the rating placement: a valid body
    that conflicts with the stored impression (409; the body alone cannot tell)."""

    status_code = 409


Pick = tuple[int, int] | NothingToServe  # (version id, image id), or why none


class ImpressionWrites(BatchKind[NewImpression, StoredImpression]):
    """Picks the image for each impression in arrival order (the picker keeps the batch even)
    and inserts the whole batch with one statement."""

    one_statement = True

    def __init__(self, picker: BatchPicker) -> None:
        self._picker = picker

    def apply(
        self, session: Session, items: Sequence[NewImpression]
    ) -> list[StoredImpression | Exception]:
        picks = self._pick(session, items)
        return self._stored(picks, queries.insert_impressions(session, self._rows(items, picks)))

    async def apply_postgresql(
        self, connection: AsyncConnection[Any], items: Sequence[NewImpression]
    ) -> list[StoredImpression | Exception]:
        # On the event loop: what the picker reads (the plan, about once a second) it reads
        # in a thread, so that picking below never waits on the database.
        if self._picker.needs_reading():
            await asyncio.to_thread(self._picker.refresh)
        picks = self._pick(None, items)
        rows = self._rows(items, picks)
        inserted = await queries_pg.insert_impressions(connection, rows) if rows else []
        return self._stored(picks, inserted)

    def _pick(self, session: Session | None, items: Sequence[NewImpression]) -> list[Pick]:
        picks: list[Pick] = []
        for _ in items:
            try:
                picks.append(self._picker.pick(session))
            except NothingToServe as exc:  # this request alone answers 503
                picks.append(exc)
        return picks

    @staticmethod
    def _rows(items: Sequence[NewImpression], picks: list[Pick]) -> list[dict[str, Any]]:
        return [
            {
                "image_id": pick[1],
                "version_id": pick[0],
                "placement": item.placement,
                "visitor_hash": item.visitor_hash,
                "client_hash": item.client_hash,
                "simulated": item.simulated,
            }
            for item, pick in zip(items, picks, strict=True)
            if not isinstance(pick, NothingToServe)
        ]

    @staticmethod
    def _stored(picks: list[Pick], inserted_ids: list[int]) -> list[StoredImpression | Exception]:
        ids = iter(inserted_ids)
        return [
            pick
            if isinstance(pick, NothingToServe)
            else StoredImpression(impression_id=next(ids), image_id=pick[1], version_id=pick[0])
            for pick in picks
        ]


class InteractionWrites(BatchKind[NewInteraction, StoredInteraction]):
    """Checks every item against its impression, inserts the new (impression, kind) pairs,
    and reads back the first row of each repeat."""

    def apply(
        self, session: Session, items: Sequence[NewInteraction]
    ) -> list[StoredInteraction | Exception]:
        return self._apply(
            items,
            partial(queries.impression_refs, session),
            partial(queries.insert_new_interactions, session),
            partial(queries.interactions_by_key, session),
        )

    # On PostgreSQL every step is one statement (queries_pg.record_interactions), committed
    # when it answers; only a key a concurrent transaction stored meanwhile needs a second.
    one_statement = True

    async def apply_postgresql(
        self, connection: AsyncConnection[Any], items: Sequence[NewInteraction]
    ) -> list[StoredInteraction | Exception]:
        recorded = await queries_pg.record_interactions(
            connection, [dataclasses.asdict(item) for item in items]
        )
        # A key neither inserted nor found stored was stored by a concurrent transaction
        # after the statement's snapshot: read it now. (So is the key of an item the rules
        # below refuse, a rating for a background impression: one read more on an error path.)
        unseen = {
            (item.impression_id, item.kind) for item in items if item.impression_id in recorded.refs
        } - (recorded.created.keys() | recorded.earlier.keys())
        if unseen:
            later = await queries_pg.interactions_by_key(connection, sorted(unseen))
            recorded.earlier.update(later)

        def inserted(rows: list[dict[str, Any]]) -> dict[InteractionKey, tuple[int, float]]:
            # The statement judged the items by the rules _apply applies below; the two must
            # agree on what was stored, or an answer would misstate it.
            wanted = {(row["impression_id"], row["kind"]) for row in rows}
            if not set(recorded.created) <= wanted:
                raise RuntimeError("the statement stored interactions the rules refuse")
            return recorded.created

        return self._apply(items, lambda _: recorded.refs, inserted, lambda _: recorded.earlier)

    @staticmethod
    def _apply(
        items: Sequence[NewInteraction],
        impression_refs: Callable[[list[int]], dict[int, tuple[int, str]]],
        insert_new: Callable[[list[dict[str, Any]]], dict[InteractionKey, tuple[int, float]]],
        stored_by_key: Callable[[list[InteractionKey]], dict[InteractionKey, tuple[int, float]]],
    ) -> list[StoredInteraction | Exception]:
        """The three steps, with the database's statements passed in: look up the
        impressions, insert the new keys, read back the first row of each repeat."""
        refs = impression_refs(sorted({item.impression_id for item in items}))
        refused: dict[int, Exception] = {}
        first_of_key: dict[InteractionKey, int] = {}
        rows = []
        for index, item in enumerate(items):
            ref = refs.get(item.impression_id)
            if ref is None or ref[0] != item.image_id:
                refused[index] = UnknownImpression("token names no impression served here")
                continue
            if item.kind == "rating" and ref[1] != "rating":
                refused[index] = RatingNotAllowed(
                    "ratings are accepted only for rating-placement impressions"
                )
                continue
            key = (item.impression_id, item.kind)
            if key not in first_of_key:  # a repeat within the batch answers as a repeat
                first_of_key[key] = index
                rows.append({"impression_id": key[0], "kind": key[1], "value": item.value})
        created = insert_new(rows) if rows else {}
        repeats = [key for key in first_of_key if key not in created]
        stored = {**(stored_by_key(repeats) if repeats else {}), **created}
        outcomes: list[StoredInteraction | Exception] = []
        for index, item in enumerate(items):
            if index in refused:
                outcomes.append(refused[index])
                continue
            key = (item.impression_id, item.kind)
            interaction_id, value = stored[key]
            outcomes.append(
                StoredInteraction(
                    interaction_id=interaction_id,
                    impression_id=item.impression_id,
                    kind=item.kind,
                    value=value,
                    created=key in created and first_of_key[key] == index,
                )
            )
        return outcomes


class Ingest:
    """The write path of one API process: a group-commit writer and the two kinds of write."""

    def __init__(self, writer: GroupCommitWriter, picker: BatchPicker) -> None:
        self.writer = writer
        self._impressions = ImpressionWrites(picker)
        self._interactions = InteractionWrites()

    async def log_impression(self, item: NewImpression) -> StoredImpression:
        """Raises NothingToServe, or WriteUnavailable when the batch did not commit."""
        return await self.writer.submit(self._impressions, item)

    async def record_interaction(self, item: NewInteraction) -> StoredInteraction:
        """Raises UnknownImpression, RatingNotAllowed, or WriteUnavailable."""
        return await self.writer.submit(self._interactions, item)

    async def record_interactions(
        self, items: Sequence[NewInteraction]
    ) -> list[StoredInteraction | Exception]:
        """Many interactions in one submission and one transaction: for each, in order, the
        stored row or its refusal (UnknownImpression, RatingNotAllowed, WriteUnavailable)."""
        return await self.writer.submit_many(self._interactions, items)
