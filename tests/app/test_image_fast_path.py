"""Cached images answered before routing (app/image_fast_path.py) answer exactly as the route
does, and everything the route must judge still reaches it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from app.image_cache import CachedImage, ImageCache
from app.image_fast_path import CachedImageAnswers
from app.image_sizes import display_etag

# Per answer, what may differ between two identical requests.
VOLATILE = {"date"}


def answer(response: object) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}  # type: ignore[attr-defined]
    return response.status_code, response.content, headers  # type: ignore[attr-defined]


def served_image(client: TestClient) -> str:
    response = client.post("/v1/impressions", json={"placement": "background"})
    assert response.status_code == 201, response.text
    return str(response.json()["image_url"])


@pytest.mark.parametrize("query", ["", "?w=256", "?w=1920"])
def test_a_cached_answer_equals_the_routes(client: TestClient, query: str) -> None:
    url = served_image(client) + query
    first = client.get(url)  # a miss: the route loads, resamples and caches it
    assert first.status_code == 200
    again = client.get(url)  # a hit: answered before routing
    assert answer(again) == answer(first)
    etag = first.headers["etag"]
    not_modified = client.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert (
        "content-length" not in not_modified.headers
        or not_modified.headers["content-length"] == "0"
    )
    assert not_modified.headers["etag"] == etag
    # The headers the other middleware adds are there on the hit too.
    assert again.headers["x-content-type-options"] == "nosniff"
    assert again.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("suffix", "status"),
    [
        ("?w=300", 422),  # not an allowed width: the route's error
        ("?w=256&x=1", 200),  # another query: the route judges it
        ("?w=", 422),
    ],
)
def test_what_the_route_must_judge_reaches_it(client: TestClient, suffix: str, status: int) -> None:
    url = served_image(client)
    assert client.get(url).status_code == 200  # cached now
    response = client.get(url + suffix)
    assert response.status_code == status, response.text


def test_ids_outside_the_range_and_unknown_ids_get_the_routes_errors(client: TestClient) -> None:
    assert client.get("/v1/images/2147483648").status_code == 422
    assert client.get("/v1/images/0").status_code == 422
    assert client.get("/v1/images/2147483647").status_code == 404


def run(app: CachedImageAnswers, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def http_scope(path: str, query: bytes = b"", method: str = "GET") -> Scope:
    originals, sizes = ImageCache(), ImageCache()
    originals.put(7, CachedImage(content=b"PNG", content_hash="abc"))
    sizes.put((7, 256), CachedImage(content=b"WEBP", content_hash="abc", media_type="image/webp"))
    state = SimpleNamespace(image_cache=originals, display_cache=sizes)
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [],
        "app": SimpleNamespace(state=state),
    }


async def downstream(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"route"})


def test_a_hit_never_reaches_the_route_and_a_miss_always_does() -> None:
    fast = CachedImageAnswers(downstream)
    scope = http_scope("/v1/images/7")
    hit = run(fast, scope)
    assert scope["route"].path == "/v1/images/{image_id}"  # what the metrics label it by
    assert hit[0]["status"] == 200
    assert hit[1]["body"] == b"PNG"
    assert (b"etag", display_etag("abc", None).encode()) in hit[0]["headers"]
    sized = run(fast, http_scope("/v1/images/7", b"w=256"))
    assert sized[1]["body"] == b"WEBP"
    assert (b"content-type", b"image/webp") in sized[0]["headers"]
    for scope in (
        http_scope("/v1/images/8"),  # not cached
        http_scope("/v1/images/7", b"w=512"),  # that width not cached
        http_scope("/v1/images/7", method="HEAD"),
        http_scope("/v1/images/7/"),
        http_scope("/v1/images/7", b"w=256&w=512"),
    ):
        assert run(fast, scope)[1]["body"] == b"route", scope
