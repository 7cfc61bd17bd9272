"""Flag implausible visitors before the loop reads the log (see app/abuse.py)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from app.abuse import flag_implausible_visitors
from app.database import session_scope
from app.models import utcnow
from worker.jobs.context import job_context

log = logging.getLogger(__name__)

LOOKBACK = timedelta(days=2)


def flag_visitors() -> dict[str, Any]:
    ctx = job_context()
    with session_scope(ctx.sessions) as session:
        result = flag_implausible_visitors(
            session, positive_kinds=ctx.settings.positive_kinds, since=utcnow() - LOOKBACK
        )
    if result["impressions_flagged"]:
        log.info("flagged %s", result)
    return result
