"""The one home of measurement: what PIR is, which traffic counts, how per-image counts are
read (live from the log, or archived by retention), when an impression target is reached,
and how two sets of images compare. The cycle, the training set, the rollout decision, the
dashboard, the API and retention all read through here, so changing what PIR means is one edit.

Background placement: share of impressions with at least one positive interaction (clicks by
default). Rating placement: mean star weight over rated impressions, (stars - 1) / 4 by default.
Both lie in [0, 1]. Guardrails: mean dwell seconds per dwell report (backgrounds, higher is
better) and the share of rating prompts skipped (ratings, lower is better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import queries
from app.decision import MetricArms
from app.models import GeneratorVersion
from app.schemas import ComparisonRead, ImagePir, VersionPir
from app.sequential import ArmSummary, summarize_arm
from app.settings import Settings
from app.stats import compare, mean_rate_interval, proportion_interval

# Where retention keeps a version's counts once its raw events are deleted (app/retention.py).
ARCHIVE = "archived_counts"
TRAFFIC = {False: "real", True: "all"}
# Fewest images on each side before a fixed-horizon comparison may be called significant: a
# t-test over a handful of images is noise (the rollout's own minimum, ROLLOUT_MIN_IMAGES_PER_ARM,
# has the same default).
MIN_IMAGES_FOR_SIGNIFICANCE = 20


@dataclass(frozen=True)
class ImageCounts:
    image_id: int
    batch_index: int
    impressions: int  # impressions of this placement that count (not flagged, etc.)
    positives: float  # positive impressions, or the sum of star weights for ratings
    rated: int  # impressions with a rating (the rating PIR's denominator)
    # Guardrails (not archived by retention before they existed: 0 then).
    dwell_reports: int = 0
    dwell_seconds: float = 0.0
    skips: int = 0

    def trials(self, placement: str) -> int:
        """The PIR's denominator: rated impressions for ratings, impressions otherwise."""
        return self.rated if placement == "rating" else self.impressions

    def pir(self, placement: str) -> float | None:
        trials = self.trials(placement)
        return self.positives / trials if trials else None

    def interval(self, placement: str) -> tuple[float | None, float | None]:
        trials = self.trials(placement)
        if not trials:
            return (None, None)
        return proportion_interval(self.positives, trials)

    def archived_row(self) -> list[Any]:
        return [
            self.image_id,
            self.batch_index,
            self.impressions,
            self.positives,
            self.rated,
            self.dwell_reports,
            self.dwell_seconds,
            self.skips,
        ]


