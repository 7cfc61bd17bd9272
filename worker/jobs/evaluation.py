"""Measuring a served version against its parent from the logged data."""

from __future__ import annotations

import logging
from typing import Any

from app import aggregates, queries
from app.database import session_scope
from app.models import utcnow
from worker.jobs.context import JobContext, job_context

log = logging.getLogger(__name__)


def evaluation_due(ctx: JobContext, version_id: int) -> bool:
    """A child version that has reached its impression target and has no comparison yet."""
    settings = ctx.settings
    with session_scope(ctx.sessions) as session:
        version = queries.get_version(session, version_id)
        if version is None or version.parent_id is None or "comparison" in version.metrics:
            return False
        counts = aggregates.version_image_counts(
            session,
            settings,
            version_id,
            placement=settings.learning_placement,
            include_simulated=settings.use_simulated_traffic,
        )
    rating = settings.learning_placement == "rating"
    trials = [c.rated if rating else c.impressions for c in counts]
    return bool(trials) and min(trials) >= settings.target_impressions_per_image


def evaluate_version(version_id: int) -> dict[str, Any]:
    """Record the comparison of version_id with its parent: per-image PIR, Welch's t-test,
    effect size, next to the estimator's predicted change."""
    ctx = job_context()
    settings = ctx.settings
    with session_scope(ctx.sessions) as session:
        version = queries.get_version(session, version_id)
        if version is None or version.parent_id is None:
            return {"version_id": version_id, "evaluated": False, "reason": "no parent"}
        comparison = aggregates.compare_versions(
            session,
            settings,
            version.parent_id,
            version_id,
            placement=settings.learning_placement,
            include_simulated=settings.use_simulated_traffic,
        )
        if comparison is None:
            return {"version_id": version_id, "evaluated": False, "reason": "too little data"}
        summary = aggregates.summarize_version(
            session,
            settings,
            version_id,
            placement=settings.learning_placement,
            include_simulated=settings.use_simulated_traffic,
        )
        record = {
            **comparison.model_dump(),
            "placement": settings.learning_placement,
            "impressions": summary.impressions,
            "simulated_counted": settings.use_simulated_traffic,
            "measured_at": utcnow().isoformat(),
        }
        version.metrics = {**version.metrics, "comparison": record}
    log.info(
        "version %s vs parent: PIR %.4f -> %.4f, d=%.2f, p=%.3g",
        version_id, record["before_mean"], record["after_mean"],
        record["effect_size"], record["p_value"],
    )  # fmt: skip
    return {"version_id": version_id, "evaluated": True, **record}
