"""Printing what a loop run did, for people at a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _ci(mean: float, ci: list[float | None], counts: list[int] | None = None) -> str:
    """A version's PIR with its 95% interval and, when known, what it rests on."""
    if ci[0] is None or ci[1] is None:
        return "-  (no impression counted)"
    rests_on = f"  ({counts[0]} imp., {counts[1]} img)" if counts else ""
    return f"{mean:.4f}  [95% CI {ci[0]:.4f}, {ci[1]:.4f}]{rests_on}"


def round_table(report: dict[str, Any], r: dict[str, Any]) -> Table:
    """One round as measure/value rows: narrow enough for any terminal."""
    table = Table(
        title=f"round {r['round']}: version {r['version_before']} -> {r['version_after']}",
        show_header=False,
        title_justify="left",
    )
    table.add_column("measure", style="bold")
    table.add_column("value", justify="left")
    estimated = r.get("estimated_delta")
    rows = decision_rows(r["decision"]) if r.get("decision") else []
    rows += [
        (
            f"PIR version {r['version_before']}",
            _ci(r["pre_mean"], r["pre_ci"], r.get("pre_counts")),
        ),
        (
            f"PIR version {r['version_after']}",
            _ci(r["post_mean"], r["post_ci"], r.get("post_counts")),
        ),
        ("change (measured)", f"{r['delta']:+.4f}"),
        ("effect size (Cohen's d)", f"{r['effect_size']:.2f}"),
        (
            "Welch's t-test p (after the fact)",
            f"{r['p_value']:.2g}" + ("  significant" if r["significant"] else ""),
        ),
        ("estimator's predicted change", f"{estimated:+.4f}" if estimated is not None else "-"),
        ("true change (objective)", f"{r['true_delta']:+.4f}  (p {r['true_p_value']:.2g})"),
        (
            "diversity after / before",
            f"{r['diversity_post'] / max(r['diversity_pre'], 1e-12):.2f}",
        ),
        ("realism, KID×10³ (lower: more real)", _realism(r)),
    ]
    for measure, value in rows:
        table.add_row(measure, value)
    return table


def _realism(r: dict[str, Any]) -> str:
    """Before -> after with standard errors, as the worker measured it; '-' where it did not."""

    def one(value: float | None, se: float | None) -> str:
        if value is None:
            return "-"
        return f"{1000 * value:.1f}" + (f" ± {1000 * se:.1f}" if se is not None else "")

    before = one(r.get("realism_pre"), r.get("realism_pre_se"))
    after = one(r.get("realism_post"), r.get("realism_post_se"))
    return f"{before} -> {after}"


def decision_rows(decision: dict[str, Any]) -> list[tuple[str, str]]:
    """The service's own decision on the candidate, with its evidence."""
    low, high = decision["interval"]
    interval = "-" if low is None else f"[{low:+.4f}, {high:+.4f}]"
    alpha = decision.get("alpha")
    level = f"always-valid {1 - alpha:.0%} interval" if alpha else "always-valid interval"
    verdict = decision["status"].upper() + (" (manual)" if decision["manual"] else "")
    shown = decision.get("decision_impressions") or [None, None]
    return [
        ("service's decision", verdict),
        ("why", str(decision.get("reason"))),
        (f"change, {level}", f"{(decision['delta'] or 0):+.4f}  {interval}"),
        ("always-valid p", f"{decision['p_value']:.2g}" if decision["p_value"] else "-"),
        (
            "impressions shown (champion / candidate)",
            f"{decision['champion_impressions']} / {decision['candidate_impressions']}"
            f"  (in the decision: {shown[0]} / {shown[1]}; {decision['looks']} looks)",
        ),
        (
            "split check (SRM)",
            "mismatch: decision frozen"
            if (decision.get("sample_ratio") or {}).get("mismatch")
            else "ok",
        ),
    ]


def print_loop_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.rule(f"pirloop: {report['objective']} ({report.get('placement', '')})")
    for r in report["rounds"]:
        console.print(round_table(report, r))
    console.print(
        f"{report['images']} images x {report['impressions']} impressions per version, "
        f"{report.get('steps')} tuning steps; {report['seconds']:.0f} s. "
        "Measured PIR comes from the logged interactions only."
    )
    if report.get("grid_path"):
        console.print(
            f"before/after grid (top: first version, bottom: last): {report['grid_path']}"
        )