@dataclass(frozen=True)
class Measurement:
    """One way of measuring: a placement, which traffic counts, and the PIR definition."""

    placement: str
    include_simulated: bool
    positive_kinds: tuple[str, ...]
    rating_weights: tuple[float, ...]

    @classmethod
    def of(cls, settings: Settings, *, placement: str, include_simulated: bool) -> Measurement:
        return cls(
            placement=str(placement),
            include_simulated=include_simulated,
            positive_kinds=tuple(settings.positive_kinds),
            rating_weights=tuple(settings.rating_weights),
        )

    @classmethod
    def learning(cls, settings: Settings) -> Measurement:
        """What the loop learns and decides from."""
        return cls.of(
            settings,
            placement=settings.learning_placement,
            include_simulated=settings.use_simulated_traffic,
        )

    # --- Reading counts ---------------------------------------------------------------

    def live_counts(
        self, session: Session, version_id: int, *, since: datetime | None = None
    ) -> list[ImageCounts]:
        """Counts from the raw log, every image of the version (seen or not)."""
        return [
            ImageCounts(*row)
            for row in queries.image_counts(
                session,
                version_id,
                placement=self.placement,
                positive_kinds=self.positive_kinds,
                rating_weights=self.rating_weights,
                include_simulated=self.include_simulated,
                since=since,
            )
        ]

    def _archived(self, version: GeneratorVersion | None) -> tuple[list[ImageCounts], int] | None:
        archive = version.metrics.get(ARCHIVE) if version is not None else None
        if not archive:
            return None
        entry = archive["placements"][self.placement][TRAFFIC[self.include_simulated]]
        return [ImageCounts(*row) for row in entry["images"]], int(entry["excluded"])

    def counts(self, session: Session, version_id: int) -> list[ImageCounts]:
        """Per-image counts of a version, archived ones if retention deleted its events."""
        archived = self._archived(queries.get_version(session, version_id))
        return archived[0] if archived is not None else self.live_counts(session, version_id)

    def excluded_impressions(self, session: Session, version_id: int) -> int:
        archived = self._archived(queries.get_version(session, version_id))
        if archived is not None:
            return archived[1]
        return queries.excluded_impressions(
            session,
            version_id,
            placement=self.placement,
            include_simulated=self.include_simulated,
        )

    # --- Per-image and per-version figures --------------------------------------------

    def pir_values(self, counts: Sequence[ImageCounts]) -> list[float]:
        """PIR of every image seen."""
        return [v for v in (c.pir(self.placement) for c in counts) if v is not None]

    def fewest_trials(self, counts: Sequence[ImageCounts]) -> int:
        return min((c.trials(self.placement) for c in counts), default=0)

    def images_seen(self, counts: Sequence[ImageCounts]) -> int:
        return sum(1 for c in counts if c.trials(self.placement) > 0)

    def target_reached(self, counts: Sequence[ImageCounts], target: int) -> bool:
        """Every image of the set has `target` counted trials."""
        return bool(counts) and self.fewest_trials(counts) >= target

    def images_pir(self, counts: Sequence[ImageCounts]) -> list[ImagePir]:
        rows = []
        for c in counts:
            low, high = c.interval(self.placement)
            rows.append(
                ImagePir(
                    image_id=c.image_id,
                    batch_index=c.batch_index,
                    impressions=c.impressions,
                    positives=c.positives,
                    pir=c.pir(self.placement),
                    ci_low=low,
                    ci_high=high,
                )
            )
        return rows

    def summarize_version(self, session: Session, version_id: int) -> VersionPir:
        """Mean per-image PIR over images seen, with a 95% interval inside [0, 1] that widens
        with few images or few impressions (app.stats.mean_rate_interval)."""
        counts = self.counts(session, version_id)
        values = self.pir_values(counts)
        trials = sum(c.trials(self.placement) for c in counts)
        positives = sum(c.positives for c in counts)
        low, high = (
            mean_rate_interval(values, positives=positives, trials=trials)
            if values
            else (None, None)
        )
        return VersionPir(
            version_id=version_id,
            placement=self.placement,  # type: ignore[arg-type]
            images=len(counts),
            images_seen=self.images_seen(counts),
            impressions=sum(c.impressions for c in counts),
            trials=trials,
            positives=positives,
            pir=sum(values) / len(values) if values else None,
            ci_low=low,
            ci_high=high,
            excluded_impressions=self.excluded_impressions(session, version_id),
        )

    def compare_versions(
        self,
        session: Session,
        before_id: int,
        after_id: int,
        *,
        since: datetime | None = None,
    ) -> ComparisonRead | None:
        """Welch's t-test on per-image PIR of two versions; None until both have data. Over
        all their traffic (a before/after report, confounded with time when they were served
        one after the other), or from `since` on (a rollout's window: the same traffic at the
        same time). A fixed-horizon summary: decisions use the rollout's sequential test.
        Never significant with fewer than MIN_IMAGES_FOR_SIGNIFICANCE images on a side."""
        if since is None:
            before = self.pir_values(self.counts(session, before_id))
            after = self.pir_values(self.counts(session, after_id))
        else:
            before = self.pir_values(self.live_counts(session, before_id, since=since))
            after = self.pir_values(self.live_counts(session, after_id, since=since))
        if len(before) < 2 or len(after) < 2:
            return None
        result = compare(before, after)
        enough = min(len(before), len(after)) >= MIN_IMAGES_FOR_SIGNIFICANCE
        return ComparisonRead(
            before_mean=result.before.mean,
            after_mean=result.after.mean,
            delta=result.delta,
            effect_size=result.effect_size,
            p_value=result.p_value,
            significant=result.significant and enough,
            images_before=len(before),
            images_after=len(after),
            placement=self.placement,  # type: ignore[arg-type]
            include_simulated=self.include_simulated,
        )

    # --- Arms of a rollout --------------------------------------------------------------

    def primary_arm(self, counts: Sequence[ImageCounts]) -> ArmSummary:
        return summarize_arm(
            [c.positives for c in counts],
            [c.trials(self.placement) for c in counts],
            bounded=True,
        )

    def guardrail_arms(self, counts: Sequence[ImageCounts]) -> dict[str, tuple[ArmSummary, bool]]:
        """{guardrail name: (arm summary, higher is better)} for this placement."""
        if self.placement == "rating":
            skip = summarize_arm(
                [float(c.skips) for c in counts], [c.impressions for c in counts], bounded=True
            )
            return {"skip_rate": (skip, False)}
        dwell = summarize_arm(
            [c.dwell_seconds for c in counts], [c.dwell_reports for c in counts], bounded=False
        )
        return {"dwell_seconds": (dwell, True)}

    def metric_arms(
        self, champion: Sequence[ImageCounts], candidate: Sequence[ImageCounts]
    ) -> tuple[MetricArms, list[MetricArms]]:
        """The primary metric (PIR) and the guardrails, each on both arms."""
        primary = MetricArms("pir", self.primary_arm(champion), self.primary_arm(candidate))
        champion_guards = self.guardrail_arms(champion)
        candidate_guards = self.guardrail_arms(candidate)
        guardrails = [
            MetricArms(name, arm, candidate_guards[name][0], higher_is_better)
            for name, (arm, higher_is_better) in champion_guards.items()
            # A guardrail nobody reports (no dwell beacons) is not checked.
            if arm.images > 1 and candidate_guards[name][0].images > 1
        ]
        return primary, guardrails
