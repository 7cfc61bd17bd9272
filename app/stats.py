"""Statistics shared by the service and the worker: comparing two sets of per-image PIRs.

The paper judged a tuning round by Welch's t-test on per-image PIR before and after; we report
that together with Cohen's d and normal-approximation confidence intervals so the dashboard,
the worker and the offline experiment all describe a change the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Summary:
    """Mean of per-image values with a 95% confidence interval (t-based)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Comparison:
    """How a set of per-image PIRs (after) differs from another (before)."""

    before: Summary
    after: Summary
    delta: float
    effect_size: float  # Cohen's d with the pooled standard deviation
    t_statistic: float
    p_value: float  # Welch's two-sided t-test
    significant: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    data = np.asarray(values, dtype=float)
    n = int(data.size)
    if n == 0:
        return Summary(n=0, mean=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan)
    mean = float(data.mean())
    if n == 1:
        return Summary(n=1, mean=mean, std=0.0, ci_low=mean, ci_high=mean)
    std = float(data.std(ddof=1))
    half_width = float(scipy_stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(n=n, mean=mean, std=std, ci_low=mean - half_width, ci_high=mean + half_width)


def cohens_d(before: Sequence[float], after: Sequence[float]) -> float:
    a = np.asarray(before, dtype=float)
    b = np.asarray(after, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    pooled_var = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (
        a.size + b.size - 2
    )
    if pooled_var == 0:
        return 0.0 if a.mean() == b.mean() else math.copysign(math.inf, b.mean() - a.mean())
    return float((b.mean() - a.mean()) / math.sqrt(pooled_var))


def compare(before: Sequence[float], after: Sequence[float], *, alpha: float = 0.001) -> Comparison:
    """Welch's t-test of after against before, with effect size and summaries."""
    sum_before = summarize(before)
    sum_after = summarize(after)
    if sum_before.n < 2 or sum_after.n < 2:
        t_stat, p_value = math.nan, math.nan
    else:
        result = scipy_stats.ttest_ind(
            np.asarray(after, dtype=float), np.asarray(before, dtype=float), equal_var=False
        )
        t_stat, p_value = float(result.statistic), float(result.pvalue)
    return Comparison(
        before=sum_before,
        after=sum_after,
        delta=sum_after.mean - sum_before.mean,
        effect_size=cohens_d(before, after),
        t_statistic=t_stat,
        p_value=p_value,
        significant=bool(p_value < alpha) if not math.isnan(p_value) else False,
    )


def proportion_interval(positives: float, trials: int) -> tuple[float, float]:
    """Wilson 95% interval for a share of impressions (stays inside [0, 1] for small counts)."""
    if trials <= 0:
        return (math.nan, math.nan)
    return _wilson(positives / trials, trials)


def mean_rate_interval(
    per_image: Sequence[float], *, positives: float, trials: int
) -> tuple[float, float]:
    """95% interval for a mean of per-image rates in [0, 1] (a version's PIR), inside [0, 1]
    and honest about few observations.

    A t-interval across a handful of images leaves [0, 1] (0.250 [-0.546, 1.046] from 16
    impressions) or collapses to a point (one image: [0, 0]). This is Wilson's score
    interval at the effective sample size of the mean (Korn and Graubard, 1998): the variance
    of the mean is the between-image variance over the number of images, floored by the
    binomial variance of the pooled rate over all trials, so neither a few images nor a few
    impressions look certain; the effective size never exceeds the trials.
    """
    data = np.asarray(per_image, dtype=float)
    if data.size == 0 or trials <= 0:
        return (math.nan, math.nan)
    mean = float(np.clip(data.mean(), 0.0, 1.0))
    pooled = min(max(positives / trials, 0.0), 1.0)
    variance = pooled * (1 - pooled) / trials
    if data.size > 1:
        variance = max(variance, float(data.var(ddof=1)) / data.size)
    spread = mean * (1 - mean)
    effective = float(trials) if variance <= 0 or spread <= 0 else min(trials, spread / variance)
    return _wilson(mean, effective)


def _wilson(p: float, n: float) -> tuple[float, float]:
    denom = 1 + Z_95**2 / n
    centre = (p + Z_95**2 / (2 * n)) / denom
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
