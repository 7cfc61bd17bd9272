"""The rollout decision (app/decision.py): promote, reject for harm or futility, continue; and an
A/A simulation of the rule read at every tick, beside analyses that are wrong on purpose."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from app.decision import Decision, DecisionPolicy, MetricArms, Outcome, decide
from app.sequential import ArmSummary
from app.stats import proportion_interval
from bench.decisions import SimConfig, run_comparison

POLICY = DecisionPolicy()


def arm(mean: float, *, se: float = 0.01, images: int = 200, trials: int = 5_000) -> ArmSummary:
    return ArmSummary(images=images, trials=trials, mean=mean, variance_of_mean=se * se)


def look(
    champion: ArmSummary,
    candidate: ArmSummary,
    guardrails: Sequence[MetricArms] = (),
    *,
    impressions: tuple[int, int] | None = None,
    policy: DecisionPolicy = POLICY,
) -> Decision:
    return decide(
        MetricArms("pir", champion, candidate),
        guardrails,
        arm_impressions=impressions or (champion.trials, candidate.trials),
        expected_shares=(0.5, 0.5),
        policy=policy,
    )


def test_a_clearly_better_candidate_is_promoted() -> None:
    decision = look(arm(0.30), arm(0.40))
    assert decision.outcome is Outcome.promote
    assert decision.primary.ci_low > 0
    assert decision.breached == ()
    # What the audit log stores is plain JSON.
    assert json.loads(json.dumps(decision.evidence()))["outcome"] == "promote"


def test_a_small_gain_within_the_noise_is_not_promoted() -> None:
    decision = look(arm(0.30), arm(0.31))
    assert decision.outcome is Outcome.continue_
    assert decision.primary.ci_low < 0 < decision.primary.ci_high


def test_a_clearly_worse_candidate_is_rejected_early_for_harm() -> None:
    # 1,000 impressions per arm, far from the 10,000 budget.
    decision = look(arm(0.30, trials=1000), arm(0.20, trials=1000))
    assert decision.outcome is Outcome.reject
    assert decision.breached == ("pir",)
    assert "worse than the champion on pir" in decision.reason


def test_a_guardrail_breach_rejects_a_candidate_better_on_pir() -> None:
    dwell = MetricArms("dwell_seconds", arm(8.0, se=0.2), arm(6.0, se=0.2), higher_is_better=True)
    decision = look(arm(0.30), arm(0.40), [dwell])
    assert decision.outcome is Outcome.reject
    assert decision.breached == ("dwell_seconds",)
    # The harm alpha is shared by the two metrics checked (Bonferroni).
    assert decision.harm["dwell_seconds"].alpha == pytest.approx(POLICY.harm_alpha / 2)
    assert decision.harm["pir"].alpha == pytest.approx(POLICY.harm_alpha / 2)


def test_a_lower_is_better_guardrail_breaches_when_it_rises() -> None:
    # tau is 5% of the champion's 0.10 here, so the check needs a tighter arm than PIR's.
    worse = MetricArms(
        "skip_rate", arm(0.10, se=0.005), arm(0.20, se=0.005), higher_is_better=False
    )
    assert look(arm(0.30), arm(0.40), [worse]).breached == ("skip_rate",)
    # Fewer skips is better, not a breach: the gain on PIR promotes.
    better = MetricArms(
        "skip_rate", arm(0.20, se=0.005), arm(0.10, se=0.005), higher_is_better=False
    )
    decision = look(arm(0.30), arm(0.40), [better])
    assert decision.outcome is Outcome.promote
    assert decision.breached == ()


def test_futility_rejects_at_the_budget_and_not_before() -> None:
    budget = POLICY.max_trials_per_arm
    at_budget = look(arm(0.30, trials=budget), arm(0.305, trials=budget + 50))
    assert at_budget.outcome is Outcome.reject
    assert at_budget.breached == ()
    assert "no evidence of a gain" in at_budget.reason
    # One arm still short of the budget: keep collecting.
    short = look(arm(0.30, trials=budget - 1), arm(0.305, trials=budget + 50))
    assert short.outcome is Outcome.continue_


def test_a_sample_ratio_mismatch_freezes_every_verdict() -> None:
    for candidate in (arm(0.40), arm(0.20)):  # would be promoted / rejected for harm
        decision = look(arm(0.30), candidate, impressions=(6000, 4000))
        assert decision.outcome is Outcome.continue_
        assert decision.frozen
        assert "sample ratio mismatch" in decision.reason
    # And at the futility budget too: a broken split rejects nothing by itself.
    budget = POLICY.max_trials_per_arm
    decision = look(arm(0.30, trials=budget), arm(0.30, trials=budget), impressions=(60, 40_000))
    assert decision.outcome is Outcome.continue_


def test_no_verdict_before_the_minimum_data() -> None:
    few_trials = look(arm(0.30, trials=399), arm(0.60, trials=399))
    assert few_trials.outcome is Outcome.continue_
    assert "collecting" in few_trials.reason
    few_images = look(arm(0.30, images=19), arm(0.60, images=19))
    assert few_images.outcome is Outcome.continue_
    enough = look(arm(0.30, trials=400, images=20), arm(0.60, trials=400, images=20))
    assert enough.outcome is Outcome.promote


def test_a_a_read_at_every_tick_stays_below_alpha_and_wrong_analyses_do_not() -> None:
    """200 A/A rollouts on a ±50% daily cycle, decide() at every 10 s tick (1,000 impressions
    a tick here, so about 45 looks each) up to the futility budget. The same batches and day
    read by analyses that are wrong on purpose must show their inflated error, or this
    simulation could not tell a valid rule from an invalid one."""
    config = SimConfig(impressions_per_second=100.0, daily_amplitude=0.5, day_seconds=400.0)
    rows = [
        run_comparison(effect=0.0, seed=(20261204, index), config=config, policy=POLICY)
        for index in range(200)
    ]

    promoted = sum(r["outcome"] == "promote" for r in rows)
    assert promoted / len(rows) <= POLICY.alpha
    assert proportion_interval(promoted, len(rows))[0] <= POLICY.alpha
    assert sum(r["outcome"] != "undecided" for r in rows) == len(rows)
    # Welch's t-test on per-image PIR, valid read once, peeked at every tick: 7.5-12.5%.
    welch_peeked = sum(r["welch_peeked"] == "promote" for r in rows) / len(rows)
    assert welch_peeked >= 1.5 * POLICY.alpha
    # Impressions taken as independent while the batches are fixed (pooled clicks over
    # impressions, a z test read once at the budget): the batches' own difference is
    # "detected" (15-25% over other seeds).
    pooled = sum(r["pooled_once_promote"] for r in rows) / len(rows)
    assert pooled >= 2 * POLICY.alpha
    # The old before/after design, each batch alone on a different part of the day.
    before_after = sum(r["old_promote"] for r in rows) / len(rows)
    assert before_after >= 0.25
