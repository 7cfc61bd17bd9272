"""Printing what a loop run did, for people at a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = (
    "round",
    "versions",
    "PIR before [95% CI]",
    "PIR after [95% CI]",
    "change",
    "Cohen's d",
    "Welch p",
    "estimated change",
    "true change",
    "diversity",
)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def print_loop_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"pirloop: {report['objective']} ({report.get('placement', '')})")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for r in report["rounds"]:
        table.add_row(
            str(r["round"]),
            f"{r['version_before']} -> {r['version_after']}",
            f"{_fmt(r['pre_mean'])} [{_fmt(r['pre_ci'][0])}, {_fmt(r['pre_ci'][1])}]",
            f"{_fmt(r['post_mean'])} [{_fmt(r['post_ci'][0])}, {_fmt(r['post_ci'][1])}]",
            f"{r['delta']:+.4f}",
            f"{r['effect_size']:.2f}",
            f"{r['p_value']:.2g}",
            f"{r['estimated_delta']:+.4f}" if r.get("estimated_delta") is not None else "-",
            f"{r['true_delta']:+.4f}",
            f"{r['diversity_post'] / max(r['diversity_pre'], 1e-12):.2f}x",
        )
    console.print(table)
    console.print(
        f"{report['images']} images x {report['impressions']} impressions per version; "
        f"{report['seconds']:.0f} s. Measured PIR comes from the logged interactions only."
    )
    if report.get("grid_path"):
        console.print(f"before/after grid: {report['grid_path']}")
