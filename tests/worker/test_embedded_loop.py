"""The embedded default: no servers, jobs in the API process, simulated users over HTTP, and
the loop turns their clicks into a new served version with its comparison recorded."""

from __future__ import annotations

from pathlib import Path

from tests.live import live_server
from tests.worker.conftest import loop_env, serving, version_with_comparison, wait_for
from worker.sim.users import SimulationPlan, parse_populations, run_simulation


def traffic(base: str, impressions: int) -> None:
    summary = run_simulation(
        SimulationPlan(
            url=base,
            populations=parse_populations("color:blue"),
            users=4,
            rate=0,
            impressions=impressions,
        ),
        progress=False,
    )
    # Every acknowledged impression could be interacted with: no 401 from a commit that
    # lagged behind its response, no 5xx.
    assert summary.errors == {}, summary.errors
    assert summary.impressions == impressions


def test_embedded_loop_promotes_and_evaluates(tmp_path: Path) -> None:
    env = loop_env(tmp_path)
    with live_server(env, startup_seconds=120) as base:
        first = serving(base)
        assert first is not None
        assert first["parent_id"] is None
        traffic(base, 16 * 6)
        second = wait_for(
            lambda: (s := serving(base)) and s["id"] != first["id"] and s,
            timeout=180,
            what="a cycle to serve a new version",
        )
        assert second["parent_id"] == first["id"]
        assert second["metrics"]["training_images"] == 16
        assert "heldout_mae" in second["metrics"]["estimator"]
        assert "estimated_delta" in second["metrics"]

        traffic(base, 16 * 6)
        evaluated = wait_for(
            lambda: version_with_comparison(base, second["id"]),
            timeout=120,
            what="the new version's comparison",
        )
        comparison = evaluated["metrics"]["comparison"]
        assert 0 <= comparison["p_value"] <= 1
        assert comparison["impressions"] >= 16 * 5
