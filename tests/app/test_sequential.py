"""The always-valid comparison (app/sequential.py): the mSPRT against hand computations, its
confidence sequence, image-level summaries with the binomial floor, and the sample ratio check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.sequential import (
    ArmSummary,
    compare_arms,
    mixture_sprt,
    sample_ratio_check,
    summarize_arm,
)


def test_mixture_sprt_matches_a_hand_computation() -> None:
    # delta 0.03, v 1e-4, tau 0.02, alpha 0.05:
    # Lambda = sqrt(1e-4 / 5e-4) * exp(4e-4 * 9e-4 / (2 * 1e-4 * 5e-4)) = sqrt(0.2) * e^3.6
    #        = 0.4472136 * 36.598234 = 16.367228
    # radius^2 = 2 * 1e-4 * 5e-4 / 4e-4 * ln(sqrt(5) / 0.05) = 2.5e-4 * 3.8004512 = 9.501128e-4
    evidence = mixture_sprt(0.03, 1e-4, tau=0.02, alpha=0.05)
    assert evidence.e_value == pytest.approx(16.367228, rel=1e-6)
    assert evidence.p_value == pytest.approx(1 / 16.367228, rel=1e-6)
    assert evidence.std_error == pytest.approx(0.01)
    assert evidence.ci_low == pytest.approx(0.03 - 0.0308239, abs=1e-7)
    assert evidence.ci_high == pytest.approx(0.03 + 0.0308239, abs=1e-7)
    # 16.4 < 1/alpha = 20: not significant, and the interval still holds 0, as it must.
    assert evidence.ci_low < 0 < evidence.ci_high


def test_mixture_sprt_is_joharis_n_pair_form() -> None:
    """Johari et al. write it with n pairs of per-pair variance V; the plug-in form with
    v = V / n is the same statistic."""
    n, per_pair_variance, tau, delta = 3000, 0.45, 0.015, 0.012
    johari = math.sqrt(per_pair_variance / (per_pair_variance + n * tau**2)) * math.exp(
        n**2 * tau**2 * delta**2 / (2 * per_pair_variance * (per_pair_variance + n * tau**2))
    )
    evidence = mixture_sprt(delta, per_pair_variance / n, tau=tau, alpha=0.05)
    assert evidence.e_value == pytest.approx(johari, rel=1e-9)


@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_the_interval_is_the_inversion_of_the_test(alpha: float) -> None:
    """At delta = the radius, Lambda is exactly 1/alpha: the sequence excludes 0 exactly when
    the test rejects."""
    variance, tau = 2e-4, 0.0175
    radius = mixture_sprt(0.0, variance, tau=tau, alpha=alpha).ci_high
    assert mixture_sprt(radius, variance, tau=tau, alpha=alpha).e_value == pytest.approx(
        1 / alpha, rel=1e-9
    )
    inside = mixture_sprt(radius * 0.999, variance, tau=tau, alpha=alpha)
    outside = mixture_sprt(radius * 1.001, variance, tau=tau, alpha=alpha)
    assert inside.ci_low < 0
    assert inside.e_value < 1 / alpha
    assert outside.ci_low > 0
    assert outside.e_value > 1 / alpha


def test_mixture_sprt_without_information_says_nothing() -> None:
    for delta, variance in [(0.1, math.inf), (math.nan, 1e-4), (0.1, 0.0)]:
        evidence = mixture_sprt(delta, variance, tau=0.01, alpha=0.05)
        assert evidence.p_value == 1.0
        assert evidence.ci_low == -math.inf
        assert evidence.ci_high == math.inf
    with pytest.raises(ValueError, match="tau"):
        mixture_sprt(0.1, 1e-4, tau=0.0, alpha=0.05)


def _arm(
    rng: np.random.Generator, *, mean: float, images: int, impressions: int
) -> tuple[ArmSummary, float]:
    """A batch from a Beta generator (sd 0.1) and its clicks; returns (summary, true mean)."""
    concentration = mean * (1 - mean) / 0.01 - 1
    pirs = rng.beta(mean * concentration, (1 - mean) * concentration, size=images)
    clicks = rng.binomial(impressions, pirs)
    return summarize_arm(clicks.tolist(), [impressions] * images, bounded=True), mean


def test_confidence_sequence_covers_the_generators_difference() -> None:
    """The truth is the generators' difference (not the batches'): covered at least 1 - alpha
    of the time, and a 0.1 gain in mean PIR is told apart from 0 with 200 images."""
    rng = np.random.default_rng(7)
    covered = excluded_zero = 0
    for _ in range(300):
        control, control_mean = _arm(rng, mean=0.30, images=200, impressions=60)
        candidate, candidate_mean = _arm(rng, mean=0.40, images=200, impressions=60)
        evidence = compare_arms(control, candidate, tau=0.015, alpha=0.05)
        covered += evidence.ci_low <= candidate_mean - control_mean <= evidence.ci_high
        excluded_zero += evidence.ci_low > 0
    assert covered >= 0.95 * 300
    assert excluded_zero == 300


def test_summarize_arm_uses_per_image_means_over_images_with_trials() -> None:
    # Two images seen (0/10 and 6/20: means 0 and 0.3), one image unseen and left out.
    arm = summarize_arm([0, 6, 0], [10, 20, 0], bounded=False)
    assert arm.images == 2
    assert arm.trials == 30
    assert arm.mean == pytest.approx(0.15)  # not the pooled 6/30 = 0.2
    # Sample variance of (0, 0.3) is 0.045; over 2 images: 0.0225.
    assert arm.variance_of_mean == pytest.approx(0.0225)
    empty = summarize_arm([0, 0], [0, 0], bounded=True)
    assert empty.images == 0
    assert math.isnan(empty.mean)
    assert empty.variance_of_mean == math.inf


def test_an_arm_of_zeros_is_not_infinitely_certain() -> None:
    """30 images x 5 impressions, no click at all: the sample variance is 0, the binomial
    floor is (0.5 / 151) (1 - 0.5 / 151) / 150."""
    zeros = summarize_arm([0] * 30, [5] * 30, bounded=True)
    floor = (0.5 / 151) * (1 - 0.5 / 151) / 150
    assert zeros.variance_of_mean == pytest.approx(floor)
    assert zeros.variance_of_mean > 0
    # Against an arm with a click on 4 of its 150 impressions: no verdict from so little.
    few = summarize_arm([1, 1, 1, 1] + [0] * 26, [5] * 30, bounded=True)
    evidence = compare_arms(zeros, few, tau=0.01, alpha=0.05)
    assert evidence.ci_low < 0 < evidence.ci_high
    assert evidence.p_value > 0.05
    # Unbounded metrics (dwell seconds) get no floor: zero spread is no information at all.
    flat = summarize_arm([0.0] * 30, [5] * 30, bounded=False)
    assert flat.variance_of_mean == 0
    assert compare_arms(flat, flat, tau=0.01, alpha=0.05).ci_high == math.inf


def test_sample_ratio_mismatch_flags_60_40_and_not_noise() -> None:
    skewed = sample_ratio_check([6000, 4000], [0.5, 0.5])
    assert skewed.mismatch
    assert skewed.p_value < 1e-50
    assert not sample_ratio_check([5040, 4960], [0.5, 0.5]).mismatch
    # Shares are relative; a 10% arm with its 10% is healthy.
    assert not sample_ratio_check([9000, 1000], [0.9, 0.1]).mismatch
    assert sample_ratio_check([0, 0], [0.5, 0.5]).p_value == 1.0
    # A fair 50/50 split read at every look (100 looks of 200 impressions each) is flagged at
    # most 0.1% of the time over all its looks; a chi-square test read the same way is not.
    rng = np.random.default_rng(3)
    anytime, chi_square = 0, 0
    for _ in range(300):
        counts = np.cumsum(rng.multinomial(200, [0.5, 0.5], size=100), axis=0)
        looks = [sample_ratio_check(list(c), [0.5, 0.5]) for c in counts]
        anytime += any(look.mismatch for look in looks)
        chi_square += any(look.chi_square_p < 0.001 for look in looks)
    assert anytime <= 1
    assert chi_square >= 2
