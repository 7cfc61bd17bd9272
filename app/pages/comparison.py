"""The dashboard's live comparison: a rollout's stored evidence as the admin page shows it (the
arms and their split, the sample-ratio check, the always-valid interval at every look, the
guardrails, the decision) and the decision history. It reads what app/rollout.py recorded at
each look and decides nothing itself."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import plots, rollout
from app.models import Rollout, RolloutCheck, utcnow
from app.schemas import HoldoutGain, ServingState

# Guardrail name -> (what the page calls it, higher is better).
GUARDRAILS = {
    "dwell_seconds": ("dwell time per report (s)", True),
    "skip_rate": ("skip rate of rating prompts", False),
}
# The guardrail each placement checks (app/measurement.py's guardrail_arms).
PLACEMENT_GUARDRAIL = {"background": "dwell_seconds", "rating": "skip_rate"}
# A change in PIR or in the skip rate is a difference of two rates in [0, 1]: with little data
# the always-valid interval is wider than [-1, 1], and is shown cut to what is possible (as the
# holdout's gain is). Dwell seconds have no such bound.
RATE_CHANGE = (-1.0, 1.0)
RATE_METRICS = {"pir", "skip_rate"}
HISTORY_ROWS = 12


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _when(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Interval:
    """An estimate of candidate - champion with its always-valid interval."""

    delta: float | None
    ci_low: float | None
    ci_high: float | None

    @classmethod
    def of(cls, evidence: Any, *, bounds: tuple[float, float] | None = None) -> Interval:
        """The stored estimate and interval; the interval cut to `bounds` when given."""
        values = _mapping(evidence)
        low, high = _number(values.get("ci_low")), _number(values.get("ci_high"))
        if bounds is not None:
            low = None if low is None else max(bounds[0], low)
            high = None if high is None else min(bounds[1], high)
        return cls(_number(values.get("delta")), low, high)

    @property
    def known(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None

    @property
    def side(self) -> str:
        """'above', 'below' or 'includes' (0), or '' while the interval is unbounded."""
        if self.ci_low is None or self.ci_high is None:
            return ""
        if self.ci_low > 0:
            return "above"
        if self.ci_high < 0:
            return "below"
        return "includes"


@dataclass(frozen=True)
class ArmRow:
    role: str  # champion, candidate or holdout
    version_id: int
    share: float  # of all impressions now
    images: int | None  # seen in the decision window
    impressions: int | None  # counted in the decision window
    pir: float | None  # mean per-image PIR there


@dataclass(frozen=True)
class SplitCheck:
    """The sample-ratio check of the two arms at the last look."""

    expected: tuple[float, float]  # champion, candidate
    observed: tuple[int, int]
    p_value: float | None  # anytime-valid: what the decision reads at every look
    chi_square_p: float | None  # this look alone, for reference
    threshold: float  # a mismatch below this p-value freezes the decision
    mismatch: bool

    @property
    def observed_shares(self) -> tuple[float, float] | None:
        total = sum(self.observed)
        if not total:
            return None
        return (self.observed[0] / total, self.observed[1] / total)


@dataclass(frozen=True)
class Guardrail:
    name: str
    label: str
    higher_is_better: bool
    change: Interval
    alpha: float | None  # one-sided harm level after sharing it over the metrics checked
    breached: bool


@dataclass(frozen=True)
class LiveComparison:
    rollout: Rollout
    outcome: str | None  # at the last look: continue, promote, reject
    reason: str | None
    checked_at: datetime | None
    frozen: bool
    primary: Interval
    p_value: float | None
    e_value: float | None
    alpha: float
    split: SplitCheck | None
    guardrails: list[Guardrail]
    unchecked_guardrail: str | None  # label of a guardrail nobody reported yet
    ramping: bool
    looks: list[plots.RolloutLook]


@dataclass(frozen=True)
class DecisionRow:
    id: int
    champion_id: int
    candidate_id: int
    status: str
    manual: bool
    reason: str | None
    started_at: datetime
    decided_at: datetime | None
    final: Interval  # the last look's interval


def _look(check: RolloutCheck) -> plots.RolloutLook:
    evidence = _mapping(check.evidence)
    change = Interval.of(evidence.get("primary"), bounds=RATE_CHANGE)
    return plots.RolloutLook(
        impressions=check.candidate_impressions,
        delta=change.delta,
        ci_low=change.ci_low,
        ci_high=change.ci_high,
        champion_pir=_number(_mapping(evidence.get("champion")).get("mean")),
        candidate_pir=_number(_mapping(evidence.get("candidate")).get("mean")),
        frozen=bool(evidence.get("frozen")),
    )


def _split(evidence: Mapping[str, Any], policy: Mapping[str, Any]) -> SplitCheck | None:
    ratio = _mapping(evidence.get("sample_ratio"))
    observed = ratio.get("observed")
    expected = ratio.get("expected_shares")
    if not (isinstance(observed, list) and isinstance(expected, list)):
        return None
    if len(observed) != 2 or len(expected) != 2:
        return None
    return SplitCheck(
        expected=(_number(expected[0]) or 0.0, _number(expected[1]) or 0.0),
        observed=(int(observed[0]), int(observed[1])),
        p_value=_number(ratio.get("p_value")),
        chi_square_p=_number(ratio.get("chi_square_p")),
        threshold=_number(policy.get("srm_threshold")) or 0.001,
        mismatch=bool(ratio.get("mismatch")),
    )


def _guardrails(evidence: Mapping[str, Any]) -> list[Guardrail]:
    breached = evidence.get("breached")
    breached_names = set(breached) if isinstance(breached, list) else set()
    rows = []
    for name, values in _mapping(evidence.get("harm_checks")).items():
        label, higher_is_better = GUARDRAILS.get(name, (f"{name} (harm stop)", True))
        if name == "pir":
            label = "PIR (harm stop)"
        rows.append(
            Guardrail(
                name=name,
                label=label,
                higher_is_better=higher_is_better,
                change=Interval.of(values, bounds=RATE_CHANGE if name in RATE_METRICS else None),
                alpha=_number(_mapping(values).get("alpha")),
                breached=name in breached_names,
            )
        )
    # The guardrails first, the primary metric's harm stop last.
    return sorted(rows, key=lambda row: row.name == "pir")


def live_comparison(
    session: Session, running: Rollout | None, *, placement: str
) -> LiveComparison | None:
    """The running rollout as of its last look (None when no candidate is evaluated)."""
    if running is None:
        return None
    latest = _mapping(running.latest)
    guardrails = _guardrails(latest)
    expected_guardrail = PLACEMENT_GUARDRAIL.get(placement)
    unchecked = None
    if expected_guardrail and latest and expected_guardrail not in {g.name for g in guardrails}:
        unchecked = GUARDRAILS[expected_guardrail][0]
    primary = _mapping(latest.get("primary"))
    return LiveComparison(
        rollout=running,
        outcome=str(latest["outcome"]) if latest.get("outcome") else None,
        reason=str(latest["reason"]) if latest.get("reason") else None,
        checked_at=_when(latest.get("checked_at")),
        frozen=bool(latest.get("frozen")),
        primary=Interval.of(primary, bounds=RATE_CHANGE),
        p_value=_number(primary.get("p_value")),
        e_value=_number(primary.get("e_value")),
        alpha=_number(_mapping(running.policy).get("alpha")) or 0.05,
        split=_split(latest, _mapping(running.policy)),
        guardrails=guardrails,
        unchecked_guardrail=unchecked,
        ramping=utcnow() < running.ramp_until,
        looks=[_look(check) for check in rollout.rollout_checks(session, running.id)],
    )


def arm_rows(
    state: ServingState, comparison: LiveComparison | None, holdout: HoldoutGain | None
) -> list[ArmRow]:
    """What impressions show now, with each arm's numbers in the decision window."""
    latest = _mapping(comparison.rollout.latest) if comparison else {}
    rows = []
    for arm in state.arms:
        numbers = _mapping(latest.get(arm.role)) if arm.role != "holdout" else {}
        impressions = numbers.get("impressions")
        if arm.role == "holdout" and holdout is not None:
            impressions = holdout.holdout_impressions
        images = numbers.get("images")
        rows.append(
            ArmRow(
                role=arm.role,
                version_id=arm.version_id,
                share=arm.share,
                images=images if isinstance(images, int) else None,
                impressions=impressions if isinstance(impressions, int) else None,
                pir=_number(numbers.get("mean")),
            )
        )
    return rows


