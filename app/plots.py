"""Server-side SVG plots for the dashboard: no plotting library, no script, nothing fetched from
elsewhere. Every function returns markup that is safe to drop into a page: text is escaped
here, and colours are presentation attributes (the pages' CSP allows no inline style)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from markupsafe import Markup

WIDTH = 560
HEIGHT = 300
PALETTE = ("#2463a6", "#e07b24", "#2f8f5b", "#9b4dca", "#c23b3b", "#6b7280")
GRID = "#e5e7eb"
AXIS = "#9ca3af"


@dataclass(frozen=True)
class PirPoint:
    label: str
    pir: float | None
    ci_low: float | None
    ci_high: float | None
    highlight: bool = False


@dataclass
class _Frame:
    """Maps data to the plotting area inside fixed margins."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    left: float = 56
    right: float = 16
    top: float = 34
    bottom: float = 46

    def x(self, value: float) -> float:
        span = (self.x_max - self.x_min) or 1.0
        return self.left + (value - self.x_min) / span * (WIDTH - self.left - self.right)

    def y(self, value: float) -> float:
        span = (self.y_max - self.y_min) or 1.0
        return (
            HEIGHT - self.bottom - (value - self.y_min) / span * (HEIGHT - self.top - self.bottom)
        )


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0) * 0.1
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks: list[float] = []
    value = start
    while value <= high + step * 0.5 and len(ticks) < 20:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.2g}"
    return f"{value:.3g}"


def _open(title: str, description: str) -> list[str]:
    return [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>",
        f'<text class="plot-title" x="{WIDTH / 2}" y="20" text-anchor="middle">'
        f"{escape(title)}</text>",
    ]


def _axes(
    frame: _Frame,
    *,
    x_label: str,
    y_label: str,
    x_ticks: Sequence[tuple[float, str]] | None = None,
) -> list[str]:
    parts = []
    for tick in nice_ticks(frame.y_min, frame.y_max):
        if frame.y_min - 1e-12 <= tick <= frame.y_max + 1e-12:
            y = frame.y(tick)
            parts.append(
                f'<line x1="{frame.left}" x2="{WIDTH - frame.right}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{GRID}"/>'
                f'<text class="tick" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{escape(_fmt(tick))}</text>"
            )
    if x_ticks is None:
        x_ticks = [
            (t, _fmt(t))
            for t in nice_ticks(frame.x_min, frame.x_max, 6)
            if frame.x_min - 1e-12 <= t <= frame.x_max + 1e-12
        ]
    base = HEIGHT - frame.bottom
    for value, label in x_ticks:
        x = frame.x(value)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="{AXIS}"/>'
            f'<text class="tick" x="{x:.1f}" y="{base + 16}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<line x1="{frame.left}" x2="{WIDTH - frame.right}" y1="{base}" y2="{base}" '
        f'stroke="{AXIS}"/>'
        f'<line x1="{frame.left}" x2="{frame.left}" y1="{frame.top}" y2="{base}" stroke="{AXIS}"/>'
        f'<text class="axis-label" x="{(frame.left + WIDTH - frame.right) / 2}" '
        f'y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis-label" x="14" y="{(frame.top + base) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(frame.top + base) / 2})">{escape(y_label)}</text>'
    )
    return parts


LEGEND_TOP = 30
LEGEND_ROW = 16


def _legend_slots(names: Sequence[str]) -> list[tuple[float, float]]:
    """(x, y) of each legend entry, wrapping onto another row before the right edge."""
    slots, x, y = [], 64.0, float(LEGEND_TOP)
    for name in names:
        # Room for the name at the larger text size that narrow screens get (pirloop.css).
        width = 24 + 8 * len(name)
        if x > 64 and x + width > WIDTH:
            x, y = 64.0, y + LEGEND_ROW
        slots.append((x, y))
        x += width
    return slots


def legend_top(names: Sequence[str], top: float) -> float:
    """The frame's top margin, moved down by the legend's extra rows."""
    slots = _legend_slots(names)
    return top + (slots[-1][1] - LEGEND_TOP if slots else 0.0)


def _legend(names: Sequence[str]) -> list[str]:
    parts = []
    for index, (name, (x, y)) in enumerate(zip(names, _legend_slots(names), strict=True)):
        colour = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{x + 14:.0f}" y="{y + 9:.0f}">{escape(name)}</text>'
        )
    return parts


def empty(title: str, message: str) -> Markup:
    parts = _open(title, message)
    parts.append(
        f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
        f"{escape(message)}</text></svg>"
    )
    return Markup("".join(parts))


def _padded(low: float, high: float, share: float = 0.08) -> tuple[float, float]:
    pad = (high - low) * share or (abs(high) or 1.0) * 0.1
    return low - pad, high + pad


