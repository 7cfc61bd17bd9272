"""What a simulation did: counts, rates, errors by kind, and a sentence for each kind of
error saying why it happens and what to change."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimulationSummary:
    impressions: int = 0
    interactions: int = 0
    # Every answer that was not a success and every transport failure, by kind:
    # "impression 429", "interaction 503", "image 404", "impression ConnectError", ...
    # A request refused with 429 and then retried counts here once per refusal.
    errors: Counter[str] = field(default_factory=Counter)
    # 429s by the limit that refused them: "address" or "visitor".
    rate_limited: Counter[str] = field(default_factory=Counter)
    # Requests dropped after repeated 429s (the impression or the interaction is lost).
    abandoned: int = 0
    # Requests sent to the rate-limited endpoints (impressions, interactions), retries too.
    limited_requests: int = 0
    # Seconds the whole simulation was held by Retry-After.
    rate_limit_wait_s: float = 0.0
    seconds: float = 0.0
    probability_sum: float = 0.0  # the objective's PIR of each shown image
    click_probability_sum: float = 0.0  # the same after the traffic model
    by_version: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.impressions / self.seconds if self.seconds else 0.0

    def per_second(self, count: int) -> float:
        return count / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        errors = sum(self.errors.values())
        shown = self.impressions
        return {
            "impressions": self.impressions,
            "interactions": self.interactions,
            "errors": dict(self.errors),
            "abandoned": self.abandoned,
            "seconds": round(self.seconds, 2),
            "impressions_per_second": round(self.rate, 2),
            "interactions_per_second": round(self.per_second(self.interactions), 2),
            "errors_per_second": round(self.per_second(errors), 2),
            "rate_limit_wait_seconds": round(self.rate_limit_wait_s, 2),
            "mean_true_pir": self.probability_sum / shown if shown else None,
            "mean_click_probability": self.click_probability_sum / shown if shown else None,
            "impressions_by_version": {str(k): v for k, v in sorted(self.by_version.items())},
            "notes": explain(self),
        }


def _status(kind: str) -> int | None:
    last = kind.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else None


def explain(summary: SimulationSummary) -> list[str]:
    """One sentence per kind of trouble the run met, most frequent first."""
    notes = []
    address = summary.rate_limited["address"]
    if address:
        per_minute = summary.per_second(summary.limited_requests) * 60
        notes.append(
            f"{address} answers were 429 rate-limited by the per-address limit: every "
            "simulated user comes from this one address, and the service allows "
            "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE requests per minute to /v1/impressions and "
            f"/v1/interactions (1200 by default); the simulator sent {per_minute:.0f} a minute "
            f"and waited {summary.rate_limit_wait_s:.1f} s as Retry-After asked. Set "
            "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE=0 on the service for load tests."
        )
    visitor = summary.rate_limited["visitor"]
    if visitor:
        notes.append(
            f"{visitor} answers were 429 rate-limited by the per-visitor limit "
            "(PIRLOOP_RATE_LIMIT_VISITOR_PER_MINUTE impressions a minute, 60 by default): bots "
            "keep one visitor id; people change id every few pages. Set it to 0 to let bots "
            "through to the behaviour filters."
        )
    if summary.abandoned:
        notes.append(
            f"{summary.abandoned} requests were dropped after repeated 429s; their impressions "
            "or interactions are missing from the service."
        )
    others: Counter[str] = Counter()
    for kind, count in summary.errors.items():
        status = _status(kind)
        if status == 429:
            continue
        if status is None:
            others["transport"] += count
        elif status == 503:
            others["503"] += count
        elif status == 403 and kind.startswith("impression"):
            others["403"] += count
        elif status >= 500:
            others["5xx"] += count
        else:
            others["4xx"] += count
    reasons = {
        "transport": "requests failed before an answer (connection refused, reset or timed "
        "out): is the service running at that URL, and not overloaded? Lower --users or --rate",
        "503": "answers were 503: the service serves no generator version yet (run `pirloop "
        "init`) or its database was unavailable",
        "5xx": "answers were server errors: see the service's log",
        "403": "impressions were refused (403): the service takes simulated traffic only with "
        "its simulation key; set PIRLOOP_SIMULATION_KEY to the service's value where the "
        "simulator runs",
        "4xx": "answers refused the request (4xx): an expired or foreign token, or a client "
        "and service of different versions",
    }
    for reason, count in others.most_common():
        notes.append(f"{count} {reasons[reason]}.")
    return notes
