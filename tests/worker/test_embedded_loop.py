"""The embedded default: no servers, jobs in the API process, simulated users over HTTP. The
loop turns their clicks into a candidate served beside the champion, and the service's own
sequential decision ends the rollout with its evidence recorded."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from tests.conftest import TEST_SIMULATION_KEY
from tests.live import live_server
from tests.worker.conftest import (
    current_rollout,
    decided_rollout,
    loop_env,
    serving,
    versions,
    wait_for,
)
from worker.sim.users import SimulationPlan, parse_populations, run_simulation


def traffic(base: str, impressions: int) -> dict[int, int]:
    """Simulated users who like blue; returns impressions served per version."""
    summary = run_simulation(
        SimulationPlan(
            url=base,
            populations=parse_populations("color:blue"),
            users=4,
            rate=0,
            impressions=impressions,
            simulation_key=TEST_SIMULATION_KEY,
        ),
        progress=False,
    )
    # Every acknowledged impression could be interacted with: no 401 from a commit that
    # lagged behind its response, no 5xx.
    assert summary.errors == {}, summary.errors
    assert summary.impressions == impressions
    return dict(summary.by_version)


def decision_after_traffic(base: str, rollout_id: int) -> dict[str, Any]:
    """More traffic, a round at a time, until the service decides. How much a decision takes
    depends on the random split: it can stop early on evidence, or must once each arm reached
    its impression cap, and an arm that drew less than its share needs more rounds (a fixed
    amount left the rollout running once in a full-suite run: 124 against 164 impressions)."""
    for _ in range(12):
        traffic(base, 16 * 4)
        with contextlib.suppress(AssertionError):  # not yet decided: another round
            decided: dict[str, Any] = wait_for(
                lambda: decided_rollout(base, rollout_id),
                timeout=10,
                what="the service's decision on the candidate",
            )
            return decided
    raise AssertionError("no decision on the candidate after 12 more rounds of traffic")


def test_embedded_loop_rolls_out_a_candidate_and_decides(tmp_path: Path) -> None:
    env = loop_env(tmp_path)
    with live_server(env, startup_seconds=120) as base:
        first = serving(base)
        assert first is not None
        assert first["parent_id"] is None
        traffic(base, 16 * 6)
        rollout = wait_for(lambda: current_rollout(base), timeout=180, what="a candidate")
        assert rollout["champion_id"] == first["id"]
        candidate = next(v for v in versions(base) if v["id"] == rollout["candidate_id"])
        assert candidate["status"] == "candidate"
        assert candidate["parent_id"] == first["id"]
        assert candidate["metrics"]["training_images"] == 16
        assert "heldout_mae" in candidate["metrics"]["estimator"]
        assert "estimated_delta" in candidate["metrics"]
        # Realism and diversity of both generators, measured by the worker when it made them.
        for version in (candidate, next(v for v in versions(base) if v["id"] == first["id"])):
            quality = version["metrics"]["image_quality"]
            assert math.isfinite(quality["realism_kid"])
            assert quality["realism_kid_se"] > 0
            assert quality["diversity"] > 0
            assert quality["images"] == 500
        # The champion keeps serving; the candidate is served beside it at the same time.
        assert serving(base)["id"] == first["id"]  # type: ignore[index]
        by_version = traffic(base, 16 * 10)
        assert by_version.get(first["id"], 0) > 0
        assert by_version.get(candidate["id"], 0) > 0

        decided = decision_after_traffic(base, rollout["id"])
        assert decided["status"] in ("promoted", "rejected")
        assert decided["manual"] is False
        assert decided["reason"]
        assert decided["checks"], "every look is recorded"
        latest = decided["latest"]
        assert latest["sample_ratio"]["mismatch"] is False
        assert latest["primary"]["p_value"] is not None
        champion = serving(base)
        assert champion is not None
        expected = candidate["id"] if decided["status"] == "promoted" else first["id"]
        assert champion["id"] == expected
