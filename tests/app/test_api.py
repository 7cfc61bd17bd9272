"""The public API contract, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections import Counter

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.database import make_engine
from app.models import Impression, Interaction
from app.settings import Settings
from app.tokens import sign_impression
from tests.conftest import SIMULATION_HEADERS


def impression(client: TestClient, placement: str = "rating", **extra: object) -> dict:
    response = client.post("/v1/impressions", json={"placement": placement, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def test_impression_image_and_rating_are_stored(client: TestClient, settings: Settings) -> None:
    served = impression(client, "rating")
    assert set(served) >= {"impression_id", "token", "image_id", "image_url", "generator_version"}

    image = client.get(served["image_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert "immutable" in image.headers["cache-control"]

    rated = client.post(
        "/v1/interactions", json={"token": served["token"], "kind": "rating", "value": 4}
    )
    assert rated.status_code == 201, rated.text
    assert rated.json()["duplicate"] is False

    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        stored = connection.execute(
            select(Interaction.kind, Interaction.value, Impression.placement).join(
                Impression, Impression.id == Interaction.impression_id
            )
        ).all()
    engine.dispose()
    assert [tuple(row) for row in stored] == [("rating", 4.0, "rating")]


def test_repeat_interaction_is_idempotent(client: TestClient, settings: Settings) -> None:
    served = impression(client, "rating")
    first = client.post(
        "/v1/interactions", json={"token": served["token"], "kind": "rating", "value": 5}
    )
    again = client.post(
        "/v1/interactions", json={"token": served["token"], "kind": "rating", "value": 1}
    )
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["value"] == 5  # one rating per impression: the first one stands
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Interaction)) == 1
    engine.dispose()


def test_etag_gives_not_modified(client: TestClient) -> None:
    served = impression(client, "background")
    first = client.get(served["image_url"])
    second = client.get(served["image_url"], headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 304
    assert client.get("/v1/images/999999").status_code == 404


def test_impressions_spread_evenly_over_the_batch(client: TestClient, settings: Settings) -> None:
    rounds = 3
    served = [
        impression(client, "background")["image_id"] for _ in range(settings.batch_size * rounds)
    ]
    per_image = Counter(served)
    assert len(per_image) == settings.batch_size
    assert set(per_image.values()) == {rounds}


def test_bad_input_gets_clear_4xx(client: TestClient, settings: Settings) -> None:
    served = impression(client, "rating")
    token = served["token"]
    cases = [
        ({"token": token, "kind": "rating", "value": 6}, 422, "rating"),
        ({"token": token, "kind": "rating", "value": 0}, 422, "rating"),
        ({"token": token, "kind": "rating", "value": 2.5}, 422, "rating"),
        ({"token": token, "kind": "rating"}, 422, "rating"),
        ({"token": token, "kind": "teleport"}, 422, "kind"),
        ({"token": token[:-3] + "AAA", "kind": "click"}, 401, "signature"),
        ({"token": "not-a-token", "kind": "click"}, 401, "malformed"),
        ({"token": token, "kind": "click", "value": "lots"}, 422, "value"),
    ]
    for body, status, word in cases:
        response = client.post("/v1/interactions", json=body)
        assert response.status_code == status, (body, response.text)
        assert word in response.json()["message"], (body, response.json())

    malformed = client.post(
        "/v1/interactions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422
    assert "JSON" in malformed.json()["message"]

    huge = client.post(
        "/v1/interactions", json={"token": "x" * (settings.max_body_bytes + 10), "kind": "click"}
    )
    assert huge.status_code == 413
    assert huge.json()["error"] == "payload_too_large"

    placement = client.post("/v1/impressions", json={"placement": "sidebar"})
    assert placement.status_code == 422
    assert "placement" in placement.json()["message"]


def test_token_for_another_secret_or_expired_is_refused(client: TestClient) -> None:
    served = impression(client, "background")
    forged, _ = sign_impression(
        "someone-elses-secret-0123456789",
        impression_id=served["impression_id"],
        image_id=served["image_id"],
        ttl_seconds=60,
    )
    response = client.post("/v1/interactions", json={"token": forged, "kind": "click"})
    assert response.status_code == 401
    assert "signature" in response.json()["message"]


def test_expired_token_is_refused(client: TestClient, settings: Settings) -> None:
    served = impression(client, "background")
    expired, _ = sign_impression(
        settings.secret_key,
        impression_id=served["impression_id"],
        image_id=served["image_id"],
        ttl_seconds=-10,
    )
    response = client.post("/v1/interactions", json={"token": expired, "kind": "click"})
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_rating_on_a_background_impression_is_refused(client: TestClient) -> None:
    served = impression(client, "background")
    response = client.post(
        "/v1/interactions", json={"token": served["token"], "kind": "rating", "value": 3}
    )
    # A valid body that conflicts with the stored impression: 409, not a validation error.
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "rating-placement" in response.json()["message"]


def test_pir_aggregates(client: TestClient, settings: Settings) -> None:
    # Click on every impression of one image and none of the others.
    served = [impression(client, "background") for _ in range(settings.batch_size * 2)]
    target = served[0]["image_id"]
    for item in served:
        if item["image_id"] == target:
            clicked = client.post(
                "/v1/interactions", json={"token": item["token"], "kind": "click"}
            )
            assert clicked.status_code == 201
    version = served[0]["generator_version"]

    per_image = client.get(f"/v1/versions/{version}/images?placement=background").json()
    by_id = {row["image_id"]: row for row in per_image}
    assert by_id[target]["pir"] == 1.0
    assert by_id[target]["impressions"] == 2
    assert all(row["pir"] == 0.0 for row in per_image if row["image_id"] != target)

    summary = client.get(f"/v1/versions/{version}/pir?placement=background").json()
    assert summary["impressions"] == settings.batch_size * 2
    assert abs(summary["pir"] - 1 / settings.batch_size) < 1e-9
    assert summary["ci_low"] < summary["pir"] < summary["ci_high"]

    # Simulated traffic is left out unless asked for.
    sim = client.post(
        "/v1/impressions",
        json={"placement": "background", "simulated": True},
        headers=SIMULATION_HEADERS,
    ).json()
    client.post("/v1/interactions", json={"token": sim["token"], "kind": "click"})
    real_only = client.get(f"/v1/versions/{version}/pir?placement=background").json()
    with_sim = client.get(
        f"/v1/versions/{version}/pir?placement=background&include_simulated=true"
    ).json()
    assert real_only["impressions"] == settings.batch_size * 2
    assert real_only["excluded_impressions"] == 1
    assert with_sim["impressions"] == settings.batch_size * 2 + 1


def test_rating_pir_uses_star_weights(client: TestClient, settings: Settings) -> None:
    stars = [1, 5, 3, 4]
    for value in stars:
        served = impression(client, "rating")
        client.post(
            "/v1/interactions", json={"token": served["token"], "kind": "rating", "value": value}
        )
    version = served["generator_version"]
    summary = client.get(f"/v1/versions/{version}/images?placement=rating").json()
    rated = [row for row in summary if row["pir"] is not None]
    expected = sorted((s - 1) / 4 for s in stars)
    assert sorted(row["pir"] for row in rated) == expected


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/openapi.json").json()["info"]["title"] == "pirloop"
