"""`pirloop simulate` passes its traffic options to the plan and names bad ones."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import worker.sim.users as users
from app.cli import app
from worker.sim.summary import SimulationSummary
from worker.sim.traffic import Arrivals, Drift, Novelty, Propensity, TrafficModel


def capture_plans(monkeypatch: pytest.MonkeyPatch) -> list[users.SimulationPlan]:
    """Plans the command would run, instead of running them."""
    plans: list[users.SimulationPlan] = []

    def fake_run(plan: users.SimulationPlan, *, progress: bool = True) -> SimulationSummary:
        plans.append(plan)
        return SimulationSummary(impressions=3, seconds=1.0)

    monkeypatch.setattr(users, "run_simulation", fake_run)
    return plans


def test_traffic_options_reach_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    plans = capture_plans(monkeypatch)
    args = [
        "simulate", "--url", "http://pirloop.test", "--objective", "neg:color:blue",
        "--impressions", "3", "--drift", "daily:0.3:60", "--drift", "trend:-0.2",
        "--propensity", "gamma:2", "--novelty", "0.1:20", "--arrivals", "poisson:5",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (plan,) = plans
    assert plan.traffic == TrafficModel(
        drift=(Drift("daily", 0.3, 60.0), Drift("trend", -0.2, 60.0)),
        propensity=Propensity(2.0),
        novelty=Novelty(0.1, 20.0, "s"),
        arrivals=Arrivals(5.0),
    )
    report = json.loads(result.stdout)
    assert report["impressions"] == 3
    assert report["traffic"]["propensity"] == "gamma shape 2"


def test_without_traffic_options_the_plan_has_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    plans = capture_plans(monkeypatch)
    args = ["simulate", "--url", "http://x", "--objective", "color:blue", "--duration", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert plans[0].traffic is None


def test_a_bad_spec_is_named() -> None:
    args = [
        "simulate", "--url", "http://x", "--objective", "color:blue", "--duration", "1",
        "--drift", "weekly:3",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "kind must be daily, step or trend" in " ".join(result.output.replace("│", " ").split())
