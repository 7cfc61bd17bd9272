"""How simulated people behave over time, apart from what they like: the base rate drifts
(a daily cycle, a step, a trend), some visitors click far more than others, new things get a
short-lived lift, and visitors come and go after a few pages.

An objective says how much people like an image; this model turns that into the chance of a
click at a given moment for a given visitor. It is pure and knows nothing of HTTP, so the
simulator (worker/sim/users.py) and count-level benchmarks use the same function.

Command-line specs (each optional, all combinable):
  --drift daily:AMPLITUDE[:PERIOD_S]   rate x (1 + AMPLITUDE sin(2 pi t / PERIOD_S)); 86400 s
  --drift step:CHANGE:AT_S             rate x (1 + CHANGE) from AT_S seconds on
  --drift trend:CHANGE[:PER_S]         rate x (1 + CHANGE) ** (t / PER_S), compounding; 60 s
  (--drift may be given several times: the factors multiply)
  --propensity gamma:SHAPE             each visitor's rate x Gamma(SHAPE, 1/SHAPE): mean 1,
                                       variance 1/SHAPE
  --novelty LIFT:HALF_LIFE[s|imp]      a generator version's rate x (1 + LIFT 2^(-age/HALF_LIFE)),
                                       age in seconds (default) or impressions since the
                                       simulated population first saw that version (the
                                       one serving when they arrived gets no lift)
  --arrivals poisson:PAGES             page views arrive as a Poisson process and each visitor
                                       sees a geometric number of pages with mean PAGES
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

# Without --arrivals a visitor sees exactly this many pages, at an even pace.
DEFAULT_PAGES_PER_VISITOR = 5

DriftKind = Literal["daily", "step", "trend"]
NoveltyUnit = Literal["s", "impressions"]


def _numbers(spec: str, text: str, count_range: tuple[int, int]) -> list[float]:
    parts = text.split(":") if text else []
    low, high = count_range
    if not low <= len(parts) <= high:
        raise ValueError(f"{spec!r}: expected {low} to {high} numbers after the kind")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{spec!r}: {text!r} are not all numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{spec!r}: numbers must be finite")
    return values


@dataclass(frozen=True)
class Drift:
    """A change of the base rate over the run, the same factor for every image and visitor
    (it multiplies the click probability, so it keeps the ratio between images)."""

    kind: DriftKind
    # daily: the amplitude; step: the relative change; trend: relative change per `seconds`.
    amount: float
    # daily: the period; step: when the step happens; trend: the time unit of `amount`.
    seconds: float

    def __post_init__(self) -> None:
        # A factor below zero has no meaning as a rate.
        if self.kind == "daily" and abs(self.amount) > 1:
            raise ValueError("a daily drift's amplitude must be within [-1, 1]")
        if self.kind in ("step", "trend") and self.amount < -1:
            raise ValueError(f"a {self.kind} drift cannot fall by more than -1 (all of it)")
        if self.kind == "trend" and self.amount == -1:
            raise ValueError("a trend of -1 would stop all clicks at once; use step:-1:0")
        if self.kind != "step" and self.seconds <= 0:
            raise ValueError(f"a {self.kind} drift needs a positive time in seconds")
        if self.kind == "step" and self.seconds < 0:
            raise ValueError("a step drift happens at a time >= 0 seconds")

    def factor(self, elapsed_s: float) -> float:
        """The multiplier of the base rate `elapsed_s` seconds after the start (>= 0)."""
        if self.kind == "daily":
            return 1.0 + self.amount * math.sin(2 * math.pi * elapsed_s / self.seconds)
        if self.kind == "step":
            return 1.0 + self.amount if elapsed_s >= self.seconds else 1.0
        return float((1.0 + self.amount) ** (elapsed_s / self.seconds))


def parse_drift(spec: str) -> Drift:
    """'daily:0.3:60', 'daily:0.3', 'step:0.5:30', 'trend:-0.2', 'trend:0.1:3600'."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "daily":
        values = _numbers(spec, rest, (1, 2))
        return Drift("daily", values[0], values[1] if len(values) > 1 else 86400.0)
    if kind == "step":
        amount, at = _numbers(spec, rest, (2, 2))
        return Drift("step", amount, at)
    if kind == "trend":
        values = _numbers(spec, rest, (1, 2))
        return Drift("trend", values[0], values[1] if len(values) > 1 else 60.0)
    raise ValueError(f"drift {spec!r}: kind must be daily, step or trend")


