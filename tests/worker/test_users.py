"""The simulator runs from synchronous code whether or not an event loop already runs."""

from __future__ import annotations

import asyncio

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
