"""All SQL the service runs, in one place. Functions take a Session and never commit: the
caller's unit of work decides (the request scope commits on success)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.models import (
    GeneratorVersion,
    Image,
    Impression,
    Interaction,
    TrainingRun,
    VersionStatus,
    utcnow,
)
from app.pir import ImageCounts, rating_weight_case


def serving_version(session: Session) -> GeneratorVersion | None:
    return session.scalar(
        select(GeneratorVersion)
        .where(GeneratorVersion.status == VersionStatus.serving)
        .order_by(GeneratorVersion.promoted_at.desc(), GeneratorVersion.id.desc())
        .limit(1)
    )


def get_version(session: Session, version_id: int) -> GeneratorVersion | None:
    return session.get(GeneratorVersion, version_id)


def list_versions(session: Session) -> Sequence[GeneratorVersion]:
    return session.scalars(select(GeneratorVersion).order_by(GeneratorVersion.id)).all()


def count_versions(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(GeneratorVersion)) or 0


def create_version(
    session: Session,
    *,
    source: str,
    parent_id: int | None = None,
    config: dict[str, Any] | None = None,
    status: VersionStatus = VersionStatus.training,
) -> GeneratorVersion:
    version = GeneratorVersion(
        source=source, parent_id=parent_id, config=config or {}, status=status, metrics={}
    )
    session.add(version)
    session.flush()
    return version


def add_images(session: Session, version_id: int, images: Sequence[dict[str, Any]]) -> int:
    """Store a batch; rows are dicts with batch_index, latent_seed, png, content_hash, w, h."""
    session.add_all(Image(version_id=version_id, **row) for row in images)
    session.flush()
    return len(images)


def batch_image_ids(session: Session, version_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Image.id).where(Image.version_id == version_id).order_by(Image.batch_index)
        )
    )


def get_image(session: Session, image_id: int) -> Image | None:
    return session.get(Image, image_id)


def promote_version(session: Session, version_id: int) -> None:
    """Make version_id the only serving version, in one transaction."""
    now = utcnow()
    session.execute(
        update(GeneratorVersion)
        .where(GeneratorVersion.status == VersionStatus.serving)
        .where(GeneratorVersion.id != version_id)
        .values(status=VersionStatus.retired, retired_at=now)
    )
    session.execute(
        update(GeneratorVersion)
        .where(GeneratorVersion.id == version_id)
        .values(status=VersionStatus.serving, promoted_at=now, retired_at=None)
    )


def impression_counts_by_image(session: Session, version_id: int) -> dict[int, int]:
    rows = session.execute(
        select(Impression.image_id, func.count())
        .where(Impression.version_id == version_id)
        .group_by(Impression.image_id)
    )
    return {int(image_id): int(count) for image_id, count in rows.all()}


def insert_impression(
    session: Session,
    *,
    image_id: int,
    version_id: int,
    placement: str,
    visitor_hash: str,
    simulated: bool,
) -> Impression:
    impression = Impression(
        image_id=image_id,
        version_id=version_id,
        placement=placement,
        visitor_hash=visitor_hash,
        simulated=simulated,
        flagged=False,
    )
    session.add(impression)
    session.flush()
    return impression


def get_impression(session: Session, impression_id: int) -> Impression | None:
    return session.get(Impression, impression_id)


def find_interaction(session: Session, impression_id: int, kind: str) -> Interaction | None:
    return session.scalar(
        select(Interaction).where(
            Interaction.impression_id == impression_id, Interaction.kind == kind
        )
    )


def insert_interaction_once(
    session: Session, *, impression_id: int, kind: str, value: float
) -> tuple[Interaction, bool]:
    """Insert unless (impression, kind) exists; returns (row, created). Safe under races: the
    unique constraint decides, and the loser reads the winner's row."""
    existing = find_interaction(session, impression_id, kind)
    if existing is not None:
        return existing, False
    row = Interaction(impression_id=impression_id, kind=kind, value=value)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        winner = find_interaction(session, impression_id, kind)
        if winner is None:
            raise
        return winner, False
    return row, True