@dataclass(frozen=True)
class Propensity:
    """Per-visitor multipliers of the click rate, Gamma-distributed with mean 1: a few
    visitors click much more than most, and the population's mean rate is unchanged."""

    shape: float

    def __post_init__(self) -> None:
        if not self.shape > 0:
            raise ValueError("a propensity's gamma shape must be positive")

    def draw(self, rng: random.Random) -> float:
        return rng.gammavariate(self.shape, 1.0 / self.shape)


def parse_propensity(spec: str) -> Propensity:
    """'gamma:2' (shape 2: standard deviation 0.71 around a mean of 1)."""
    kind, _, rest = spec.strip().partition(":")
    if kind != "gamma":
        raise ValueError(f"propensity {spec!r}: the only kind is gamma:SHAPE")
    (shape,) = _numbers(spec, rest, (1, 1))
    return Propensity(shape)


@dataclass(frozen=True)
class Novelty:
    """A lift for a generator version the population has only just begun to see, halving
    every `half_life` (seconds or impressions of that version)."""

    lift: float
    half_life: float
    unit: NoveltyUnit = "s"

    def __post_init__(self) -> None:
        if self.lift < -1:
            raise ValueError("a novelty lift below -1 would make rates negative")
        if not self.half_life > 0:
            raise ValueError("a novelty half-life must be positive")

    def factor(self, age: float) -> float:
        """The multiplier for a version seen for `age` (in `unit`) so far."""
        return 1.0 + self.lift * 0.5 ** (max(age, 0.0) / self.half_life)


def parse_novelty(spec: str) -> Novelty:
    """'0.1:20' (+10%, half-life 20 s), '0.1:20s', '0.1:500imp' (half-life 500 impressions)."""
    lift_text, sep, life_text = spec.strip().partition(":")
    unit: NoveltyUnit = "s"
    if life_text.endswith("imp"):
        unit, life_text = "impressions", life_text.removesuffix("imp")
    else:
        life_text = life_text.removesuffix("s")
    if not sep:
        raise ValueError(f"novelty {spec!r} must be LIFT:HALF_LIFE[s|imp]")
    lift, half_life = _numbers(spec, f"{lift_text}:{life_text}", (2, 2))
    return Novelty(lift, half_life, unit)


@dataclass(frozen=True)
class Arrivals:
    """Visitors come and go: page views form a Poisson process at the planned rate, and each
    visitor leaves after a geometric number of pages (mean `pages_per_visitor`)."""

    pages_per_visitor: float

    def __post_init__(self) -> None:
        if not self.pages_per_visitor >= 1:
            raise ValueError("a visitor sees at least one page on average")

    def pages(self, rng: random.Random) -> int:
        # Geometric on 1, 2, ... by inversion; 1 - random() lies in (0, 1], so log is finite.
        stop = 1.0 / self.pages_per_visitor
        if stop >= 1.0:
            return 1
        return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - stop))

    def gap(self, mean_s: float, rng: random.Random) -> float:
        return rng.expovariate(1.0 / mean_s) if mean_s > 0 else 0.0


def parse_arrivals(spec: str) -> Arrivals:
    """'poisson:5' (five pages per visitor on average)."""
    kind, _, rest = spec.strip().partition(":")
    if kind != "poisson":
        raise ValueError(f"arrivals {spec!r}: the only kind is poisson:PAGES_PER_VISITOR")
    (pages,) = _numbers(spec, rest, (1, 1))
    return Arrivals(pages)


