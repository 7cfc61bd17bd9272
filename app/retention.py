"""Retention: raw events of retired versions are deleted once they are old enough, after their
per-image counts are kept in the version's metrics. PIR, comparisons and estimator training
read those counts as if the rows were still there (app/measurement.py reads them); only
row-level exports lose them.

Counts are kept for both placements, for real traffic and for all traffic, under the PIR
definition in force when archived (positive kinds and star weights are recorded with them).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.measurement import ARCHIVE, TRAFFIC, Measurement
from app.models import GeneratorVersion, Impression, Interaction, VersionStatus, utcnow
from app.rollout import holdout_version_id
from app.settings import Settings


def _archive(session: Session, settings: Settings, version_id: int) -> dict[str, Any]:
    placements: dict[str, Any] = {}
    for placement in ("background", "rating"):
        placements[placement] = {}
        for include_simulated, name in TRAFFIC.items():
            measure = Measurement.of(
                settings, placement=placement, include_simulated=include_simulated
            )
            placements[placement][name] = {
                "images": [c.archived_row() for c in measure.live_counts(session, version_id)],
                "excluded": measure.excluded_impressions(session, version_id),
            }
    return {
        "archived_at": utcnow().isoformat(),
        "positive_kinds": list(settings.positive_kinds),
        "rating_weights": list(settings.rating_weights),
        "placements": placements,
    }


def purge_old_events(session: Session, settings: Settings) -> dict[str, int]:
    """Archive counts and delete raw events of versions retired more than retention_days ago.
    Archive and deletion share the caller's transaction: both happen or neither."""
    if settings.retention_days is None:
        return {"versions": 0, "impressions": 0, "interactions": 0}
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    versions = session.scalars(
        select(GeneratorVersion).where(
            GeneratorVersion.status == VersionStatus.retired,
            GeneratorVersion.retired_at <= cutoff,
        )
    ).all()
    purged = {"versions": 0, "impressions": 0, "interactions": 0}
    # The holdout arm serves a retired version: its events are today's traffic.
    holdout = holdout_version_id(session, settings)
    for version in versions:
        if ARCHIVE in version.metrics or version.id == holdout:
            continue
        version.metrics = {**version.metrics, ARCHIVE: _archive(session, settings, version.id)}
        impression_ids = select(Impression.id).where(Impression.version_id == version.id)
        gone = session.execute(
            delete(Interaction).where(Interaction.impression_id.in_(impression_ids))
        )
        purged["interactions"] += int(gone.rowcount or 0)  # type: ignore[attr-defined]
        gone = session.execute(delete(Impression).where(Impression.version_id == version.id))
        purged["impressions"] += int(gone.rowcount or 0)  # type: ignore[attr-defined]
        purged["versions"] += 1
    return purged
