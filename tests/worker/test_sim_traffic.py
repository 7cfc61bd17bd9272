"""The traffic model: drift, propensity, novelty and arrivals do what their specs say, the same
for every image, and the same again for the same seed."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import pytest

from worker.sim.traffic import (
    Arrivals,
    Drift,
    Novelty,
    Propensity,
    TrafficModel,
    VersionAges,
    click_probability,
    parse_arrivals,
    parse_drift,
    parse_novelty,
    parse_propensity,
    parse_traffic,
)


def click_rate(
    model: TrafficModel, base_p: float, *, elapsed_s: float, draws: int, seed: int
) -> float:
    """Share of clicks in `draws` Bernoulli draws at one moment."""
    rng = random.Random(seed)
    p = model.click_probability(base_p, elapsed_s=elapsed_s)
    return sum(rng.random() < p for _ in range(draws)) / draws


def test_specs_parse_to_the_documented_models() -> None:
    assert parse_drift("daily:0.3:60") == Drift("daily", 0.3, 60.0)
    assert parse_drift("daily:0.3") == Drift("daily", 0.3, 86400.0)
    assert parse_drift("step:0.5:30") == Drift("step", 0.5, 30.0)
    assert parse_drift("trend:-0.2") == Drift("trend", -0.2, 60.0)
    assert parse_propensity("gamma:2") == Propensity(2.0)
    assert parse_novelty("0.1:20") == Novelty(0.1, 20.0, "s")
    assert parse_novelty("0.1:20s") == Novelty(0.1, 20.0, "s")
    assert parse_novelty("0.1:500imp") == Novelty(0.1, 500.0, "impressions")
    assert parse_arrivals("poisson:5") == Arrivals(5.0)
    assert parse_traffic() is None
    model = parse_traffic(drift=["daily:0.3:60", "trend:-0.2"], propensity="gamma:2")
    assert model == TrafficModel(
        drift=(Drift("daily", 0.3, 60.0), Drift("trend", -0.2, 60.0)), propensity=Propensity(2.0)
    )


@pytest.mark.parametrize(
    "parse_spec",
    [
        lambda: parse_drift("hourly:0.3"),
        lambda: parse_drift("daily:1.5:60"),  # the rate would go negative
        lambda: parse_drift("step:0.5"),  # when?
        lambda: parse_drift("trend:x"),
        lambda: parse_drift("daily:0.3:0"),
        lambda: parse_propensity("beta:2"),
        lambda: parse_propensity("gamma:0"),
        lambda: parse_novelty("0.1"),
        lambda: parse_novelty("0.1:-5"),
        lambda: parse_arrivals("poisson:0.5"),
    ],
)
def test_bad_specs_are_refused(parse_spec: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_spec()


def test_daily_drift_follows_its_cycle() -> None:
    model = TrafficModel(drift=(parse_drift("daily:0.3:60"),))
    # A quarter period in: the peak; three quarters: the trough; a whole period: back.
    assert model.drift_factor(0) == pytest.approx(1.0)
    assert model.drift_factor(15) == pytest.approx(1.3)
    assert model.drift_factor(45) == pytest.approx(0.7)
    assert model.drift_factor(60) == pytest.approx(1.0)


def test_step_and_trend_drifts() -> None:
    step = TrafficModel(drift=(parse_drift("step:0.5:30"),))
    assert step.drift_factor(29.9) == 1.0
    assert step.drift_factor(30) == pytest.approx(1.5)
    trend = TrafficModel(drift=(parse_drift("trend:-0.2"),))
    # Compounding: 0.8 after a minute, 0.64 after two, never below zero.
    assert trend.drift_factor(60) == pytest.approx(0.8)
    assert trend.drift_factor(120) == pytest.approx(0.64)
    assert trend.drift_factor(6000) > 0
    both = TrafficModel(drift=(parse_drift("step:0.5:30"), parse_drift("trend:-0.2")))
    assert both.drift_factor(60) == pytest.approx(1.5 * 0.8)


def test_drift_changes_the_click_rate_equally_for_every_image() -> None:
    model = TrafficModel(drift=(parse_drift("step:1:30"),))
    for base_p in (0.1, 0.2, 0.4):
        before = click_rate(model, base_p, elapsed_s=10, draws=40_000, seed=1)
        after = click_rate(model, base_p, elapsed_s=40, draws=40_000, seed=2)
        assert before == pytest.approx(base_p, rel=0.05)
        # The step doubles every image's rate: the ratio is the same for each.
        assert after / before == pytest.approx(2.0, rel=0.06)
        exact = model.click_probability(base_p, elapsed_s=40) / base_p
        assert exact == pytest.approx(2.0)


def test_click_probability_is_clipped_to_a_probability() -> None:
    model = TrafficModel(drift=(parse_drift("step:1:0"),))
    assert model.click_probability(0.8, elapsed_s=1) == 1.0
    falling = TrafficModel(drift=(parse_drift("step:-1:0"),))
    assert falling.click_probability(0.8, elapsed_s=1) == 0.0
    assert click_probability(0.3, elapsed_s=0, model=TrafficModel()) == 0.3


def test_propensity_spreads_visitors_and_keeps_the_mean() -> None:
    base_p, pages = 0.05, 200
    spread = TrafficModel(propensity=parse_propensity("gamma:2"))
    flat = TrafficModel()

    def visitor_rates(model: TrafficModel, seed: int) -> list[float]:
        rng = random.Random(seed)
        rates = []
        for _ in range(1000):
            propensity = model.draw_propensity(rng)
            p = model.click_probability(base_p, elapsed_s=0, visitor_propensity=propensity)
            rates.append(sum(rng.random() < p for _ in range(pages)) / pages)
        return rates

    spread_rates, flat_rates = visitor_rates(spread, 3), visitor_rates(flat, 3)
    assert statistics.mean(spread_rates) == pytest.approx(base_p, rel=0.06)
    assert statistics.mean(flat_rates) == pytest.approx(base_p, rel=0.06)
    # Gamma(2, 1/2) has sd 0.71: per-visitor rates spread far beyond binomial noise alone.
    assert statistics.stdev(spread_rates) > 2 * statistics.stdev(flat_rates)
    assert spread_rates == visitor_rates(spread, 3)  # same seed, same visitors


def test_no_propensity_draws_nothing() -> None:
    # Runs without a propensity keep the random sequence they had before it existed.
    rng, untouched = random.Random(5), random.Random(5)
    assert TrafficModel().draw_propensity(rng) == 1.0
    assert TrafficModel().draw_pages(rng) == 5
    assert rng.random() == untouched.random()


def test_novelty_lift_decays_by_half_lives() -> None:
    model = TrafficModel(novelty=parse_novelty("0.1:20"))
    lifts = [
        model.click_probability(0.2, elapsed_s=0, novelty_age=age) / 0.2 for age in (0, 20, 40)
    ]
    assert lifts == pytest.approx([1.1, 1.05, 1.025])
    assert model.click_probability(0.2, elapsed_s=0, novelty_age=2000) == pytest.approx(0.2)
    assert model.click_probability(0.2, elapsed_s=0, novelty_age=None) == pytest.approx(0.2)


def test_version_ages_start_for_each_new_version() -> None:
    ages = VersionAges()
    # The version serving when the people arrived is established: no age, no lift.
    assert ages.observe(0, 100.0, "s") is None
    assert ages.observe(0, 112.5, "s") is None
    # Version 1 turns up at 130 s: its age starts at zero.
    assert ages.observe(1, 130.0, "s") == 0.0
    assert ages.observe(1, 135.0, "s") == 5.0
    assert ages.observe(1, 136.0, "impressions") == 2.0
    assert ages.observe(2, 140.0, "s") == 0.0
    assert ages.observe(1, 140.0, "s") == 10.0


def test_arrivals_give_geometric_visits_and_poisson_gaps() -> None:
    arrivals = parse_arrivals("poisson:5")
    rng = random.Random(6)
    pages = [arrivals.pages(rng) for _ in range(20_000)]
    assert min(pages) == 1
    assert statistics.mean(pages) == pytest.approx(5.0, rel=0.04)
    # Geometric: a fifth of visitors leave after one page.
    assert pages.count(1) / len(pages) == pytest.approx(0.2, abs=0.01)
    gaps = [arrivals.gap(0.5, rng) for _ in range(20_000)]
    assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.04)
    assert statistics.stdev(gaps) == pytest.approx(0.5, rel=0.06)  # exponential: sd = mean
    model = TrafficModel(arrivals=arrivals)
    first = [model.draw_pages(random.Random(7)) for _ in range(3)]
    assert first == [first[0]] * 3
