"""The rollout decision: promote the candidate, reject it, or keep collecting evidence.

A pure function of the arms' summaries at one look, so the service (every scheduler tick) and
bench/decisions.py (thousands of simulated comparisons) decide with the very same code.

- promote: the always-valid lower bound of candidate - champion on the primary metric is above
  0 at alpha, the split is healthy, and no guardrail is breached. Inconclusive never promotes.
- reject, harm: the candidate is worse on the primary metric or on a guardrail, each checked
  one-sided at harm_alpha / (number of metrics checked) (Bonferroni), so a worse candidate is
  stopped early with the harm threshold shared across metrics.
- reject, futility: each arm has max_trials_per_arm and there is no evidence of a gain.
- continue: otherwise. A sample ratio mismatch freezes the decision (continue with a warning):
  a broken split must never promote or reject anything by itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.sequential import ArmSummary, Evidence, SampleRatio, compare_arms, sample_ratio_check


class Outcome(StrEnum):
    promote = "promote"
    reject = "reject"
    continue_ = "continue"


@dataclass(frozen=True)
class DecisionPolicy:
    """How sure, how fast and how long: the settings a rollout decides with."""

    # False-promotion rate under continuous monitoring (the confidence sequence's level).
    alpha: float = 0.05
    # Harm stops, shared by the primary metric and the guardrails.
    harm_alpha: float = 0.05
    # The mixing distribution's scale tau as a fraction of the champion's mean: the size of
    # effect the test is most sensitive to (a 5% relative change by default).
    mixing_lift: float = 0.05
    # No decision before each arm has this many images seen and trials (the plug-in variance
    # needs some data; an image-level analysis needs some images).
    min_images_per_arm: int = 20
    min_trials_per_arm: int = 400
    # Futility: reject once every arm has this many trials without evidence of a gain.
    max_trials_per_arm: int = 10_000
    srm_threshold: float = 0.001

    def tau(self, champion: ArmSummary) -> float:
        # A floor keeps tau positive when the champion's mean is 0 or unknown.
        base = abs(champion.mean) if math.isfinite(champion.mean) else 0.0
        return max(self.mixing_lift * base, 1e-3)


@dataclass(frozen=True)
class MetricArms:
    """One metric measured on both arms."""

    name: str
    champion: ArmSummary
    candidate: ArmSummary
    higher_is_better: bool = True


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    primary: Evidence
    harm: dict[str, Evidence] = field(default_factory=dict)
    breached: tuple[str, ...] = ()
    sample_ratio: SampleRatio | None = None

    @property
    def frozen(self) -> bool:
        return self.sample_ratio is not None and self.sample_ratio.mismatch

    def evidence(self) -> dict[str, Any]:
        """Everything the decision rested on, as JSON for the audit log."""
        return {
            "outcome": str(self.outcome),
            "reason": self.reason,
            "primary": self.primary.as_dict(),
            "harm_checks": {name: e.as_dict() for name, e in self.harm.items()},
            "breached": list(self.breached),
            "sample_ratio": self.sample_ratio.as_dict() if self.sample_ratio else None,
            "frozen": self.frozen,
        }


def _worse(metric: MetricArms, evidence: Evidence) -> bool:
    if metric.higher_is_better:
        return evidence.ci_high < 0
    return evidence.ci_low > 0


def decide(
    primary: MetricArms,
    guardrails: Sequence[MetricArms],
    *,
    arm_impressions: Sequence[int],
    expected_shares: Sequence[float],
    policy: DecisionPolicy,
) -> Decision:
    """The decision at one look. arm_impressions/expected_shares: champion then candidate."""
    tau = policy.tau(primary.champion)
    gain = compare_arms(primary.champion, primary.candidate, tau=tau, alpha=policy.alpha)
    ratio = sample_ratio_check(arm_impressions, expected_shares, threshold=policy.srm_threshold)
    checked = [primary, *guardrails]
    harm_alpha = policy.harm_alpha / len(checked)
    harm = {
        m.name: compare_arms(m.champion, m.candidate, tau=policy.tau(m.champion), alpha=harm_alpha)
        for m in checked
    }

    def result(outcome: Outcome, reason: str, breached: tuple[str, ...] = ()) -> Decision:
        return Decision(outcome, reason, gain, harm, breached, ratio)

    if ratio.mismatch:
        return result(
            Outcome.continue_,
            f"sample ratio mismatch (anytime-valid p = {ratio.p_value:.2g} < "
            f"{policy.srm_threshold}; impressions {list(ratio.observed)} for shares "
            f"{[round(s, 3) for s in ratio.expected_shares]}): the decision is frozen until "
            "the split is fixed",
        )
    arms = (primary.champion, primary.candidate)
    if min(a.images for a in arms) < policy.min_images_per_arm or (
        min(a.trials for a in arms) < policy.min_trials_per_arm
    ):
        return result(
            Outcome.continue_,
            f"collecting: each arm needs {policy.min_images_per_arm} images seen and "
            f"{policy.min_trials_per_arm} impressions before any decision",
        )
    breached = tuple(
        m.name for m in checked if math.isfinite(m.champion.mean) and _worse(m, harm[m.name])
    )
    if breached:
        return result(
            Outcome.reject,
            f"worse than the champion on {', '.join(breached)} "
            f"(one-sided, alpha {policy.harm_alpha}"
            + (f" shared over {len(checked)} metrics)" if len(checked) > 1 else ")"),
            breached,
        )
    if gain.ci_low > 0:
        return result(
            Outcome.promote,
            f"better than the champion: {primary.name} +{gain.delta:.4f}, always-valid "
            f"{1 - policy.alpha:.0%} interval [{gain.ci_low:+.4f}, {gain.ci_high:+.4f}]",
        )
    if min(a.trials for a in arms) >= policy.max_trials_per_arm:
        return result(
            Outcome.reject,
            f"no evidence of a gain after {policy.max_trials_per_arm} impressions per arm "
            f"(interval [{gain.ci_low:+.4f}, {gain.ci_high:+.4f}] includes 0)",
        )
    return result(
        Outcome.continue_,
        f"collecting: interval [{gain.ci_low:+.4f}, {gain.ci_high:+.4f}] includes 0",
    )
