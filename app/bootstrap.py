"""`pirloop init`: the first generator version (v1) and its batch, when the database has none."""

from __future__ import annotations

import importlib.util
import logging

from sqlalchemy.orm import Session, sessionmaker

from app import queries
from app.database import session_scope
from app.jobs import resolve_task
from app.models import VersionStatus
from app.placeholder import placeholder_batch
from app.settings import Settings

log = logging.getLogger(__name__)


def ml_available() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def ensure_initial_version(
    factory: sessionmaker[Session], settings: Settings, *, placeholder: bool | None = None
) -> int | None:
    """Create and serve the first version (v1) if no version exists; return its id, or None
    if one existed. Idempotent: a second call (or a concurrent one losing the race) changes
    nothing."""
    with session_scope(factory) as session:
        if queries.count_versions(session):
            return None
    use_placeholder = (not ml_available()) if placeholder is None else placeholder
    if use_placeholder:
        with session_scope(factory) as session:
            version = queries.create_version(
                session, source="placeholder", config={"size": 32}, status=VersionStatus.ready
            )
            queries.add_images(
                session, version.id, placeholder_batch(settings.batch_size, first_seed=0)
            )
            version.batch_size = settings.batch_size
            queries.promote_version(session, version.id)
            return version.id
    with session_scope(factory) as session:
        version = queries.create_version(
            session, source=settings.preset, config={"preset": settings.preset}
        )
        version_id = version.id
    # The same job the worker runs for every version, called inline here.
    resolve_task("worker.generate_batch")(version_id=version_id, promote=True)
    return version_id
