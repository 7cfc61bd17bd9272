"""The server-side SVG plots: what they draw and what they escape."""

from __future__ import annotations

import re

from app.plots import (
    RolloutLook,
    ScatterPoint,
    arms_over_looks,
    calibration,
    scatter,
    sequential_interval,
)


def _circles(svg: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', svg)]


def test_scatter_puts_larger_values_right_and_up() -> None:
    svg = str(
        scatter(
            [ScatterPoint(0.01, 0.02, "low"), ScatterPoint(0.05, 0.04, "high")],
            title="t",
            x_label="true",
            y_label="estimated",
        )
    )
    (x_low, y_low), (x_high, y_high) = _circles(svg)
    assert x_high > x_low
    assert y_high < y_low  # SVG y grows downwards


def test_scatter_with_diagonal_shares_the_axes_and_skips_non_finite_points() -> None:
    points = [ScatterPoint(0.1, 0.1, "on"), ScatterPoint(0.3, 0.3, "on too")]
    points.append(ScatterPoint(float("nan"), 0.2, "dropped"))
    svg = str(scatter(points, title="t", x_label="x", y_label="y", diagonal=True))
    circles = _circles(svg)
    assert len(circles) == 2
    # Points on y = x sit on the dashed diagonal: equal data values map to one line.
    (x1, y1), (x2, y2) = circles
    slope = (y2 - y1) / (x2 - x1)
    assert slope < 0
    assert 'stroke-dasharray="4 4"' in svg


def test_scatter_escapes_labels_and_names_series() -> None:
    svg = str(
        scatter(
            [ScatterPoint(0, 1, "<script>", series=1)],
            title="a & b",
            x_label="x",
            y_label="y",
            series_names=["one", "two<"],
        )
    )
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "two&lt;" in svg
    assert "a &amp; b" in svg


def test_empty_scatter_and_calibration_say_why() -> None:
    assert "nothing yet" in str(
        scatter([], title="t", x_label="x", y_label="y", empty_message="nothing yet")
    )
    assert "no calibration table" in str(calibration([], title="c"))


def test_calibration_dot_size_follows_the_group_count() -> None:
    svg = str(
        calibration(
            [
                {"predicted_mean": 0.3, "observed_mean": 0.31, "count": 10},
                {"predicted_mean": 0.4, "observed_mean": 0.38, "count": 100},
            ],
            title="c",
        )
    )
    radii = [float(r) for r in re.findall(r'r="([\d.]+)"', svg)]
    assert radii[0] < radii[1]
    assert "100 images" in svg


def _looks() -> list[RolloutLook]:
    # The interval narrows as the candidate's impressions grow; the second look is unbounded.
    return [
        RolloutLook(100, 0.05, -0.30, 0.40, champion_pir=0.20, candidate_pir=0.25),
        RolloutLook(150, None, None, None),
        RolloutLook(200, 0.04, -0.10, 0.18, champion_pir=0.21, candidate_pir=0.25),
        RolloutLook(300, 0.05, -0.02, 0.12, champion_pir=0.20, candidate_pir=0.25),
        RolloutLook(400, 0.06, 0.01, 0.11, champion_pir=0.20, candidate_pir=0.26, frozen=True),
    ]


def _pairs(text: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", text)]


def test_sequential_interval_draws_the_band_the_estimate_and_zero() -> None:
    svg = str(sequential_interval(_looks(), title="PIR change", level="95%"))
    band = re.search(r'<path class="band" d="([^"]+)"', svg)
    assert band is not None
    outline = _pairs(band.group(1))
    assert len(outline) == 2 * 4  # the upper edge, then the lower one back: unbounded skipped
    upper, lower = outline[:4], list(reversed(outline[4:]))
    assert [x for x, _ in upper] == [x for x, _ in lower]
    assert [x for x, _ in upper] == sorted(x for x, _ in upper)  # impressions grow rightwards
    widths = [low_y - high_y for (_, high_y), (_, low_y) in zip(upper, lower, strict=True)]
    assert widths == sorted(widths, reverse=True)  # narrowing
    assert all(width > 0 for width in widths)
    zero = re.search(r'<line class="zero"[^>]* y1="([\d.]+)"', svg)
    assert zero is not None
    # 0 lies inside the first interval and below the last one (SVG y grows downwards).
    assert upper[0][1] < float(zero.group(1)) < lower[0][1]
    assert float(zero.group(1)) > lower[-1][1]
    estimate = re.search(r'<polyline class="estimate" points="([^"]+)"', svg)
    assert estimate is not None
    assert len(_pairs(estimate.group(1))) == 4
    assert "always-valid 95% interval" in svg
    assert "0 = no change" in svg
    assert "candidate&#x27;s impressions" in svg
    assert svg.count('class="point frozen"') == 1
    assert "decision frozen" in svg


def test_sequential_interval_says_why_it_is_empty() -> None:
    svg = str(sequential_interval([RolloutLook(10, None, None, None)], title="t"))
    assert "no look at this rollout yet" in svg
    assert "band" not in svg


def test_arms_over_looks_draws_one_curve_per_arm() -> None:
    svg = str(arms_over_looks(_looks(), names=("champion v3", "candidate <v4>")))
    curves = re.findall(r'<polyline class="curve" points="([^"]+)"', svg)
    assert len(curves) == 2
    champion, candidate = (_pairs(points) for points in curves)
    assert len(champion) == len(candidate) == 4
    # The candidate's PIR is higher at every look: drawn above the champion's.
    assert all(c[1] < h[1] for c, h in zip(candidate, champion, strict=True))
    assert "champion v3" in svg
    assert "candidate &lt;v4&gt;" in svg