def interval_figures(comparison: LiveComparison | None) -> dict[str, Any]:
    """The interval narrowing over the looks, and each arm's PIR at them."""
    if comparison is None:
        return {}
    row = comparison.rollout
    level = f"{1 - comparison.alpha:.0%}"
    return {
        "rollout_interval": plots.sequential_interval(
            comparison.looks,
            title=f"PIR change, candidate v{row.candidate_id} \u2212 champion v{row.champion_id}",
            level=level,
        ),
        "rollout_arms": plots.arms_over_looks(
            comparison.looks,
            names=(f"champion v{row.champion_id}", f"candidate v{row.candidate_id}"),
            title="PIR per arm at each look",
        ),
    }


def _reason(latest: Any) -> str | None:
    reason = _mapping(latest).get("reason")
    return str(reason) if reason else None


def decision_history(session: Session, *, limit: int = HISTORY_ROWS) -> Sequence[DecisionRow]:
    """The latest rollouts, newest first, with how each ended and its final interval."""
    return [
        DecisionRow(
            id=row.id,
            champion_id=row.champion_id,
            candidate_id=row.candidate_id,
            status=row.status,
            manual=row.manual,
            reason=row.reason or _reason(row.latest),
            started_at=row.started_at,
            decided_at=row.decided_at,
            final=Interval.of(_mapping(row.latest).get("primary"), bounds=RATE_CHANGE),
        )
        for row in rollout.list_rollouts(session, limit=limit)
    ]
