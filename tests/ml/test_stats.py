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
