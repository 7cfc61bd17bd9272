"""Always-valid comparison of two arms served at the same time, with images as clusters.

What is compared: the mean per-image value of a metric (PIR, dwell, skip rate) over an arm's
served images. Each image is a draw from its generator, so the variance of an arm's mean is
the sample variance of its per-image values over the number of images: between-image spread
and within-image (impression) noise both count, and the evidence about the *generators* is
capped by the number of images, as it must be (two batches of one generator differ).

The test: the mixture sequential probability ratio test of Johari, Koomen, Pekelis and Walsh,
"Always valid inference: continuous monitoring of A/B tests", Operations Research 70(3), 2022
(Optimizely's Stats Engine), on the difference of the arms' means d with plug-in variance v
and a normal mixing distribution N(0, tau^2) on the effect:

    Lambda = sqrt(v / (v + tau^2)) * exp(tau^2 d^2 / (2 v (v + tau^2)))

Under "no difference" Lambda is a nonnegative martingale in information time 1/v (d is a
Gaussian process with Cov(d_s, d_t) = v_t for s < t, also when the images are fixed and only
their impressions grow), so P(Lambda ever >= 1/alpha) <= alpha however often it is read.
Inverting it gives the always-valid (1 - alpha) confidence sequence

    d +- sqrt(2 v (v + tau^2) / tau^2 * log(sqrt((v + tau^2) / v) / alpha)).

bench/decisions.py checks the claimed error rate by simulation (A/A at every tick).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy import stats as scipy_stats
from scipy.special import gammaln


@dataclass(frozen=True)
class ArmSummary:
    """One arm's metric: mean of per-image values and the variance of that mean."""

    images: int  # images with at least one trial
    trials: int  # impressions (or rated impressions) over those images
    mean: float
    variance_of_mean: float


def summarize_arm(
    per_image_totals: Sequence[float], per_image_trials: Sequence[int], *, bounded: bool
) -> ArmSummary:
    """Per-image means (total / trials) of the images with trials, summarized as one arm.

    bounded: the metric lies in [0, 1] (a rate). Then the variance is never taken below the
    binomial variance of the pooled rate, so an arm whose images all scored 0 so far does not
    look infinitely certain (a pitfall with a handful of impressions)."""
    pairs = [(t, n) for t, n in zip(per_image_totals, per_image_trials, strict=True) if n > 0]
    images = len(pairs)
    trials = sum(n for _, n in pairs)
    if images == 0:
        return ArmSummary(images=0, trials=0, mean=math.nan, variance_of_mean=math.inf)
    values = [t / n for t, n in pairs]
    mean = sum(values) / images
    if images > 1:
        sample_var = sum((v - mean) ** 2 for v in values) / (images - 1)
        variance = sample_var / images
    else:
        variance = math.inf
    if bounded:
        pooled = (sum(t for t, _ in pairs) + 0.5) / (trials + 1)
        variance = max(variance, pooled * (1 - pooled) / trials)
    return ArmSummary(images=images, trials=trials, mean=mean, variance_of_mean=variance)


@dataclass(frozen=True)
class Evidence:
    """The always-valid comparison of a candidate arm with a control arm at one look."""

    delta: float  # candidate mean - control mean
    std_error: float  # sqrt(v)
    ci_low: float  # always-valid (1 - alpha) confidence sequence on delta
    ci_high: float
    e_value: float  # the mixture likelihood ratio Lambda against delta = 0
    p_value: float  # min(1, 1 / Lambda): always valid at this look
    alpha: float
    tau: float

    def as_dict(self) -> dict[str, float]:
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}  # type: ignore[misc]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def mixture_sprt(delta: float, variance: float, *, tau: float, alpha: float) -> Evidence:
    """The mSPRT statistic and confidence sequence for an estimate delta with variance v."""
    if not (tau > 0 and 0 < alpha < 1):
        raise ValueError("mixture_sprt needs tau > 0 and 0 < alpha < 1")
    if not (math.isfinite(delta) and math.isfinite(variance) and variance > 0):
        return Evidence(delta, math.inf, -math.inf, math.inf, 1.0, 1.0, alpha, tau)
    tau2 = tau * tau
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + tau2 * delta * delta / (
        2 * variance * (variance + tau2)
    )
    radius = math.sqrt(
        2
        * variance
        * (variance + tau2)
        / tau2
        * math.log(math.sqrt((variance + tau2) / variance) / alpha)
    )
    e_value = math.exp(min(log_lambda, 700.0))
    return Evidence(
        delta=delta,
        std_error=math.sqrt(variance),
        ci_low=delta - radius,
        ci_high=delta + radius,
        e_value=e_value,
        p_value=min(1.0, 1.0 / e_value),
        alpha=alpha,
        tau=tau,
    )


