"""PIR of images and versions, and the comparison of a version with its parent: the numbers
the API, the dashboard and the worker's evaluation all report."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app import queries
from app.pir import ImageCounts, image_interval, image_pir, version_pir
from app.retention import archived_counts
from app.schemas import ComparisonRead, ImagePir, VersionPir
from app.settings import Settings
from app.stats import compare


def version_image_counts(
    session: Session,
    settings: Settings,
    version_id: int,
    *,
    placement: str,
    include_simulated: bool,
) -> list[ImageCounts]:
    archived = _archived(session, version_id, placement, include_simulated)
    if archived is not None:
        return archived[0]
    return queries.image_counts(
        session,
        version_id,
        placement=placement,
        positive_kinds=settings.positive_kinds,
        rating_weights=settings.rating_weights,
        include_simulated=include_simulated,
    )


def _archived(
    session: Session, version_id: int, placement: str, include_simulated: bool
) -> tuple[list[ImageCounts], int] | None:
    version = queries.get_version(session, version_id)
    if version is None:
        return None
    return archived_counts(version, placement=placement, include_simulated=include_simulated)


def excluded_impressions(
    session: Session, version_id: int, *, placement: str, include_simulated: bool
) -> int:
    archived = _archived(session, version_id, placement, include_simulated)
    if archived is not None:
        return archived[1]
    return queries.excluded_impressions(
        session, version_id, placement=placement, include_simulated=include_simulated
    )


def images_pir(counts: list[ImageCounts], placement: str) -> list[ImagePir]:
    rows = []
    for c in counts:
        low, high = image_interval(c, placement)
        rows.append(
            ImagePir(
                image_id=c.image_id,
                batch_index=c.batch_index,
                impressions=c.impressions,
                positives=c.positives,
                pir=image_pir(c, placement),
                ci_low=low,
                ci_high=high,
            )
        )
    return rows


def summarize_version(
    session: Session,
    settings: Settings,
    version_id: int,
    *,
    placement: str,
    include_simulated: bool,
) -> VersionPir:
    counts = version_image_counts(
        session, settings, version_id, placement=placement, include_simulated=include_simulated
    )
    mean, low, high = version_pir(counts, placement)
    return VersionPir(
        version_id=version_id,
        placement=placement,  # type: ignore[arg-type]
        images=len(counts),
        images_seen=sum(1 for c in counts if c.impressions),
        impressions=sum(c.impressions for c in counts),
        positives=sum(c.positives for c in counts),
        pir=mean,
        ci_low=low,
        ci_high=high,
        excluded_impressions=excluded_impressions(
            session, version_id, placement=placement, include_simulated=include_simulated
        ),
    )


def per_image_values(counts: list[ImageCounts], placement: str) -> list[float]:
    return [v for v in (image_pir(c, placement) for c in counts) if v is not None]


def compare_versions(
    session: Session,
    settings: Settings,
    before_id: int,
    after_id: int,
    *,
    placement: str,
    include_simulated: bool,
) -> ComparisonRead | None:
    """Welch's t-test on per-image PIR of two versions; None until both have data."""
    before = per_image_values(
        version_image_counts(
            session, settings, before_id, placement=placement, include_simulated=include_simulated
        ),
        placement,
    )
    after = per_image_values(
        version_image_counts(
            session, settings, after_id, placement=placement, include_simulated=include_simulated
        ),
        placement,
    )
    if len(before) < 2 or len(after) < 2:
        return None
    result = compare(before, after)
    return ComparisonRead(
        before_mean=result.before.mean,
        after_mean=result.after.mean,
        delta=result.delta,
        effect_size=result.effect_size,
        p_value=result.p_value,
        significant=result.significant,
    )
