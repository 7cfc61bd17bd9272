"""Versions with traffic on a service's database, for the tests that need them without
running a learning cycle: the first version serving, impressions clicked or not, a candidate
rolled out beside the champion."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app import queries, rollout
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.models import VersionStatus
from app.settings import Settings


@contextmanager
def first_version_serving(settings: Settings) -> Iterator[tuple[sessionmaker[Session], int]]:
    """A session factory on `settings`' (fresh) database once its first version, of placeholder
    images, serves; yields (factory, first version id) and disposes of the engine after."""
    engine = make_engine(settings.resolved_database_url)
    try:
        factory = make_session_factory(engine)
        first = ensure_initial_version(factory, settings, placeholder=True)
        assert first is not None, "the database already had a version"
        yield factory, first
    finally:
        engine.dispose()


def log_clicks(
    session: Session, version_id: int, clicks: Sequence[bool], *, when: datetime, simulated: bool
) -> None:
    """One background impression of the version per entry of `clicks`, round robin over its
    images, each clicked or not, all at `when`, each from a visitor of its own."""
    images = queries.batch_image_ids(session, version_id)
    impressions = queries.insert_impressions(
        session,
        [
            {
                "image_id": images[i % len(images)],
                "version_id": version_id,
                "placement": "background",
                "visitor_hash": f"clicks-{version_id}-{i}",
                "simulated": simulated,
                "created_at": when,
            }
            for i in range(len(clicks))
        ],
    )
    queries.insert_new_interactions(
        session,
        [
            {"impression_id": impression, "kind": "click", "value": 1.0, "created_at": when}
            for impression, clicked in zip(impressions, clicks, strict=True)
            if clicked
        ],
    )


def roll_out_candidate(settings: Settings, images: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Store `images` as a candidate tuned from the serving champion and start its rollout
    with `settings`' split and policy; returns (champion id, candidate id)."""
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            champion = queries.serving_version(session)
            assert champion is not None
            candidate = queries.create_version(
                session, source="test", parent_id=champion.id, status=VersionStatus.ready
            )
            queries.add_images(session, candidate.id, images)
            candidate.batch_size = len(images)
            assert rollout.start_rollout(session, settings, candidate) is not None
            return champion.id, candidate.id
    finally:
        engine.dispose()