def compare_arms(
    control: ArmSummary, candidate: ArmSummary, *, tau: float, alpha: float
) -> Evidence:
    """Always-valid evidence on candidate.mean - control.mean."""
    return mixture_sprt(
        candidate.mean - control.mean,
        control.variance_of_mean + candidate.variance_of_mean,
        tau=tau,
        alpha=alpha,
    )


@dataclass(frozen=True)
class SampleRatio:
    """Sample-ratio-mismatch check: are the arms' impression counts what the split says?

    Read at every look, so it must stay valid under continuous monitoring: the anytime-valid
    Dirichlet-multinomial test of Lindon and Malek, "Anytime-valid inference for multinomial
    count data", NeurIPS 2022 (used at Netflix). Its Bayes factor against the configured
    shares p is a martingale under a healthy split,

        BF = Gamma(k) / Gamma(k + n) * prod_i Gamma(k p_i + x_i) / Gamma(k p_i) / p_i^x_i,

    with a Dirichlet(k p) mixture over the shares, so flagging at BF >= 1 / threshold
    (p = 1 / BF < 0.001, as platforms flag SRM) falsely flags a healthy split with probability
    at most 0.001 over all looks together (a chi-square test read every look would not:
    bench/decisions.py saw ~3% of healthy rollouts frozen that way). The chi-square p-value of
    Fabijan et al. (KDD 2019) is reported beside it for reading."""

    observed: tuple[int, ...]
    expected_shares: tuple[float, ...]
    p_value: float  # anytime-valid: min(1, 1 / BF)
    chi_square_p: float  # one look's chi-square goodness of fit, for reference
    mismatch: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "observed": list(self.observed),
            "expected_shares": list(self.expected_shares),
            "p_value": self.p_value,
            "chi_square_p": self.chi_square_p,
            "mismatch": self.mismatch,
        }


# The Dirichlet mixture's concentration: how far from the configured shares it looks for a
# mismatch (larger: more sensitive to small mismatches, slower on large ones).
SRM_CONCENTRATION = 100.0


def sample_ratio_check(
    observed: Sequence[int], expected_shares: Sequence[float], *, threshold: float = 0.001
) -> SampleRatio:
    total = sum(observed)
    shares = tuple(float(s) for s in expected_shares)
    if total == 0 or len(observed) < 2:
        return SampleRatio(tuple(observed), shares, 1.0, 1.0, False)
    norm = sum(shares)
    probabilities = [s / norm for s in shares]
    prior = [SRM_CONCENTRATION * p for p in probabilities]
    log_bf = float(
        gammaln(SRM_CONCENTRATION)
        - gammaln(SRM_CONCENTRATION + total)
        + sum(
            gammaln(a + x) - gammaln(a) - x * math.log(p)
            for a, x, p in zip(prior, observed, probabilities, strict=True)
            if p > 0
        )
    )
    p_value = math.exp(-log_bf) if log_bf > 0 else 1.0
    expected = [total * p for p in probabilities]
    chi_square_p = float(scipy_stats.chisquare(list(observed), expected).pvalue)
    return SampleRatio(
        tuple(int(o) for o in observed), shares, p_value, chi_square_p, p_value < threshold
    )