@dataclass(frozen=True)
class TrafficModel:
    """Everything but the objective that sets a simulated person's chance of a click.
    The empty model changes nothing: the click probability is the objective's."""

    drift: tuple[Drift, ...] = ()
    propensity: Propensity | None = None
    novelty: Novelty | None = None
    arrivals: Arrivals | None = None

    def drift_factor(self, elapsed_s: float) -> float:
        """The product of the drifts at `elapsed_s`: what benchmarks multiply rates by."""
        return math.prod(d.factor(elapsed_s) for d in self.drift)

    def click_probability(
        self,
        base_p: float,
        *,
        elapsed_s: float,
        visitor_propensity: float = 1.0,
        novelty_age: float | None = None,
    ) -> float:
        """The objective's probability `base_p` for this moment and visitor, clipped to
        [0, 1]; `novelty_age` is the version's age in the novelty's unit (None: no lift).
        Clipping lowers the mean where base_p * multipliers exceeds 1."""
        p = base_p * self.drift_factor(elapsed_s) * visitor_propensity
        if self.novelty is not None and novelty_age is not None:
            p *= self.novelty.factor(novelty_age)
        return min(max(p, 0.0), 1.0)

    def draw_propensity(self, rng: random.Random) -> float:
        """A new visitor's multiplier; draws nothing when there is no propensity, so runs
        without one keep their random sequence."""
        return self.propensity.draw(rng) if self.propensity else 1.0

    def draw_pages(self, rng: random.Random) -> int:
        return self.arrivals.pages(rng) if self.arrivals else DEFAULT_PAGES_PER_VISITOR

    def page_gap(self, mean_s: float, rng: random.Random) -> float:
        return self.arrivals.gap(mean_s, rng) if self.arrivals else mean_s

    def describe(self) -> dict[str, str]:
        parts: dict[str, str] = {}
        for index, drift in enumerate(self.drift):
            parts[f"drift {index + 1}"] = f"{drift.kind} {drift.amount:+g} / {drift.seconds:g} s"
        if self.propensity:
            parts["propensity"] = f"gamma shape {self.propensity.shape:g}"
        if self.novelty:
            n = self.novelty
            parts["novelty"] = f"{n.lift:+g}, half-life {n.half_life:g} {n.unit}"
        if self.arrivals:
            parts["arrivals"] = f"poisson, {self.arrivals.pages_per_visitor:g} pages per visitor"
        return parts


def click_probability(
    base_p: float,
    *,
    elapsed_s: float,
    model: TrafficModel,
    visitor_propensity: float = 1.0,
    novelty_age: float | None = None,
) -> float:
    """Function form of TrafficModel.click_probability, for callers that pass models around."""
    return model.click_probability(
        base_p,
        elapsed_s=elapsed_s,
        visitor_propensity=visitor_propensity,
        novelty_age=novelty_age,
    )


def parse_traffic(
    *,
    drift: Sequence[str] = (),
    propensity: str | None = None,
    novelty: str | None = None,
    arrivals: str | None = None,
) -> TrafficModel | None:
    """The model from command-line specs; None when none is given."""
    if not (drift or propensity or novelty or arrivals):
        return None
    return TrafficModel(
        drift=tuple(parse_drift(d) for d in drift),
        propensity=parse_propensity(propensity) if propensity else None,
        novelty=parse_novelty(novelty) if novelty else None,
        arrivals=parse_arrivals(arrivals) if arrivals else None,
    )


@dataclass
class VersionAges:
    """How long the simulated population has been seeing each generator version, in seconds
    and in impressions, counted from the first impression of it anyone got.

    The first version met was already serving before the simulated people arrived, so it is
    established (no lift); only versions that turn up later are new to them. Share one
    VersionAges between the runs of an experiment (parent round, then child round) so that
    the child is new and the parent is not."""

    first_seen_s: dict[int, float] = field(default_factory=dict)
    impressions: Counter[int] = field(default_factory=Counter)
    established: set[int] = field(default_factory=set)

    def observe(self, version: int, now_s: float, unit: NoveltyUnit) -> float | None:
        """Count one impression of `version` at `now_s` (any clock that all calls share);
        return its age before this one in `unit`, or None for an established version."""
        if not self.first_seen_s:
            self.established.add(version)
        first = self.first_seen_s.setdefault(version, now_s)
        seen = self.impressions[version]
        self.impressions[version] += 1
        if version in self.established:
            return None
        return float(seen) if unit == "impressions" else now_s - first