def image_counts(
    session: Session,
    version_id: int,
    *,
    placement: str,
    positive_kinds: Sequence[str],
    rating_weights: Sequence[float],
    include_simulated: bool,
    include_flagged: bool = False,
) -> list[ImageCounts]:
    """Per-image impressions and positives for one version and placement (every image of the
    batch, seen or not)."""
    positive = (
        select(Interaction.impression_id.label("impression_id"))
        .where(Interaction.kind.in_(list(positive_kinds)))
        .group_by(Interaction.impression_id)
        .subquery()
    )
    weight = case(rating_weight_case(list(rating_weights)), value=Interaction.value, else_=0.0)
    rated = (
        select(
            Interaction.impression_id.label("impression_id"),
            func.max(weight).label("weight"),
        )
        .where(Interaction.kind == "rating")
        .group_by(Interaction.impression_id)
        .subquery()
    )
    conditions = [Impression.version_id == version_id, Impression.placement == placement]
    if not include_simulated:
        conditions.append(Impression.simulated.is_(False))
    if not include_flagged:
        conditions.append(Impression.flagged.is_(False))
    per_image = (
        select(
            Impression.image_id.label("image_id"),
            func.count().label("impressions"),
            func.count(positive.c.impression_id).label("clicked"),
            func.count(rated.c.impression_id).label("rated"),
            func.coalesce(func.sum(rated.c.weight), 0.0).label("rating_sum"),
        )
        .outerjoin(positive, positive.c.impression_id == Impression.id)
        .outerjoin(rated, rated.c.impression_id == Impression.id)
        .where(*conditions)
        .group_by(Impression.image_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Image.id,
            Image.batch_index,
            func.coalesce(per_image.c.impressions, 0),
            func.coalesce(per_image.c.clicked, 0),
            func.coalesce(per_image.c.rated, 0),
            func.coalesce(per_image.c.rating_sum, 0.0),
        )
        .outerjoin(per_image, per_image.c.image_id == Image.id)
        .where(Image.version_id == version_id)
        .order_by(Image.batch_index)
    )
    result = []
    for image_id, batch_index, impressions, clicked, rated_count, rating_sum in rows:
        is_rating = placement == "rating"
        result.append(
            ImageCounts(
                image_id=image_id,
                batch_index=batch_index,
                impressions=int(impressions),
                positives=float(rating_sum) if is_rating else float(clicked),
                rated=int(rated_count),
            )
        )
    return result


def excluded_impressions(
    session: Session, version_id: int, *, placement: str, include_simulated: bool
) -> int:
    excluded: ColumnElement[bool] = Impression.flagged.is_(True)
    if not include_simulated:
        excluded = excluded | Impression.simulated.is_(True)
    return (
        session.scalar(
            select(func.count())
            .select_from(Impression)
            .where(Impression.version_id == version_id, Impression.placement == placement)
            .where(excluded)
        )
        or 0
    )


def create_run(
    session: Session, *, kind: str, version_id: int | None, params: dict[str, Any]
) -> TrainingRun:
    run = TrainingRun(kind=kind, version_id=version_id, params=params, metrics={})
    session.add(run)
    session.flush()
    return run


def list_runs(session: Session, *, limit: int = 50) -> Sequence[TrainingRun]:
    return session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)).all()


def active_runs(session: Session, kind: str) -> Sequence[TrainingRun]:
    return session.scalars(
        select(TrainingRun)
        .where(TrainingRun.kind == kind)
        .where(TrainingRun.status.in_(["queued", "running"]))
    ).all()


def mark_run(
    session: Session,
    run: TrainingRun,
    *,
    status: str,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    now: datetime = utcnow()
    run.status = status
    if status == "running":
        run.started_at = now
        run.attempts += 1
    if status in ("succeeded", "failed"):
        run.finished_at = now
    if metrics is not None:
        run.metrics = metrics
    run.error = error


def batch_pngs(session: Session, version_id: int) -> list[bytes]:
    return [
        bytes(png)
        for png in session.scalars(
            select(Image.png).where(Image.version_id == version_id).order_by(Image.batch_index)
        )
    ]
