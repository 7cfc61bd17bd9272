"""A candidate rolled out beside a live service's champion, for the tests that need one
without running a learning cycle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app import queries, rollout
from app.database import make_engine, make_session_factory, session_scope
from app.models import VersionStatus
from app.settings import Settings


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
