"""Positive interaction rate: how each image is scored from its logged interactions.

Background placement: share of impressions with at least one positive interaction (clicks by
default). Rating placement: mean star weight over rated impressions, (stars - 1) / 4 by default.
Both lie in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

from app.stats import proportion_interval, summarize


@dataclass(frozen=True)
class ImageCounts:
    image_id: int
    batch_index: int
    impressions: int  # impressions of this placement that count (not flagged, etc.)
    positives: float  # positive impressions, or the sum of star weights for ratings
    rated: int  # impressions with a rating (the rating PIR's denominator)


def image_pir(counts: ImageCounts, placement: str) -> float | None:
    trials = counts.rated if placement == "rating" else counts.impressions
    return counts.positives / trials if trials else None


def image_interval(counts: ImageCounts, placement: str) -> tuple[float | None, float | None]:
    trials = counts.rated if placement == "rating" else counts.impressions
    if not trials:
        return (None, None)
    low, high = proportion_interval(counts.positives, trials)
    return (low, high)


def version_pir(
    per_image: list[ImageCounts], placement: str
) -> tuple[float | None, float | None, float | None]:
    """Mean per-image PIR over images seen, with a 95% interval across images."""
    values = [v for v in (image_pir(c, placement) for c in per_image) if v is not None]
    if not values:
        return (None, None, None)
    summary = summarize(values)
    return (summary.mean, summary.ci_low, summary.ci_high)


def rating_weight_case(weights: list[float]) -> dict[int, float]:
    return {stars: weights[stars - 1] for stars in range(1, 6)}
