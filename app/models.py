"""ORM models: what pirloop stores. API schemas live in app/schemas.py."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out on every database: SQLite keeps no zone, and a naive
    time in an API response is ambiguous (and not an RFC 3339 date-time)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: UTCDateTime(),
    }


class VersionStatus(enum.StrEnum):
    training = "training"
    ready = "ready"
    # The champion: what every impression outside a rollout's candidate arm shows.
    serving = "serving"
    # A tuned generator served beside the champion while a rollout decides about it.
    candidate = "candidate"
    # Was serving when an admin paused serving; resuming serves it again.
    paused = "paused"
    retired = "retired"
    failed = "failed"


class Placement(enum.StrEnum):
    background = "background"
    rating = "rating"


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class GeneratorVersion(Base):
    __tablename__ = "generator_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("generator_versions.id"))
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.training)
    # Where the images came from: a preset name, or "placeholder" before any model exists.
    source: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint_key: Mapped[str | None] = mapped_column(String(255))
    batch_size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]

    images: Mapped[list[Image]] = relationship(back_populates="version", lazy="raise")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("version_id", "batch_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("generator_versions.id"), index=True)
    batch_index: Mapped[int] = mapped_column(Integer)
    # The latent vector is a deterministic function of the seed, so the seed is enough.
    latent_seed: Mapped[int] = mapped_column(BigInteger)
    png: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    version: Mapped[GeneratorVersion] = relationship(back_populates="images", lazy="raise")


class Impression(Base):
    __tablename__ = "impressions"
    __table_args__ = (
        # The hot aggregate: per-image counts within one version.
        Index("ix_impressions_version_image", "version_id", "image_id"),
        Index("ix_impressions_created_at", "created_at"),
        Index("ix_impressions_visitor", "visitor_hash"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Not foreign keys (migration 0005): each check locked the image's and the version's row,
    # which every writer shares. The group commit inserts a row only if its image belongs to
    # its version (app/queries_pg.py, app/queries.py); images and versions are never deleted.
    image_id: Mapped[int] = mapped_column(Integer)
    # Denormalised from the image so per-version aggregates need no join.
    version_id: Mapped[int] = mapped_column(Integer)
    placement: Mapped[str] = mapped_column(String(16))
    visitor_hash: Mapped[str] = mapped_column(String(64))
    # Salted hash of the connection's address and user agent, whatever visitor id the page
    # sent: the bot rules group by it too, so rotating visitor ids hides nothing (app/abuse.py).
    # Null for impressions logged before it existed.
    client_hash: Mapped[str | None] = mapped_column(String(64))
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Interaction(Base):
    __tablename__ = "interactions"
    # One interaction of each kind per impression: repeats are idempotent, one rating each.
    __table_args__ = (UniqueConstraint("impression_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    impression_id: Mapped[int] = mapped_column(ForeignKey("impressions.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


ACTIVE_CYCLE = "kind = 'cycle' AND status IN ('queued', 'running')"


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (
        # At most one learning cycle queued or running, enforced by the database itself, so
        # several beats or workers racing to start one cannot both succeed.
        Index(
            "uq_training_runs_one_active_cycle",
            "kind",
            unique=True,
            postgresql_where=text(ACTIVE_CYCLE),
            sqlite_where=text(ACTIVE_CYCLE),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.queued, index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("generator_versions.id"))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class RolloutStatus(enum.StrEnum):
    running = "running"
    promoted = "promoted"
    rejected = "rejected"
    # Ended by an operator without a verdict (a rollback, or the candidate's rollout stopped).
    cancelled = "cancelled"


ACTIVE_ROLLOUT = "status = 'running'"


class Rollout(Base):
    """A candidate served beside the champion on the same traffic until a decision.

    The split is random per impression in every API process. Impressions before ramp_until
    are served at ramp_share and left out of the decision (burn-in: a split that changes over
    time would correlate the arm with drift, and it also absorbs the first novelty)."""

    __tablename__ = "rollouts"
    __table_args__ = (
        # At most one candidate under evaluation, enforced by the database itself.
        Index(
            "uq_rollouts_one_running",
            "status",
            unique=True,
            postgresql_where=text(ACTIVE_ROLLOUT),
            sqlite_where=text(ACTIVE_ROLLOUT),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    champion_id: Mapped[int] = mapped_column(ForeignKey("generator_versions.id"))
    candidate_id: Mapped[int] = mapped_column(ForeignKey("generator_versions.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RolloutStatus.running, index=True)
    candidate_share: Mapped[float] = mapped_column(Float)
    ramp_share: Mapped[float] = mapped_column(Float)
    ramp_until: Mapped[datetime]
    # The decision policy in force (alpha, budgets), so the audit log says what was applied.
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The last look's evidence, for the live view; every look that mattered is in the checks.
    latest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]


class RolloutCheck(Base):
    """One look at a running rollout: the evidence then (the interval narrowing over time)."""

    __tablename__ = "rollout_checks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), index=True
    )
    outcome: Mapped[str] = mapped_column(String(16))
    champion_impressions: Mapped[int] = mapped_column(Integer)
    candidate_impressions: Mapped[int] = mapped_column(Integer)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServiceFlag(Base):
    """Operator state that outlasts restarts: e.g. learning held after a manual rollback."""

    __tablename__ = "service_flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """Binary artifacts (checkpoints) for the database-backed artifact store."""

    __tablename__ = "artifacts"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AdminSession(Base):
    """A dashboard sign-in (app/admin_auth.py). The cookie holds a random id; only its SHA-256
    is stored. Valid until expires_at unless revoked (signed out) or made with another admin
    token than today's (token_fingerprint, an HMAC: rotating the token ends it)."""

    __tablename__ = "admin_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]
