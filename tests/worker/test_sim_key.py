"""The simulator marks its traffic simulated with the service's simulation key, and gives
each user slot a browser of its own; without the key the service refuses it, and the
summary says why. The real app, in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.models import Impression
from app.settings import Settings
from tests.conftest import TEST_SIMULATION_KEY, empty_tables, make_settings
from worker.sim.users import (
    Simulation,
    SimulationPlan,
    SimulationSummary,
    parse_populations,
    run_to_end,
)


@pytest.fixture
def service(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(sqlite_url, tmp_path)
    engine = make_engine(sqlite_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    with TestClient(create_app(settings)) as client:  # runs the lifespan: writer, picker
        yield client
    empty_tables(sqlite_url)


def simulate(client: TestClient, population: str, **plan: object) -> SimulationSummary:
    simulation = Simulation(
        SimulationPlan(
            url="http://pirloop.test",
            populations=parse_populations(population),
            users=2,
            rate=0,
            impressions=12,
            **plan,  # type: ignore[arg-type]
        ),
        transport=httpx.ASGITransport(app=client.app),
    )
    return run_to_end(simulation.run())


def stored(client: TestClient) -> list[tuple[bool, str | None]]:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(Impression.simulated, Impression.client_hash)).all()
    engine.dispose()
    return [(bool(simulated), client_hash) for simulated, client_hash in rows]


def test_the_simulator_sends_the_key(service: TestClient) -> None:
    people = simulate(service, "color:blue", simulation_key=TEST_SIMULATION_KEY)
    bots = simulate(service, "bot:click-all", simulation_key=TEST_SIMULATION_KEY)
    assert people.errors == {}, people.errors
    assert bots.errors == {}, bots.errors
    rows = stored(service)
    assert len(rows) == 24
    assert all(simulated for simulated, _ in rows)
    # Two people's browsers and two bots': four clients, whatever the visitor ids.
    assert len({client_hash for _, client_hash in rows}) == 4


def test_without_the_key_the_simulator_is_refused_and_says_why(
    service: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIRLOOP_SIMULATION_KEY", raising=False)
    summary = simulate(service, "color:blue")
    assert summary.impressions == 0
    assert summary.errors == {"impression 403": 12}
    assert any("PIRLOOP_SIMULATION_KEY" in note for note in summary.as_dict()["notes"])
    assert stored(service) == []
