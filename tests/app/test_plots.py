"""The server-side SVG plots: what they draw and what they escape."""

from __future__ import annotations

import re

from app.plots import ScatterPoint, calibration, scatter


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
