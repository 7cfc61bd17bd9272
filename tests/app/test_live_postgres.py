"""The documented start on PostgreSQL: `pirloop db upgrade && pirloop init && pirloop serve`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.database import make_engine
from app.models import Impression, Interaction
from tests.conftest import create_pg_database, drop_pg_database, service_env
from tests.live import live_server, pirloop

pytestmark = pytest.mark.postgres


def test_served_rated_and_stored_in_postgres(pg_url: str, tmp_path: Path) -> None:
    url = create_pg_database("pirloop_live")
    env = service_env(tmp_path, PIRLOOP_DATABASE_URL=url, PIRLOOP_BATCH_SIZE="6")
    try:
        pirloop(["db", "upgrade"], env)
        assert "created version" in pirloop(["init", "--placeholder"], env)
        assert "exists already" in pirloop(["init", "--placeholder"], env)  # idempotent
        with live_server(env) as base, httpx.Client(base_url=base, timeout=10) as http:
            served = http.post("/v1/impressions", json={"placement": "rating"}).json()
            image = http.get(served["image_url"])
            assert image.status_code == 200
            assert image.content.startswith(b"\x89PNG")
            rated = http.post(
                "/v1/interactions", json={"token": served["token"], "kind": "rating", "value": 5}
            )
            assert rated.status_code == 201

            forged = http.post(
                "/v1/interactions",
                json={"token": served["token"][:-4] + "abcd", "kind": "rating", "value": 5},
            )
            assert forged.status_code == 401
            assert forged.json()["error"] == "unauthorized"
            six = http.post(
                "/v1/interactions", json={"token": served["token"], "kind": "rating", "value": 6}
            )
            assert six.status_code == 422
            assert "1 to 5" in six.json()["message"]

        engine = make_engine(url)
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    Impression.id, Impression.placement, Interaction.kind, Interaction.value
                ).join(Interaction, Interaction.impression_id == Impression.id)
            ).all()
        engine.dispose()
        assert [tuple(r) for r in rows] == [(served["impression_id"], "rating", "rating", 5.0)]
    finally:
        drop_pg_database(url)
