from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from app.stats import compare


def test_compare_matches_scipy_welch() -> None:
    rng = np.random.default_rng(0)
    before = rng.normal(0.30, 0.05, 300)
    after = rng.normal(0.32, 0.08, 250)
    result = compare(before.tolist(), after.tolist())
    expected = stats.ttest_ind(after, before, equal_var=False)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.t_statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert result.delta == pytest.approx(after.mean() - before.mean())
    assert result.before.mean == pytest.approx(before.mean())
    assert result.significant == (expected.pvalue < 0.001)


def test_mean_rate_interval_covers_the_generators_mean_at_95_percent() -> None:
    """Coverage by simulation: K images with PIR drawn from one generator (mean 0.35, sd
    0.1), m impressions each; the dashboard's version interval covers the generator's mean
    at least as often as it claims, from 16 single impressions to 200 images x 50."""
    from app.stats import mean_rate_interval

    rng = np.random.default_rng(0)
    k = 0.35 * 0.65 / 0.1**2 - 1
    for images, per_image in [(16, 1), (16, 5), (200, 1), (200, 50)]:
        covered = 0
        runs = 600
        for _ in range(runs):
            pir = rng.beta(0.35 * k, 0.65 * k, images)
            clicks = rng.binomial(per_image, pir)
            low, high = mean_rate_interval(
                list(clicks / per_image),
                positives=float(clicks.sum()),
                trials=images * per_image,
            )
            assert 0.0 <= low <= high <= 1.0
            covered += low <= 0.35 <= high
        assert covered / runs >= 0.93, (images, per_image, covered / runs)
