"""Old raw events go; the numbers they made stay."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app import queries
from app.database import make_engine, make_session_factory, session_scope
from app.models import Impression, Interaction, VersionStatus, utcnow
from app.placeholder import placeholder_batch
from app.retention import purge_old_events
from app.settings import Settings
from tests.conftest import SIMULATION_HEADERS


def test_purge_keeps_pir_and_drops_rows(client: TestClient, settings: Settings) -> None:
    served = [
        client.post("/v1/impressions", json={"placement": "background"}).json()
        for _ in range(settings.batch_size * 3)
    ]
    for item in served[::2]:
        client.post("/v1/interactions", json={"token": item["token"], "kind": "click"})
    sim = client.post(
        "/v1/impressions",
        json={"placement": "background", "simulated": True},
        headers=SIMULATION_HEADERS,
    )
    old_version = served[0]["generator_version"]
    before = client.get(f"/v1/versions/{old_version}/images").json()
    before_summary = client.get(f"/v1/versions/{old_version}/pir").json()
    assert sim.status_code == 201

    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        new = queries.create_version(session, source="placeholder", status=VersionStatus.ready)
        queries.add_images(session, new.id, placeholder_batch(4, first_seed=100))
        queries.promote_version(session, new.id)
    # Not old enough yet: nothing happens.
    kept = settings.model_copy(update={"retention_days": 30})
    with session_scope(sessions) as session:
        assert purge_old_events(session, kept)["versions"] == 0
    with session_scope(sessions) as session:
        version = queries.get_version(session, old_version)
        assert version is not None
        version.retired_at = utcnow() - timedelta(days=31)
    with session_scope(sessions) as session:
        purged = purge_old_events(session, kept)
    assert purged == {
        "versions": 1,
        "impressions": settings.batch_size * 3 + 1,
        "interactions": len(served[::2]),
    }
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Impression)) == 0
        assert connection.scalar(select(func.count()).select_from(Interaction)) == 0
    engine.dispose()

    assert client.get(f"/v1/versions/{old_version}/images").json() == before
    after_summary = client.get(f"/v1/versions/{old_version}/pir").json()
    assert after_summary == before_summary
    assert after_summary["excluded_impressions"] == 1