def pir_by_version(points: Sequence[PirPoint], *, title: str = "PIR per version") -> Markup:
    """Mean per-image PIR of each version in order of creation, with 95% interval bars."""
    measured = [p for p in points if p.pir is not None]
    if not measured:
        return empty(title, "no version has PIR data yet")
    lows = [p.ci_low if p.ci_low is not None else p.pir for p in measured]
    highs = [p.ci_high if p.ci_high is not None else p.pir for p in measured]
    y_min, y_max = _padded(
        min(v for v in lows if v is not None), max(v for v in highs if v is not None)
    )
    names = ["a version's PIR, 95% interval"]
    if any(p.highlight for p in measured):
        names.append("serving now")
    frame = _Frame(
        -0.5,
        len(points) - 0.5,
        max(0.0, y_min),
        min(1.0, y_max) if y_max > 0 else 1.0,
        top=legend_top(names, 48),
    )
    every = max(1, math.ceil(len(points) / 12))
    ticks = [(float(i), p.label) for i, p in enumerate(points) if i % every == 0]
    parts = _open(title, "mean per-image PIR with 95% interval, per version")
    parts += _axes(frame, x_label="version (in order of creation)", y_label="PIR", x_ticks=ticks)
    parts += _legend(names)
    path: list[str] = []
    for index, point in enumerate(points):
        if point.pir is None:
            continue
        x, y = frame.x(index), frame.y(point.pir)
        path.append(f"{'M' if not path else 'L'}{x:.1f},{y:.1f}")
        if point.ci_low is not None and point.ci_high is not None:
            y_low, y_high = (
                frame.y(max(point.ci_low, frame.y_min)),
                frame.y(min(point.ci_high, frame.y_max)),
            )
            parts.append(
                f'<line class="ci" x1="{x:.1f}" x2="{x:.1f}" y1="{y_low:.1f}" y2="{y_high:.1f}" '
                f'stroke="{PALETTE[0]}" stroke-width="1.5"/>'
                f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{y_low:.1f}" y2="{y_low:.1f}" '
                f'stroke="{PALETTE[0]}"/>'
                f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{y_high:.1f}" y2="{y_high:.1f}" '
                f'stroke="{PALETTE[0]}"/>'
            )
    parts.append(
        f'<path d="{" ".join(path)}" fill="none" stroke="{PALETTE[0]}" stroke-opacity="0.35"/>'
    )
    for index, point in enumerate(points):
        if point.pir is None:
            continue
        colour = PALETTE[1] if point.highlight else PALETTE[0]
        radius = 5 if point.highlight else 3.5
        parts.append(
            f'<circle class="point" cx="{frame.x(index):.1f}" cy="{frame.y(point.pir):.1f}" '
            f'r="{radius}" fill="{colour}"><title>{escape(point.label)}: PIR '
            f"{point.pir:.4f}</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class ScatterPoint:
    x: float
    y: float
    label: str
    series: int = 0
    """Index into the series names (and the palette)."""
    weight: float = 1.0
    """Relative size of the dot."""
    tag: str | None = None
    """Shown beside the dot (a version label where dots stand for versions)."""


def scatter(
    points: Sequence[ScatterPoint],
    *,
    title: str,
    x_label: str,
    y_label: str,
    series_names: Sequence[str] = (),
    diagonal: bool = False,
    empty_message: str = "nothing to plot yet",
) -> Markup:
    """Dots, one colour per series; with diagonal, both axes share a range and y = x is drawn."""
    usable = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    if not usable:
        return empty(title, empty_message)
    xs, ys = [p.x for p in usable], [p.y for p in usable]
    if diagonal:
        low, high = _padded(min(xs + ys), max(xs + ys))
        frame = _Frame(
            low, high, low, high, top=legend_top(series_names, 48) if series_names else 34
        )
    else:
        frame = _Frame(*_padded(min(xs), max(xs)), *_padded(min(ys), max(ys)))
    parts = _open(title, f"{y_label} against {x_label}")
    parts += _axes(frame, x_label=x_label, y_label=y_label)
    if series_names:
        parts += _legend(series_names)
    if diagonal:
        parts.append(
            f'<line x1="{frame.x(frame.x_min):.1f}" y1="{frame.y(frame.y_min):.1f}" '
            f'x2="{frame.x(frame.x_max):.1f}" y2="{frame.y(frame.y_max):.1f}" '
            f'stroke="{AXIS}" stroke-dasharray="4 4"/>'
        )
    biggest = max(p.weight for p in usable) or 1.0
    for point in usable:
        radius = 3 + 4 * math.sqrt(max(point.weight, 0.0) / biggest)
        colour = PALETTE[point.series % len(PALETTE)]
        parts.append(
            f'<circle class="point" cx="{frame.x(point.x):.1f}" cy="{frame.y(point.y):.1f}" '
            f'r="{radius:.1f}" fill="{colour}" fill-opacity="0.75">'
            f"<title>{escape(point.label)}</title></circle>"
        )
        if point.tag:
            parts.append(
                f'<text class="point-label" x="{frame.x(point.x) + radius + 2:.1f}" '
                f'y="{frame.y(point.y) - radius:.1f}">{escape(point.tag)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def calibration(rows: Sequence[Mapping[str, Any]], *, title: str) -> Markup:
    """Predicted against observed PIR per group of held-out images; the diagonal is perfect."""
    points = [
        ScatterPoint(
            x=float(row["predicted_mean"]),
            y=float(row["observed_mean"]),
            label=(
                f"predicted {float(row['predicted_mean']):.4f}, observed "
                f"{float(row['observed_mean']):.4f}, {int(row.get('count', 0))} images"
            ),
            weight=float(row.get("count", 1)),
        )
        for row in rows
        if row.get("predicted_mean") is not None
    ]
    return scatter(
        points,
        title=title,
        x_label="predicted PIR (group mean)",
        y_label="observed PIR",
        diagonal=True,
        empty_message="no calibration table recorded for this version",
    )


def line_chart(
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    x_label: str = "step",
    y_label: str = "loss",
) -> Markup:
    """Curves against their index (epoch or logged step)."""
    drawn = [(name, [float(v) for v in values]) for name, values in series if values]
    drawn = [(name, [v for v in values if math.isfinite(v)]) for name, values in drawn]
    drawn = [(name, values) for name, values in drawn if values]
    if not drawn:
        return empty(title, "no curve recorded for this version")
    longest = max(len(values) for _, values in drawn)
    y_min, y_max = _padded(
        min(min(values) for _, values in drawn), max(max(values) for _, values in drawn)
    )
    names = [name for name, _ in drawn]
    frame = _Frame(0, max(longest - 1, 1), y_min, y_max, top=legend_top(names, 48))
    parts = _open(title, ", ".join(names))
    parts += _axes(frame, x_label=x_label, y_label=y_label)
    parts += _legend([name for name, _ in drawn])
    for index, (_, values) in enumerate(drawn):
        points = " ".join(f"{frame.x(i):.1f},{frame.y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline class="curve" points="{points}" fill="none" '
            f'stroke="{PALETTE[index % len(PALETTE)]}" stroke-width="1.8"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram(
    groups: Sequence[tuple[str, Sequence[float]]], *, title: str, bins: int = 20
) -> Markup:
    """Overlaid histograms of per-image PIR, one colour per group."""
    drawn = [(name, list(values)) for name, values in groups if values]
    if not drawn:
        return empty(title, "no image of this version has been seen yet")
    every = [v for _, values in drawn for v in values]
    low, high = min(every), max(every)
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    width = (high - low) / bins
    counts = []
    for _, values in drawn:
        row = [0] * bins
        for value in values:
            row[min(int((value - low) / width), bins - 1)] += 1
        counts.append(row)
    tallest = max(max(row) for row in counts)
    frame = _Frame(low, high, 0, tallest * 1.1, top=48)
    parts = _open(title, "distribution of per-image PIR")
    parts += _axes(frame, x_label="per-image PIR", y_label="images")
    parts += _legend([f"{name} ({len(values)} images)" for name, values in drawn])
    for index, row in enumerate(counts):
        colour = PALETTE[index % len(PALETTE)]
        for b, count in enumerate(row):
            if not count:
                continue
            x0, x1 = frame.x(low + b * width), frame.x(low + (b + 1) * width)
            y = frame.y(count)
            parts.append(
                f'<rect class="bar" x="{x0 + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(x1 - x0 - 1, 1):.1f}" '
                f'height="{frame.y(0) - y:.1f}" fill="{colour}" fill-opacity="0.55">'
                f"<title>{escape(drawn[index][0])}: {count} images</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class RolloutLook:
    """One look at a running rollout, as its progress plots draw it."""

    impressions: int
    """The candidate arm's impressions in the decision window at the look (the x axis)."""
    delta: float | None
    """PIR change, candidate - champion."""
    ci_low: float | None
    ci_high: float | None
    champion_pir: float | None = None
    candidate_pir: float | None = None
    frozen: bool = False
    """The split looked broken (sample ratio mismatch): the decision was frozen."""


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _impressions_frame(xs: Sequence[float], low: float, high: float, *, top: float) -> _Frame:
    x_min, x_max = min(xs), max(xs)
    if x_max - x_min < 1:
        x_min, x_max = max(0.0, x_min - 1), x_max + 1
    return _Frame(x_min, x_max, *_padded(low, high), top=top)


def sequential_interval(
    looks: Sequence[RolloutLook],
    *,
    title: str = "PIR change, candidate \u2212 champion",
    level: str = "95%",
) -> Markup:
    """The always-valid interval of the PIR change at every look, as a band over the
    candidate's impressions, with the estimate as a line and no change (y = 0) marked: the
    candidate is promoted once the whole band is above 0, rejected once it is below."""
    drawn = sorted(
        (look for look in looks if _finite(look.delta, look.ci_low, look.ci_high)),
        key=lambda look: look.impressions,
    )
    if not drawn:
        return empty(title, "no look at this rollout yet: the scheduler's next tick makes one")
    lows = [min(max(look.ci_low or 0.0, -1.0), 1.0) for look in drawn]
    highs = [min(max(look.ci_high or 0.0, -1.0), 1.0) for look in drawn]
    frame = _impressions_frame(
        [float(look.impressions) for look in drawn], min([*lows, 0.0]), max([*highs, 0.0]), top=48
    )
    band_name = f"always-valid {level} interval"
    parts = _open(title, f"{band_name} and estimate of the PIR change at each look")
    parts += _axes(
        frame,
        x_label="candidate's impressions (decision window)",
        y_label="PIR change",
    )
    parts += _legend([band_name, "estimate"])
    xs = [frame.x(look.impressions) for look in drawn]
    upper = [f"{x:.1f},{frame.y(v):.1f}" for x, v in zip(xs, highs, strict=True)]
    lower = [f"{x:.1f},{frame.y(v):.1f}" for x, v in zip(xs, lows, strict=True)]
    outline = [*upper, *reversed(lower)]
    parts.append(
        f'<path class="band" d="M{" L".join(outline)} Z" fill="{PALETTE[0]}" '
        f'fill-opacity="0.18" stroke="{PALETTE[0]}" stroke-opacity="0.45"/>'
    )
    zero = frame.y(0.0)
    parts.append(
        f'<line class="zero" x1="{frame.left}" x2="{WIDTH - frame.right}" y1="{zero:.1f}" '
        f'y2="{zero:.1f}" stroke="#374151" stroke-dasharray="6 3"/>'
    )
    estimate = " ".join(
        f"{x:.1f},{frame.y(look.delta or 0.0):.1f}" for x, look in zip(xs, drawn, strict=True)
    )
    parts.append(
        f'<polyline class="estimate" points="{estimate}" fill="none" stroke="{PALETTE[1]}" '
        f'stroke-width="2"/>'
    )
    for x, look in zip(xs, drawn, strict=True):
        note = " (split broken: decision frozen)" if look.frozen else ""
        parts.append(
            f'<circle class="point{" frozen" if look.frozen else ""}" cx="{x:.1f}" '
            f'cy="{frame.y(look.delta or 0.0):.1f}" r="{4 if look.frozen else 2.5}" '
            f'fill="{PALETTE[4] if look.frozen else PALETTE[1]}"><title>'
            f"{look.impressions} candidate impressions: {look.delta:+.4f}, interval "
            f"[{look.ci_low:+.4f}, {look.ci_high:+.4f}]{escape(note)}</title></circle>"
        )
    # Last, so that nothing drawn covers it; the white outline keeps it readable on the band.
    parts.append(
        f'<text class="tick zero-label" x="{frame.left + 6}" y="{zero - 5:.1f}" '
        f'stroke="#fff" stroke-width="3" paint-order="stroke">0 = no change</text></svg>'
    )
    return Markup("".join(parts))


def arms_over_looks(
    looks: Sequence[RolloutLook],
    *,
    names: tuple[str, str] = ("champion", "candidate"),
    title: str = "PIR per arm",
) -> Markup:
    """Each arm's mean per-image PIR at every look, over the candidate's impressions."""
    drawn = sorted(
        (look for look in looks if _finite(look.champion_pir, look.candidate_pir)),
        key=lambda look: look.impressions,
    )
    if not drawn:
        return empty(title, "no look at this rollout yet: the scheduler's next tick makes one")
    values = [v for look in drawn for v in (look.champion_pir or 0.0, look.candidate_pir or 0.0)]
    frame = _impressions_frame(
        [float(look.impressions) for look in drawn], min(values), max(values), top=48
    )
    parts = _open(title, f"mean per-image PIR of {names[0]} and {names[1]} at each look")
    parts += _axes(frame, x_label="candidate's impressions (decision window)", y_label="PIR")
    parts += _legend(list(names))
    for index, name in enumerate(names):
        colour = PALETTE[index]
        arm = [look.champion_pir if index == 0 else look.candidate_pir for look in drawn]
        points = [
            (frame.x(look.impressions), frame.y(v or 0.0))
            for look, v in zip(drawn, arm, strict=True)
        ]
        parts.append(
            f'<polyline class="curve" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for (x, y), look, value in zip(points, drawn, arm, strict=True):
            parts.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)} at {look.impressions} candidate impressions: PIR "
                f"{value or 0.0:.4f}</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
