"""What the admin dashboard shows and does, shared by its HTML pages and its JSON API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app import aggregates, queries
from app.jobs import JobDispatcher, UnknownTask
from app.models import GeneratorVersion, VersionStatus
from app.schemas import (
    AdminVersionRow,
    ComparisonRead,
    ImagePir,
    JobStarted,
    LiveTraffic,
    ServingState,
    VersionBase,
)
from app.settings import Settings

CYCLE_TASK = "worker.maybe_start_cycle"
# Versions that hold a complete batch and so can be served again.
PROMOTABLE = {VersionStatus.ready, VersionStatus.retired, VersionStatus.paused}


class ActionRefused(Exception):
    """An admin action that cannot be done now; status is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _recorded_comparison(version: GeneratorVersion) -> ComparisonRead | None:
    record = version.metrics.get("comparison")
    if not isinstance(record, dict):
        return None
    try:
        return ComparisonRead.model_validate(record)
    except ValueError:
        return None


def _estimated_delta(version: GeneratorVersion) -> float | None:
    value = version.metrics.get("estimated_delta")
    return float(value) if isinstance(value, int | float) else None


def version_rows(
    session: Session,
    settings: Settings,
    *,
    placement: str,
    include_simulated: bool,
) -> list[AdminVersionRow]:
    """Every version, newest first, with traffic, PIR and the change against its parent."""
    traffic = queries.traffic_by_version(session, include_simulated=include_simulated)
    rows = []
    for version in reversed(queries.list_versions(session)):
        comparison = _recorded_comparison(version)
        source: Any = "recorded" if comparison else None
        if comparison is None and version.parent_id is not None:
            comparison = aggregates.compare_versions(
                session,
                settings,
                version.parent_id,
                version.id,
                placement=placement,
                include_simulated=include_simulated,
            )
            source = "live" if comparison else None
        impressions, interactions = traffic.get(version.id, (0, 0))
        rows.append(
            AdminVersionRow(
                **VersionBase.model_validate(version).model_dump(),
                impressions=impressions,
                interactions=interactions,
                pir=aggregates.summarize_version(
                    session,
                    settings,
                    version.id,
                    placement=placement,
                    include_simulated=include_simulated,
                ),
                comparison=comparison,
                comparison_source=source,
                estimated_delta=_estimated_delta(version),
            )
        )
    return rows


def image_extremes(
    session: Session,
    settings: Settings,
    version_id: int,
    *,
    placement: str,
    include_simulated: bool,
    per_side: int = 8,
) -> tuple[list[ImagePir], list[ImagePir]]:
    """The version's highest-PIR images and its lowest-PIR ones (unseen images last)."""
    counts = aggregates.version_image_counts(
        session, settings, version_id, placement=placement, include_simulated=include_simulated
    )
    seen = sorted(
        (p for p in aggregates.images_pir(counts, placement) if p.pir is not None),
        key=lambda p: (p.pir or 0.0, p.impressions),
    )
    top = list(reversed(seen[-per_side:]))
    bottom = [p for p in seen[:per_side] if p.image_id not in {t.image_id for t in top}]
    return top, bottom


def per_image_pir(
    session: Session,
    settings: Settings,
    version_id: int,
    *,
    placement: str,
    include_simulated: bool,
) -> list[float]:
    counts = aggregates.version_image_counts(
        session, settings, version_id, placement=placement, include_simulated=include_simulated
    )
    return aggregates.per_image_values(counts, placement)


def live_traffic(session: Session, *, window_minutes: int = 30) -> LiveTraffic:
    now = datetime.now(UTC)
    last = int(now.timestamp() // 60)
    first = last - window_minutes + 1
    since = datetime.fromtimestamp(first * 60, UTC)
    series: dict[tuple[str, bool], list[int]] = {
        (table, simulated): [0] * window_minutes
        for table in ("impressions", "interactions")
        for simulated in (False, True)
    }
    for table, minute, simulated, count in queries.traffic_per_minute(session, since=since):
        if first <= minute <= last:
            series[(table, simulated)][minute - first] += count
    return LiveTraffic(
        window_minutes=window_minutes,
        minutes=[since + timedelta(minutes=i) for i in range(window_minutes)],
        impressions_real=series[("impressions", False)],
        impressions_simulated=series[("impressions", True)],
        interactions_real=series[("interactions", False)],
        interactions_simulated=series[("interactions", True)],
    )


def serving_state(session: Session) -> ServingState:
    serving = queries.serving_version(session)
    paused = queries.paused_version(session)
    return ServingState(
        serving_version=serving.id if serving else None,
        paused_version=paused.id if paused else None,
        paused=serving is None and paused is not None,
    )


def start_cycle(jobs: JobDispatcher) -> JobStarted:
    """Ask for a learning cycle now (the job itself refuses if one is already active)."""
    try:
        job_id = jobs.submit(CYCLE_TASK, force=True)
    except (ImportError, UnknownTask) as exc:
        raise ActionRefused(503, "no worker can run learning cycles here") from exc
    return JobStarted(job_id=job_id, task=CYCLE_TASK)


def promote(session: Session, version_id: int) -> ServingState:
    """Serve version_id (a newer one, or an older one to roll back); ends a pause."""
    version = queries.get_version(session, version_id)
    if version is None:
        raise ActionRefused(404, f"generator version {version_id} does not exist")
    if version.status == VersionStatus.serving:
        return serving_state(session)
    if version.status not in PROMOTABLE:
        raise ActionRefused(409, f"version {version_id} is {version.status}; it cannot be served")
    if not version.batch_size and not queries.batch_image_ids(session, version_id):
        raise ActionRefused(409, f"version {version_id} has no images")
    queries.retire_paused(session, keep=None)
    queries.promote_version(session, version_id)
    session.flush()
    return serving_state(session)


def pause(session: Session) -> ServingState:
    if not queries.pause_serving(session):
        raise ActionRefused(409, "nothing is serving")
    session.flush()
    return serving_state(session)


def resume(session: Session) -> ServingState:
    paused = queries.paused_version(session)
    if paused is None:
        raise ActionRefused(409, "serving is not paused")
    return promote(session, paused.id)
