"""API request and response bodies (separate from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.models import Placement

InteractionKind = Literal["click", "rating", "dwell", "skip", "share", "like"]


class ImpressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    placement: Placement
    # A stable id the page keeps (cookie or local storage); hashed before it is stored.
    visitor_id: str | None = Field(default=None, min_length=1, max_length=128)
    simulated: bool = False


class ImpressionRead(BaseModel):
    impression_id: int
    token: str
    image_id: int
    image_url: str
    generator_version: int
    placement: Placement
    expires_at: datetime


class InteractionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=512)
    kind: InteractionKind
    value: float | None = None

    @model_validator(mode="after")
    def _value_fits_kind(self) -> InteractionCreate:
        if self.kind == "rating":
            if self.value is None or self.value != int(self.value) or not 1 <= self.value <= 5:
                raise ValueError("a rating needs an integer value from 1 to 5")
        elif self.kind == "dwell":
            if self.value is None or not 0 <= self.value <= 86_400:
                raise ValueError("dwell needs a value in seconds from 0 to 86400")
        elif self.value is None:
            self.value = 1.0
        elif not -1e6 <= self.value <= 1e6:
            raise ValueError("value is out of range")
        return self


class InteractionRead(BaseModel):
    interaction_id: int
    impression_id: int
    kind: str
    value: float
    duplicate: bool


class ImagePir(BaseModel):
    image_id: int
    batch_index: int
    impressions: int
    positives: float
    pir: float | None
    ci_low: float | None
    ci_high: float | None


class VersionPir(BaseModel):
    version_id: int
    placement: Placement
    images: int
    images_seen: int
    impressions: int
    positives: float
    pir: float | None
    ci_low: float | None
    ci_high: float | None
    excluded_impressions: int


class ComparisonRead(BaseModel):
    before_mean: float
    after_mean: float
    delta: float
    effect_size: float
    p_value: float
    significant: bool


class VersionBase(BaseModel):
    """The fields every view of a generator version shares, read from the ORM row."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    parent_id: int | None
    status: str
    source: str
    batch_size: int
    created_at: datetime
    promoted_at: datetime | None


class VersionRead(VersionBase):
    metrics: dict[str, object]


class ErrorBody(BaseModel):
    error: str
    message: str
    detail: list[dict[str, object]] | None = None


class AdminVersionRow(VersionBase):
    """One generator version as the dashboard lists it."""

    impressions: int
    interactions: int
    pir: VersionPir
    comparison: ComparisonRead | None
    # "recorded": measured by the worker's evaluation; "live": computed for this request.
    comparison_source: Literal["recorded", "live"] | None
    estimated_delta: float | None


class LiveTraffic(BaseModel):
    """Counts per minute over the last `window_minutes`, oldest first."""

    window_minutes: int
    minutes: list[datetime]
    impressions_real: list[int]
    impressions_simulated: list[int]
    interactions_real: list[int]
    interactions_simulated: list[int]


class ServingState(BaseModel):
    serving_version: int | None
    paused_version: int | None
    paused: bool


class JobStarted(BaseModel):
    job_id: str
    task: str
