"""All SQL the service runs, in one place. Functions take a Session and never commit: the
caller's unit of work decides (the request scope commits on success)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Table, case, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

from app.models import (
    GeneratorVersion,
    Image,
    Impression,
    Interaction,
    RunStatus,
    TrainingRun,
    VersionStatus,
    utcnow,
)


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


# The group commit's writes through a Session (SessionWriter, app/writer_session.py; on
# PostgreSQL the service's writer runs app/queries_pg.py's twins): Core statements on the
# tables, one statement for a whole batch of rows, and none of the unit-of-work bookkeeping
# that ORM objects would carry.
IMPRESSIONS: Table = Impression.__table__  # type: ignore[assignment]
INTERACTIONS: Table = Interaction.__table__  # type: ignore[assignment]


class ImageNotInVersion(Exception):
    """An impression row names an image that is not one of its version's: none of the rows
    written with it are stored (the impressions table has no foreign keys, migration 0005)."""


def insert_impressions(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert many impressions in one statement; return their ids in the order of rows.
    Raises ImageNotInVersion, before inserting anything, if a row's image is not in its
    version."""
    if not rows:
        return []
    wanted = {(row["image_id"], row["version_id"]) for row in rows}
    found = session.execute(
        select(Image.id, Image.version_id).where(Image.id.in_({image for image, _ in wanted}))
    )
    if wanted - {(image_id, version_id) for image_id, version_id in found}:
        raise ImageNotInVersion("an impression names an image that is not in its version")
    result = session.execute(
        insert(IMPRESSIONS).returning(IMPRESSIONS.c.id, sort_by_parameter_order=True),
        [{"flagged": False, "created_at": utcnow(), **row} for row in rows],
    )
    return [int(row_id) for row_id in result.scalars()]


