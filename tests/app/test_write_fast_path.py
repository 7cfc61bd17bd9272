"""The two busiest POSTs answered before routing (app/write_fast_path.py) answer exactly as
their routes do, and every request the route must judge still reaches it.

A query string sends a request to the route (the fast path takes none, the routes ignore it),
so the same request with and without `?via=route` compares the two answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.write_fast_path import PublicWriteAnswers
from tests.conftest import TEST_SIMULATION_KEY

VOLATILE = {"date", "content-length"}
# Fields that differ between two answers to the same request: new rows, new tokens.
FRESH = {"impression_id", "token", "image_id", "image_url", "expires_at", "interaction_id"}


def shape(response: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and body of an answer, less what two identical requests differ in."""
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    body = response.json()
    return response.status_code, headers, {k: v for k, v in body.items() if k not in FRESH}


def both(client: TestClient, path: str, **kwargs: Any) -> tuple[Any, Any]:
    return client.post(path, **kwargs), client.post(path + "?via=route", **kwargs)


def test_an_impression_answers_as_the_route_does(client: TestClient) -> None:
    fast, route = both(client, "/v1/impressions", json={"placement": "background"})
    assert fast.status_code == 201, fast.text
    assert shape(fast) == shape(route)
    assert fast.json().keys() == route.json().keys()
    # The same encoding byte for byte: keys in the same order, compact separators.
    for answer in (fast, route):
        assert answer.content == json.dumps(answer.json(), separators=(",", ":")).encode()
    assert fast.headers["x-content-type-options"] == "nosniff"  # outer middleware still ran


def test_an_interaction_and_its_repeat_answer_as_the_route_does(client: TestClient) -> None:
    token = client.post("/v1/impressions", json={"placement": "background"}).json()["token"]
    created = client.post("/v1/interactions", json={"token": token, "kind": "click"})
    assert created.status_code == 201, created.text
    repeat_fast, repeat_route = both(
        client, "/v1/interactions", json={"token": token, "kind": "click"}
    )
    assert repeat_fast.status_code == 200
    assert repeat_fast.json() == repeat_route.json()
    assert shape(repeat_fast) == shape(repeat_route)
    assert repeat_fast.json()["interaction_id"] == created.json()["interaction_id"]
    # A new kind through the route answers 201 as the fast path's first click did.
    dwell = client.post(
        "/v1/interactions?via=route", json={"token": token, "kind": "dwell", "value": 3}
    )
    assert shape(dwell)[0] == 201


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/impressions", {"placement": "nowhere"}),
        ("/v1/impressions", {"placement": "background", "extra": 1}),
        ("/v1/interactions", {"token": "x", "kind": "click", "value": "inf"}),
        ("/v1/interactions", {"token": "x", "kind": "rating", "value": 9}),
    ],
)
def test_a_body_the_model_refuses_gets_the_routes_error(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    fast, route = both(client, path, json=body)
    assert fast.status_code == 422
    assert fast.json() == route.json()


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"placement": "background"', {"content-type": "application/json"}),  # cut short
        (b'{"placement": "background"}', {"content-type": "text/plain"}),
        (b'{"placement": "background"}', {}),
        (b"[" * 100_000, {"content-type": "application/json"}),  # nested past the parser
    ],
)
def test_a_body_the_fast_path_cannot_read_goes_to_the_route(
    client: TestClient, content: bytes, headers: dict[str, str]
) -> None:
    fast = client.post("/v1/impressions", content=content, headers=headers)
    route = client.post("/v1/impressions?via=route", content=content, headers=headers)
    assert (fast.status_code, fast.json()) == (route.status_code, route.json())


def test_errors_raised_inside_are_the_applications_answers(client: TestClient) -> None:
    body = {"placement": "background", "simulated": True}
    fast, route = both(client, "/v1/impressions", json=body)
    assert fast.status_code == 403
    assert shape(fast) == shape(route)
    token_refused = both(client, "/v1/interactions", json={"token": "forged", "kind": "click"})
    assert token_refused[0].status_code == 401
    assert token_refused[0].json() == token_refused[1].json()
    keyed = client.post(
        "/v1/impressions",
        json=body,
        headers={"X-Pirloop-Simulation-Key": TEST_SIMULATION_KEY},
    )
    assert keyed.status_code == 201


def test_only_the_two_posts_are_taken() -> None:
    """Other methods and paths pass through untouched (the app below sees them)."""
    seen: list[str] = []

    async def below(scope: Any, receive: Any, send: Any) -> None:
        seen.append(f"{scope['method']} {scope['path']}")

    middleware = PublicWriteAnswers(below)
    json_header = [(b"content-type", b"application/json")]
    for method, path in [("GET", "/v1/impressions"), ("POST", "/v1/interactions/batch")]:
        scope = {"type": "http", "method": method, "path": path, "headers": json_header}
        asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    assert seen == ["GET /v1/impressions", "POST /v1/interactions/batch"]
