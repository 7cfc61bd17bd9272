"""API request and response bodies (separate from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.models import Placement

InteractionKind = Literal["click", "rating", "dwell", "skip", "share", "like"]


class ImpressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    placement: Placement
    # A stable id the page keeps (cookie or local storage); hashed before it is stored.
    visitor_id: str | None = Field(default=None, min_length=1, max_length=128)
    simulated: StrictBool = Field(
        default=False,
        description="traffic of simulated users, left out of the real-traffic numbers; "
        "accepted only with the X-Pirloop-Simulation-Key header (403 without it)",
    )


class ImpressionRead(BaseModel):
    impression_id: int
    token: str
    image_id: int
    image_url: str = Field(
        description="the image: absolute on the service's PIRLOOP_PUBLIC_URL when one is "
        "set, else relative to the service (resolve it against the URL this answer came from)"
    )
    generator_version: int
    placement: Placement
    expires_at: datetime


# What `value` may be for each kind; the validator and the schema both read these.
RATING_STARS = (1, 5)
DWELL_SECONDS = (0, 86_400)
VALUE_RANGE = (-1e6, 1e6)


def _value_rules(schema: dict[str, Any]) -> None:
    """The validator's per-kind rules in the JSON schema (if/then), so that a request the
    schema admits is one the service accepts."""
    schema["allOf"] = [
        {
            "if": {"properties": {"kind": {"const": "rating"}}, "required": ["kind"]},
            "then": {
                "properties": {
                    "value": {
                        "type": "integer",
                        "minimum": RATING_STARS[0],
                        "maximum": RATING_STARS[1],
                    }
                },
                "required": ["value"],
            },
        },
        {
            "if": {"properties": {"kind": {"const": "dwell"}}, "required": ["kind"]},
            "then": {
                "properties": {
                    "value": {
                        "type": "number",
                        "minimum": DWELL_SECONDS[0],
                        "maximum": DWELL_SECONDS[1],
                    }
                },
                "required": ["value"],
            },
        },
    ]


class InteractionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_value_rules)

    token: str = Field(min_length=1, max_length=512)
    kind: InteractionKind
    # Finite only: Python's JSON parser reads Infinity, NaN and 1e400 as non-finite floats,
    # and "inf" is a float to pydantic; each is refused here by name.
    value: float | None = Field(
        default=None,
        ge=VALUE_RANGE[0],
        le=VALUE_RANGE[1],
        allow_inf_nan=False,
        description="rating: whole stars 1 to 5; dwell: seconds 0 to 86400; others: 1 if unset",
    )

    @model_validator(mode="after")
    def _value_fits_kind(self) -> InteractionCreate:
        if self.kind == "rating":
            low, high = RATING_STARS
            if self.value is None or self.value != int(self.value) or not low <= self.value <= high:
                raise ValueError("a rating needs an integer value from 1 to 5")
        elif self.kind == "dwell":
            low, high = DWELL_SECONDS
            if self.value is None or not low <= self.value <= high:
                raise ValueError("dwell needs a value in seconds from 0 to 86400")
        elif self.value is None:
            self.value = 1.0
        return self


class InteractionRead(BaseModel):
    interaction_id: int
    impression_id: int
    kind: str
    value: float
    duplicate: bool


# Interactions one POST /v1/interactions/batch may carry: a page's queue or a collector's
# buffer fits, while one request's writes stay a small share of one group commit.
MAX_BATCH_INTERACTIONS = 500


def _batch_size(items: list[Any]) -> list[Any]:
    if not 1 <= len(items) <= MAX_BATCH_INTERACTIONS:
        raise PydanticCustomError(
            "batch_size",
            "a batch holds from 1 to {limit} interactions, this one has {count}",
            {"limit": MAX_BATCH_INTERACTIONS, "count": len(items)},
        )
    return items


class InteractionBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Each item is an InteractionCreate, checked one by one when the batch is recorded
    # (app/recording.py): a bad item is refused in its own result while the others are
    # stored, so the request takes any JSON value as an item, and the schema says so.
    interactions: Annotated[
        list[
            Annotated[
                Any,
                WithJsonSchema(
                    {
                        "description": "an InteractionCreate; any other value is refused in "
                        "its own result, not by the request"
                    }
                ),
            ]
        ],
        AfterValidator(_batch_size),
        Field(json_schema_extra={"minItems": 1, "maxItems": MAX_BATCH_INTERACTIONS}),
    ]


class ItemError(BaseModel):
    """Why one item of a batch was not stored: the code and message the single endpoint
    would have answered for it."""

    error: str
    message: str


class InteractionResult(BaseModel):
    index: int
    status: Literal["created", "duplicate", "rejected"]
    # Set for "created" and "duplicate" (the first value stored stands for a duplicate).
    interaction_id: int | None = None
    impression_id: int | None = None
    kind: str | None = None
    value: float | None = None
    # Set for "rejected".
    error: ItemError | None = None


class InteractionBatchRead(BaseModel):
    results: list[InteractionResult]
    created: int
    duplicate: int
    rejected: int


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
    # Impressions the PIR rests on: the rated ones for ratings, every impression otherwise.
    trials: int = 0
    positives: float
    pir: float | None
    # 95%, inside [0, 1]; wide when few images or impressions back it.
    ci_low: float | None
    ci_high: float | None
    excluded_impressions: int


class ComparisonRead(BaseModel):
    before_mean: float
    after_mean: float
    delta: float
    effect_size: float
    p_value: float
    # Welch's p < 0.001 with at least 20 images seen on each side.
    significant: bool
    images_before: int = 0
    images_after: int = 0
    # What was measured: the placement and whether simulated traffic counted.
    placement: Placement | None = None
    include_simulated: bool | None = None


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


class ImageQuality(BaseModel):
    """How a version's images compare with real landscapes, measured by the worker when it made
    the version, on the same 500 latents for every version."""

    realism_kid: float = Field(
        description="kernel inception distance to held-out real landscapes in the reference "
        "network's features (Bińkowski et al. 2018; unbiased, about 0 for real-looking images, "
        "lower is more realistic)"
    )
    realism_kid_se: float = Field(description="standard error of realism_kid (jackknife)")
    diversity: float = Field(
        description="mean pairwise RMS distance of 8x8-pooled images (0: all identical)"
    )


class AdminVersionRow(VersionBase):
    """One generator version as the dashboard lists it."""

    impressions: int
    interactions: int
    pir: VersionPir
    comparison: ComparisonRead | None
    # "rollout": against its champion on the same traffic at the same time (the rollout's
    # decision window); "before_after": against its parent's earlier traffic (confounded
    # with time; shown only where no rollout compared them).
    comparison_source: Literal["rollout", "before_after"] | None
    estimated_delta: float | None
    quality: ImageQuality | None = None


class LiveTraffic(BaseModel):
    """Counts per minute over the last `window_minutes`, oldest first."""

    window_minutes: int
    minutes: list[datetime]
    impressions_real: list[int]
    impressions_simulated: list[int]
    interactions_real: list[int]
    interactions_simulated: list[int]


class CycleState(BaseModel):
    """A learning cycle queued or running, with its progress."""

    run_id: int
    status: str
    version_id: int | None
    phase: str | None
    step: int | None
    total: int | None
    created_at: datetime
    started_at: datetime | None


class ServingState(BaseModel):
    serving_version: int | None = Field(description="the champion")
    paused_version: int | None
    paused: bool
    candidate_version: int | None = Field(description="served beside the champion in a rollout")
    rollout_id: int | None
    holdout_version: int | None
    arms: list[ArmShare] = Field(description="what impressions show now, with their shares")
    learning_held: str | None = Field(
        description="why automatic cycles are held (a manual rollback), or null"
    )
    cycle: CycleState | None


class ArmShare(BaseModel):
    version_id: int
    role: Literal["champion", "candidate", "holdout"]
    share: float


class RolloutCheckRead(BaseModel):
    """One look at a rollout: the always-valid interval on the candidate's change then."""

    checked_at: datetime
    outcome: str
    champion_impressions: int
    candidate_impressions: int
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None


class RolloutRead(BaseModel):
    """A candidate served beside the champion, and the decision about it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    champion_id: int
    candidate_id: int
    status: Literal["running", "promoted", "rejected", "cancelled"]
    candidate_share: float
    ramp_share: float
    ramp_until: datetime
    started_at: datetime
    decided_at: datetime | None
    reason: str | None = Field(description="why it was decided (or why it goes on)")
    manual: bool = Field(description="decided by an operator rather than by the test")
    policy: dict[str, object] = Field(description="alpha, budgets and mixing scale applied")
    latest: dict[str, object] = Field(
        description="the last look's evidence: arms, always-valid interval, p-value, "
        "e-value, guardrail checks, sample-ratio check"
    )


class RolloutDetail(RolloutRead):
    checks: list[RolloutCheckRead]


class HoldoutGain(BaseModel):
    """The champion against the holdout on today's traffic: the lineage's cumulative gain."""

    holdout_version: int
    champion_version: int
    since: datetime
    holdout_impressions: int
    champion_impressions: int
    delta: float | None
    ci_low: float | None
    ci_high: float | None


class JobStarted(BaseModel):
    job_id: str
    task: str
    message: str = ""
