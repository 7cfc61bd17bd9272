"""Apply the retention setting (see app/retention.py)."""

from __future__ import annotations

import logging

from app.database import session_scope
from app.retention import purge_old_events
from worker.jobs.context import job_context

log = logging.getLogger(__name__)


def purge_events() -> dict[str, int]:
    ctx = job_context()
    with session_scope(ctx.sessions) as session:
        purged = purge_old_events(session, ctx.settings)
    if purged["versions"]:
        log.info("retention: %s", purged)
    return purged
