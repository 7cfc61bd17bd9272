"""Bots from the simulator are flagged by their behaviour and left out of training and PIR;
the simulated people beside them are not."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.settings import get_settings
from tests.conftest import TEST_SIMULATION_KEY
from tests.live import live_server
from tests.worker.conftest import loop_env
from worker.jobs.abuse import flag_visitors
from worker.jobs.context import job_context
from worker.jobs.training_data import logged_batch
from worker.sim.users import SimulationPlan, parse_populations, run_simulation


def simulate(base: str, behaviour: str, impressions: int, users: int) -> int:
    summary = run_simulation(
        SimulationPlan(
            url=base,
            populations=parse_populations(behaviour),
            users=users,
            rate=0,
            impressions=impressions,
            simulation_key=TEST_SIMULATION_KEY,
        ),
        progress=False,
    )
    assert summary.errors == {}, summary.errors
    return summary.impressions


def test_bots_are_flagged_and_excluded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = loop_env(tmp_path, PIRLOOP_EMBEDDED_SCHEDULER="false")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    job_context.cache_clear()
    try:
        with live_server(env) as base:
            people = simulate(base, "color:blue", 120, users=4)
            clickers = simulate(base, "bot:click-all", 40, users=1)
            flood = simulate(base, "bot:flood", 200, users=1)

            result = flag_visitors()
            assert result["click_all"] >= 1
            assert result["flood"] >= 1
            assert result["impressions_flagged"] == clickers + flood

            version = httpx.get(f"{base}/v1/versions").json()[0]["id"]
            pir = httpx.get(
                f"{base}/v1/versions/{version}/pir", params={"include_simulated": "true"}
            ).json()
            assert pir["impressions"] == people
            assert pir["excluded_impressions"] == clickers + flood

            ctx = job_context()
            with ctx.sessions() as session:
                batch = logged_batch(session, ctx.settings, [version])
            assert int(batch.impressions.sum()) == people
    finally:
        get_settings.cache_clear()
        job_context.cache_clear()
