"""The simulator runs from synchronous code whether or not an event loop already runs."""

from __future__ import annotations

import asyncio

from worker.sim.summary import SimulationSummary
from worker.sim.users import run_to_end


async def answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_runs_without_a_loop() -> None:
    assert run_to_end(answer()) == 42


def test_runs_inside_a_running_loop() -> None:
    async def caller() -> int:
        # Synchronous code called from a coroutine, as Playwright's sync API leaves things.
        return run_to_end(answer())

    # The outer call goes through run_to_end too: the test session may itself run a loop.
    assert run_to_end(caller()) == 42


def test_summary_reports_rates_and_explains_each_kind_of_error() -> None:
    summary = SimulationSummary(impressions=100, interactions=30, seconds=10.0)
    summary.errors.update({"impression 503": 4, "impression ConnectError": 2, "interaction 422": 1})
    report = summary.as_dict()
    assert report["impressions_per_second"] == 10.0
    assert report["interactions_per_second"] == 3.0
    assert report["errors_per_second"] == 0.7
    notes = report["notes"]
    assert len(notes) == 3
    assert notes[0].startswith("4 answers were 503")
    assert notes[1].startswith("2 requests failed before an answer")
    assert notes[2].startswith("1 answers refused the request (4xx)")


def test_a_clean_run_has_nothing_to_explain() -> None:
    report = SimulationSummary(impressions=5, seconds=1.0).as_dict()
    assert report["errors"] == {}
    assert report["notes"] == []
