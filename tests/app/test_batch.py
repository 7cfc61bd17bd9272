"""POST /v1/interactions/batch, on SQLite and on PostgreSQL: each item checked as the single
endpoint checks it, the good ones stored in one commit before the answer, a bad item refused
alone."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.models import Interaction
from app.schemas import MAX_BATCH_INTERACTIONS
from app.settings import Settings
from app.tokens import sign_impression
from tests.app.faults import commits_fail

BATCH = "/v1/interactions/batch"


def impression(client: TestClient, placement: str) -> dict[str, Any]:
    response = client.post("/v1/impressions", json={"placement": placement})
    assert response.status_code == 201, response.text
    return response.json()


def stored_rows(settings: Settings) -> set[tuple[int, int, str, float]]:
    """(id, impression id, kind, value) of every stored interaction, read on a connection of
    its own: only committed rows are visible to it."""
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Interaction.id, Interaction.impression_id, Interaction.kind, Interaction.value)
        ).all()
    engine.dispose()
    return {(int(i), int(imp), kind, float(value)) for i, imp, kind, value in rows}


def test_mixed_batch_answers_each_item_and_stores_only_the_good_ones(
    client: TestClient, settings: Settings
) -> None:
    rating = impression(client, "rating")
    rated_before = impression(client, "rating")
    background = impression(client, "background")
    before = client.post(
        "/v1/interactions", json={"token": rated_before["token"], "kind": "rating", "value": 2}
    )
    assert before.status_code == 201
    forged, _ = sign_impression(
        "someone-elses-secret-0123456789",
        impression_id=rating["impression_id"],
        image_id=rating["image_id"],
        ttl_seconds=60,
    )
    not_here, _ = sign_impression(
        settings.secret_key,
        impression_id=rating["impression_id"] + 10_000,
        image_id=rating["image_id"],
        ttl_seconds=60,
    )
    items: list[object] = [
        {"token": rating["token"], "kind": "rating", "value": 5},  # 0 created
        {"token": forged, "kind": "click"},  # 1 forged signature
        {"token": background["token"], "kind": "rating", "value": 3},  # 2 wrong placement
        {"token": rating["token"], "kind": "rating", "value": 1},  # 3 repeat of 0
        {"token": background["token"], "kind": "click"},  # 4 created
        {"token": rated_before["token"], "kind": "rating", "value": 4},  # 5 stored before
        {"token": rating["token"], "kind": "dwell", "value": -1},  # 6 bad value
        {"token": rating["token"], "kind": "teleport"},  # 7 bad kind
        {"token": not_here, "kind": "click"},  # 8 no such impression here
        "not an object",  # 9
    ]

    response = client.post(BATCH, json={"interactions": items})

    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [
        "created",
        "rejected",
        "rejected",
        "duplicate",
        "created",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert (body["created"], body["duplicate"], body["rejected"]) == (2, 2, 6)
    errors = {r["index"]: r["error"] for r in results if r["status"] == "rejected"}
    assert errors[1]["error"] == "unauthorized"
    assert "signature" in errors[1]["message"]
    assert errors[2]["error"] == "conflict"
    assert "rating-placement" in errors[2]["message"]
    assert errors[6]["error"] == "validation_error"
    assert "interactions.6" in errors[6]["message"]
    assert "dwell" in errors[6]["message"]
    assert errors[7]["error"] == "validation_error"
    assert "interactions.7.kind" in errors[7]["message"]
    assert errors[8]["error"] == "unauthorized"
    assert "no impression" in errors[8]["message"]
    assert errors[9]["error"] == "validation_error"
    assert all("interaction_id" not in r for r in results if r["status"] == "rejected")
    assert all("error" not in r for r in results if r["status"] != "rejected")

    assert results[0]["value"] == 5
    assert results[3]["value"] == 5  # the first value of the pair stands
    assert results[3]["interaction_id"] == results[0]["interaction_id"]
    assert results[5]["value"] == 2
    assert results[5]["interaction_id"] == before.json()["interaction_id"]
    assert stored_rows(settings) == {
        (results[0]["interaction_id"], rating["impression_id"], "rating", 5.0),
        (results[4]["interaction_id"], background["impression_id"], "click", 1.0),
        (before.json()["interaction_id"], rated_before["impression_id"], "rating", 2.0),
    }


def test_repeats_inside_a_batch_store_one_row_with_the_first_value(
    client: TestClient, settings: Settings
) -> None:
    served = impression(client, "rating")
    token = served["token"]
    items = [
        {"token": token, "kind": "rating", "value": 3},
        {"token": token, "kind": "rating", "value": 5},
        {"token": token, "kind": "click"},
        {"token": token, "kind": "rating", "value": 1},
        {"token": token, "kind": "click", "value": 7},
    ]

    first = client.post(BATCH, json={"interactions": items}).json()
    again = client.post(BATCH, json={"interactions": items}).json()

    assert [r["status"] for r in first["results"]] == [
        "created",
        "duplicate",
        "created",
        "duplicate",
        "duplicate",
    ]
    assert [r["value"] for r in first["results"]] == [3, 3, 1, 3, 1]
    rating_id, click_id = (
        first["results"][0]["interaction_id"],
        first["results"][2]["interaction_id"],
    )
    assert rating_id != click_id
    assert [r["interaction_id"] for r in first["results"]] == [
        rating_id,
        rating_id,
        click_id,
        rating_id,
        click_id,
    ]
    # The same batch again is all repeats: nothing created, nothing added.
    assert [r["status"] for r in again["results"]] == ["duplicate"] * len(items)
    assert (again["created"], again["duplicate"], again["rejected"]) == (0, 5, 0)
    assert stored_rows(settings) == {
        (rating_id, served["impression_id"], "rating", 3.0),
        (click_id, served["impression_id"], "click", 1.0),
    }


def test_batch_size_limits(client: TestClient, settings: Settings) -> None:
    served = impression(client, "background")
    item = {"token": served["token"], "kind": "click"}
    for count in (0, MAX_BATCH_INTERACTIONS + 1):
        response = client.post(BATCH, json={"interactions": [item] * count})
        assert response.status_code == 422, (count, response.text)
        assert response.json()["error"] == "validation_error"
        message = response.json()["message"]
        assert f"from 1 to {MAX_BATCH_INTERACTIONS} interactions" in message, message
        assert f"this one has {count}" in message, message
    assert stored_rows(settings) == set()

    missing = client.post(BATCH, json={"items": [item]})
    assert missing.status_code == 422
    assert "interactions" in missing.json()["message"]

    # The largest batch fits the batch body limit, well above the single endpoint's.
    full = client.post(BATCH, json={"interactions": [item] * MAX_BATCH_INTERACTIONS})
    assert full.status_code == 200, full.text
    assert (full.json()["created"], full.json()["duplicate"]) == (1, MAX_BATCH_INTERACTIONS - 1)
    huge = client.post(
        BATCH,
        json={"interactions": [{"token": "x" * (settings.max_batch_body_bytes + 10)}]},
    )
    assert huge.status_code == 413
    assert str(settings.max_batch_body_bytes) in huge.json()["message"]


def test_batch_is_answered_after_one_commit(client: TestClient, settings: Settings) -> None:
    """Every item answered `created` is readable from a fresh connection the moment the
    answer arrives, and the whole batch took one writer transaction."""
    served = [impression(client, "rating") for _ in range(10)]
    items = [
        {"token": s["token"], "kind": kind, "value": 4}
        for s in served
        for kind in ("rating", "like", "share")
    ]
    writer = client.app.state.ingest.writer  # type: ignore[attr-defined]
    transactions_before = writer.batches

    response = client.post(BATCH, json={"interactions": items})

    stored = stored_rows(settings)
    assert response.status_code == 200, response.text
    assert writer.batches - transactions_before == 1
    acknowledged = {
        (r["interaction_id"], r["impression_id"], r["kind"], float(r["value"]))
        for r in response.json()["results"]
        if r["status"] == "created"
    }
    assert len(acknowledged) == len(items)
    assert stored == acknowledged


def test_a_failed_commit_answers_the_batch_503_and_stores_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(settings.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    app = create_app(settings)

    async def go() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                served = (await http.post("/v1/impressions", json={"placement": "rating"})).json()
                items = [
                    {"token": served["token"], "kind": kind} for kind in ("click", "like", "share")
                ]
                with commits_fail(settings, monkeypatch, table="interactions"):
                    return await http.post(BATCH, json={"interactions": items})

    response = asyncio.run(go())
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert stored_rows(settings) == set()