def impression_refs(session: Session, impression_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """{impression id: (image id, placement)} for those of the ids that exist."""
    if not impression_ids:
        return {}
    rows = session.execute(
        select(IMPRESSIONS.c.id, IMPRESSIONS.c.image_id, IMPRESSIONS.c.placement).where(
            IMPRESSIONS.c.id.in_(list(impression_ids))
        )
    )
    return {int(row_id): (int(image_id), placement) for row_id, image_id, placement in rows}


InteractionKey = tuple[int, str]  # (impression id, kind): at most one row each


def insert_new_interactions(
    session: Session, rows: Sequence[dict[str, Any]]
) -> dict[InteractionKey, tuple[int, float]]:
    """Insert the rows whose (impression, kind) is not stored yet, in one statement; return
    {(impression id, kind): (id, value)} of the rows this call created. A key stored already,
    or by a concurrent transaction, is left alone (ON CONFLICT DO NOTHING): the unique
    constraint decides who was first."""
    if not rows:
        return {}
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    dialect_insert = postgresql.insert if on_postgresql else sqlite.insert
    statement = (
        dialect_insert(INTERACTIONS)
        .on_conflict_do_nothing(index_elements=["impression_id", "kind"])
        .returning(
            INTERACTIONS.c.impression_id,
            INTERACTIONS.c.kind,
            INTERACTIONS.c.id,
            INTERACTIONS.c.value,
        )
    )
    now = utcnow()
    result = session.execute(statement, [{"created_at": now, **row} for row in rows])
    return {
        (int(impression_id), kind): (int(row_id), float(value))
        for impression_id, kind, row_id, value in result
    }


def interactions_by_key(
    session: Session, keys: Sequence[InteractionKey]
) -> dict[InteractionKey, tuple[int, float]]:
    """The stored rows of these (impression id, kind) keys: {key: (id, value)}."""
    if not keys:
        return {}
    rows = session.execute(
        select(
            INTERACTIONS.c.impression_id,
            INTERACTIONS.c.kind,
            INTERACTIONS.c.id,
            INTERACTIONS.c.value,
        ).where(tuple_(INTERACTIONS.c.impression_id, INTERACTIONS.c.kind).in_(list(keys)))
    )
    return {
        (int(impression_id), kind): (int(row_id), float(value))
        for impression_id, kind, row_id, value in rows
    }


def get_impression(session: Session, impression_id: int) -> Impression | None:
    return session.get(Impression, impression_id)


# Dwell reports count up to this many seconds each: one forgotten tab should not outweigh
# a thousand visits in a guardrail's mean.
DWELL_CAP_SECONDS = 600.0

ImageCountRow = tuple[int, int, int, float, int, int, float, int]


def image_counts(
    session: Session,
    version_id: int,
    *,
    placement: str,
    positive_kinds: Sequence[str],
    rating_weights: Sequence[float],
    include_simulated: bool,
    include_flagged: bool = False,
    since: datetime | None = None,
) -> list[ImageCountRow]:
    """Per-image rows for one version and placement, every image of the batch, seen or not:
    (image id, batch index, impressions, positives, rated, dwell reports, dwell seconds,
    skips). Positives are clicks (positive kinds) or, for ratings, the sum of star weights.
    since: only impressions served from then on (a rollout's decision window)."""
    conditions = [Impression.version_id == version_id, Impression.placement == placement]
    if not include_simulated:
        conditions.append(Impression.simulated.is_(False))
    if not include_flagged:
        conditions.append(Impression.flagged.is_(False))
    if since is not None:
        conditions.append(Impression.created_at >= since)
    weights = {stars: rating_weights[stars - 1] for stars in range(1, 6)}
    capped = case(
        (Interaction.value > DWELL_CAP_SECONDS, DWELL_CAP_SECONDS), else_=Interaction.value
    )
    # One row per counted impression with its interactions folded in (an outer join, so
    # impressions without any count too), then one row per image: a single pass over this
    # version's impressions and their interactions.
    per_impression = (
        select(
            Impression.image_id.label("image_id"),
            func.max(case((Interaction.kind.in_(list(positive_kinds)), 1), else_=0)).label(
                "clicked"
            ),
            func.max(
                case(
                    (
                        Interaction.kind == "rating",
                        case(weights, value=Interaction.value, else_=0.0),
                    ),
                    else_=None,
                )
            ).label("weight"),
            func.max(case((Interaction.kind == "dwell", capped), else_=None)).label("dwell"),
            func.max(case((Interaction.kind == "skip", 1), else_=0)).label("skipped"),
        )
        .outerjoin(Interaction, Interaction.impression_id == Impression.id)
        .where(*conditions)
        .group_by(Impression.id, Impression.image_id)
        .subquery()
    )
    per_image = (
        select(
            per_impression.c.image_id,
            func.count().label("impressions"),
            func.coalesce(func.sum(per_impression.c.clicked), 0).label("clicked"),
            func.count(per_impression.c.weight).label("rated"),
            func.coalesce(func.sum(per_impression.c.weight), 0.0).label("rating_sum"),
            func.count(per_impression.c.dwell).label("dwell_reports"),
            func.coalesce(func.sum(per_impression.c.dwell), 0.0).label("dwell_seconds"),
            func.coalesce(func.sum(per_impression.c.skipped), 0).label("skips"),
        )
        .group_by(per_impression.c.image_id)
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
            func.coalesce(per_image.c.dwell_reports, 0),
            func.coalesce(per_image.c.dwell_seconds, 0.0),
            func.coalesce(per_image.c.skips, 0),
        )
        .outerjoin(per_image, per_image.c.image_id == Image.id)
        .where(Image.version_id == version_id)
        .order_by(Image.batch_index)
    )
    is_rating = placement == "rating"
    return [
        (
            int(image_id),
            int(batch_index),
            int(impressions),
            float(rating_sum) if is_rating else float(clicked),
            int(rated_count),
            int(dwell_reports),
            float(dwell_seconds),
            int(skips),
        )
        for (
            image_id,
            batch_index,
            impressions,
            clicked,
            rated_count,
            rating_sum,
            dwell_reports,
            dwell_seconds,
            skips,
        ) in rows
    ]


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


def fail_runs_still(
    session: Session, run_ids: Sequence[int], *, statuses: Sequence[str], error: str
) -> int:
    """Mark these runs failed if they are still in one of `statuses`, in one conditional
    UPDATE: a worker that has just started one (queued -> running) keeps it."""
    if not run_ids:
        return 0
    result = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id.in_(run_ids), TrainingRun.status.in_(list(statuses)))
        .values(status=RunStatus.failed, finished_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


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


# --- Dashboard, admin actions and exports -------------------------------------------------


def traffic_by_version(
    session: Session, *, include_simulated: bool, placement: str | None = None
) -> dict[int, tuple[int, int]]:
    """Impressions and interactions per version, of one placement or all (None):
    {version_id: (impressions, interactions)}."""
    impression_filter: list[ColumnElement[bool]] = (
        [] if include_simulated else [Impression.simulated.is_(False)]
    )
    if placement is not None:
        impression_filter.append(Impression.placement == placement)
    impressions = dict(
        session.execute(
            select(Impression.version_id, func.count())
            .where(*impression_filter)
            .group_by(Impression.version_id)
        ).all()
    )
    interactions = dict(
        session.execute(
            select(Impression.version_id, func.count())
            .select_from(Interaction)
            .join(Impression, Impression.id == Interaction.impression_id)
            .where(*impression_filter)
            .group_by(Impression.version_id)
        ).all()
    )
    return {
        int(version_id): (int(impressions.get(version_id, 0)), int(interactions.get(version_id, 0)))
        for version_id in set(impressions) | set(interactions)
    }


def images_by_id(session: Session, image_ids: Sequence[int]) -> Sequence[Image]:
    return session.scalars(select(Image).where(Image.id.in_(list(image_ids)))).all()


def pause_serving(session: Session) -> list[int]:
    """Stop serving: the serving version becomes paused (durable across restarts), so the
    picker finds nothing and impressions answer 503. Returns the paused ids."""
    paused = list(
        session.scalars(
            select(GeneratorVersion.id).where(GeneratorVersion.status == VersionStatus.serving)
        )
    )
    if paused:
        session.execute(
            update(GeneratorVersion)
            .where(GeneratorVersion.id.in_(paused))
            .values(status=VersionStatus.paused)
        )
    return paused


def paused_version(session: Session) -> GeneratorVersion | None:
    return session.scalar(
        select(GeneratorVersion)
        .where(GeneratorVersion.status == VersionStatus.paused)
        .order_by(GeneratorVersion.promoted_at.desc(), GeneratorVersion.id.desc())
        .limit(1)
    )


def retire_paused(session: Session, *, keep: int | None = None) -> None:
    """Retire paused versions (but keep), so that a promotion during a pause leaves exactly
    one version serving and nothing to resume."""
    session.execute(
        update(GeneratorVersion)
        .where(GeneratorVersion.status == VersionStatus.paused)
        .where(GeneratorVersion.id != (keep if keep is not None else -1))
        .values(status=VersionStatus.retired, retired_at=utcnow())
    )


def _minute(column: Any, dialect: str) -> ColumnElement[Any]:
    """Whole minutes since the epoch, in SQL, for per-minute counts on SQLite and PostgreSQL."""
    if dialect == "sqlite":
        return func.cast(func.strftime("%s", column), Integer) / 60
    return func.floor(func.extract("epoch", column) / 60)


def traffic_per_minute(session: Session, *, since: datetime) -> list[tuple[str, int, bool, int]]:
    """(table, minute since epoch, simulated, count) for impressions and interactions."""
    dialect = session.get_bind().dialect.name
    result: list[tuple[str, int, bool, int]] = []
    imp_minute = _minute(Impression.created_at, dialect).label("minute")
    for minute, simulated, count in session.execute(
        select(imp_minute, Impression.simulated, func.count())
        .where(Impression.created_at >= since)
        .group_by(imp_minute, Impression.simulated)
    ):
        result.append(("impressions", int(minute), bool(simulated), int(count)))
    int_minute = _minute(Interaction.created_at, dialect).label("minute")
    for minute, simulated, count in session.execute(
        select(int_minute, Impression.simulated, func.count())
        .select_from(Interaction)
        .join(Impression, Impression.id == Interaction.impression_id)
        .where(Interaction.created_at >= since)
        .group_by(int_minute, Impression.simulated)
    ):
        result.append(("interactions", int(minute), bool(simulated), int(count)))
    return result


IMPRESSION_EXPORT_COLUMNS = (
    "impression_id",
    "created_at",
    "version_id",
    "image_id",
    "placement",
    "simulated",
    "flagged",
    "visitor_hash",
)
INTERACTION_EXPORT_COLUMNS = (
    "interaction_id",
    "impression_id",
    "created_at",
    "kind",
    "value",
    "version_id",
    "image_id",
    "placement",
    "simulated",
)


def iter_export_rows(
    session: Session,
    table: str,
    *,
    version_id: int | None,
    simulated: bool | None,
    chunk_rows: int = 5000,
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of impressions or interactions in id order, a chunk at a time (server-side cursor
    where the driver has one), filtered by version and by simulated (None: both)."""
    conditions: list[ColumnElement[bool]] = []
    if version_id is not None:
        conditions.append(Impression.version_id == version_id)
    if simulated is not None:
        conditions.append(Impression.simulated.is_(simulated))
    statement: Executable
    if table == "impressions":
        statement = (
            select(
                Impression.id,
                Impression.created_at,
                Impression.version_id,
                Impression.image_id,
                Impression.placement,
                Impression.simulated,
                Impression.flagged,
                Impression.visitor_hash,
            )
            .where(*conditions)
            .order_by(Impression.id)
        )
    else:
        statement = (
            select(
                Interaction.id,
                Interaction.impression_id,
                Interaction.created_at,
                Interaction.kind,
                Interaction.value,
                Impression.version_id,
                Impression.image_id,
                Impression.placement,
                Impression.simulated,
            )
            .join(Impression, Impression.id == Interaction.impression_id)
            .where(*conditions)
            .order_by(Interaction.id)
        )
    result = session.execute(statement, execution_options={"yield_per": chunk_rows})
    for partition in result.partitions():
        yield [tuple(row) for row in partition]
