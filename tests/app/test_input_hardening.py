"""Public input that once answered 500 or was trusted too far (issue 13): ids outside the
id columns, non-finite numbers, absurd nesting, chunked bodies past the limit, the Host
header, `simulated` from anyone, and the in-memory rate limiter holding many keys. On
SQLite and PostgreSQL where a database is involved."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.models import Impression
from app.ratelimit import MemoryRateLimiter
from app.settings import Settings
from app.tokens import sign_impression
from tests.conftest import SIMULATION_HEADERS, TEST_SECRET, make_settings

# --- ids outside the id columns --------------------------------------------------------

OUT_OF_RANGE_IDS = [2**31, 2**63 - 1, 2**63, 2**64, 0, -1]
ID_PATHS = [
    "/v1/images/{id}",
    "/v1/versions/{id}",
    "/v1/versions/{id}/pir",
    "/v1/versions/{id}/images",
    "/v1/versions/{id}/comparison",
    "/v1/rollouts/{id}",
]


@contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    seen: list[str] = []

    def record(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_out_of_range_path_ids_are_422_before_any_query(client: TestClient) -> None:
    for path in ID_PATHS:
        for value in OUT_OF_RANGE_IDS:
            with statements(client) as seen:
                answer = client.get(path.format(id=value))
            assert answer.status_code == 422, (path, value, answer.text)
            assert answer.json()["error"] == "validation_error"
            assert seen == [], (path, value)
    # The largest id the columns hold is a plain 404.
    assert client.get(f"/v1/images/{2**31 - 1}").status_code == 404
    assert client.get(f"/v1/versions/{2**31 - 1}/pir").status_code == 404


def forged_token(impression_id: int, image_id: int) -> str:
    """A token signed with the service's own secret (what a leaked secret, or an older
    deployment, could hand out): the ids inside it are the only ids a body carries."""
    token, _ = sign_impression(
        TEST_SECRET, impression_id=impression_id, image_id=image_id, ttl_seconds=60
    )
    return token


@pytest.mark.parametrize(
    ("impression_id", "image_id"), [(2**63, 1), (2**70, 2**70), (1, 2**31), (0, 1)]
)
def test_ids_in_tokens_outside_the_columns_are_401_not_500(
    client: TestClient, impression_id: int, image_id: int
) -> None:
    token = forged_token(impression_id, image_id)
    body = {"token": token, "kind": "click"}
    for path in ("/v1/interactions", "/v1/interactions/beacon"):
        answer = client.post(path, json=body)
        assert answer.status_code == 401, answer.text
        assert "out of range" in answer.json()["message"]

    good = client.post("/v1/impressions", json={"placement": "background"}).json()
    batch = client.post(
        "/v1/interactions/batch",
        json={"interactions": [body, {"token": good["token"], "kind": "click"}]},
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert results[0]["status"] == "rejected"
    assert results[0]["error"]["error"] == "unauthorized"
    assert results[1]["status"] == "created"


# --- non-finite numbers, nesting, chunked bodies ---------------------------------------

NON_FINITE = ["Infinity", "-Infinity", "1e400", '"inf"', '"-inf"', "NaN", '"nan"']


def rating_body(token: str, raw_value: str) -> str:
    return f'{{"token": "{token}", "kind": "rating", "value": {raw_value}}}'


@pytest.mark.parametrize("raw_value", NON_FINITE)
def test_non_finite_values_are_422_naming_the_problem(client: TestClient, raw_value: str) -> None:
    token = client.post("/v1/impressions", json={"placement": "rating"}).json()["token"]
    body = rating_body(token, raw_value)
    for path, content_type in (
        ("/v1/interactions", "application/json"),
        ("/v1/interactions/beacon", "text/plain"),
    ):
        answer = client.post(path, content=body, headers={"content-type": content_type})
        assert answer.status_code == 422, (path, answer.text)
        assert "finite number" in answer.json()["message"], answer.text


def test_a_non_finite_item_is_rejected_alone_in_a_batch(client: TestClient) -> None:
    tokens = [
        client.post("/v1/impressions", json={"placement": "rating"}).json()["token"]
        for _ in range(len(NON_FINITE) + 1)
    ]
    items = [rating_body(token, raw) for token, raw in zip(tokens, NON_FINITE, strict=False)]
    items.append(rating_body(tokens[-1], "4"))
    answer = client.post(
        "/v1/interactions/batch",
        content='{"interactions": [' + ", ".join(items) + "]}",
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * len(NON_FINITE) + ["created"]
    assert all("finite number" in r["error"]["message"] for r in results[:-1])
    assert results[-1]["value"] == 4.0


DEEP = "[" * 8000 + "]" * 8000


@pytest.mark.parametrize(
    "path",
    ["/v1/interactions/beacon", "/v1/interactions", "/v1/impressions", "/v1/interactions/batch"],
)
def test_deeply_nested_bodies_are_4xx(client: TestClient, path: str) -> None:
    answer = client.post(path, content=DEEP, headers={"content-type": "application/json"})
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["error"] in ("bad_request", "validation_error")


def test_a_deeply_nested_item_is_rejected_alone_in_a_batch(client: TestClient) -> None:
    token = client.post("/v1/impressions", json={"placement": "background"}).json()["token"]
    nested = "[" * 500 + "]" * 500  # within the JSON parser's depth: the item is judged
    answer = client.post(
        "/v1/interactions/batch",
        content=f'{{"interactions": [{nested}, {{"token": "{token}", "kind": "click"}}]}}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["rejected", "created"]


def chunks(size: int) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), in 1 KiB pieces."""
    for _ in range(size // 1024 + 1):
        yield b" " * 1024


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/v1/interactions", "max_body_bytes"),
        ("/v1/interactions/beacon", "max_body_bytes"),
        ("/v1/impressions", "max_body_bytes"),
        ("/v1/interactions/batch", "max_batch_body_bytes"),
    ],
)
def test_oversized_chunked_bodies_are_413(
    client: TestClient, settings: Settings, path: str, limit: str
) -> None:
    size = int(getattr(settings, limit)) + 4096
    answer = client.post(path, content=chunks(size), headers={"content-type": "application/json"})
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == "payload_too_large"


# --- the Host header --------------------------------------------------------------------

EVIL_HOST = {"host": "evil.example"}


def test_image_urls_and_redirects_never_take_the_host_header(client: TestClient) -> None:
    served = client.post(
        "/v1/impressions", json={"placement": "background"}, headers=EVIL_HOST
    ).json()
    assert served["image_url"] == f"/v1/images/{served['image_id']}"
    assert client.get(served["image_url"]).status_code == 200

    redirect = client.get("/v1/embed/image", headers=EVIL_HOST, follow_redirects=False)
    assert redirect.status_code == 303
    assert redirect.headers["location"].startswith("/v1/images/")

    page = client.get("/demo/host", headers=EVIL_HOST)
    assert page.status_code == 200
    assert "evil.example" not in page.text


@pytest.fixture
def public_client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    public = make_settings(
        settings.database_url, tmp_path, public_url="https://pirloop.example.com/"
    )
    engine = make_engine(public.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), public, placeholder=True)
    engine.dispose()
    with TestClient(create_app(public)) as test_client:
        yield test_client


def test_public_url_makes_absolute_urls(public_client: TestClient) -> None:
    served = public_client.post(
        "/v1/impressions", json={"placement": "background"}, headers=EVIL_HOST
    ).json()
    assert served["image_url"] == f"https://pirloop.example.com/v1/images/{served['image_id']}"
    redirect = public_client.get("/v1/embed/image", headers=EVIL_HOST, follow_redirects=False)
    assert redirect.headers["location"].startswith("https://pirloop.example.com/v1/images/")
    page = public_client.get("/demo/host", headers=EVIL_HOST).text
    assert 'src="https://pirloop.example.com/embed.js"' in page
    assert "evil.example" not in page


@pytest.mark.parametrize("bad", ["pirloop.example.com", "ftp://x.example", "https://u:p@x.example"])
def test_public_url_must_be_an_http_url(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="public_url"):
        make_settings("", tmp_path, public_url=bad)


# --- simulated traffic needs the simulation key -----------------------------------------


def stored_impressions(settings: Settings) -> list[tuple[bool, bool]]:
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(Impression.simulated, Impression.flagged)).all()
    engine.dispose()
    return [(bool(simulated), bool(flagged)) for simulated, flagged in rows]


@pytest.mark.parametrize(
    "headers", [{}, {"X-Pirloop-Simulation-Key": "wrong"}, {"X-Pirloop-Simulation-Key": ""}]
)
def test_simulated_without_the_key_is_403_and_stores_nothing(
    client: TestClient, settings: Settings, headers: dict[str, str]
) -> None:
    answer = client.post(
        "/v1/impressions", json={"placement": "background", "simulated": True}, headers=headers
    )
    assert answer.status_code == 403, answer.text
    assert "X-Pirloop-Simulation-Key" in answer.json()["message"]
    assert stored_impressions(settings) == []


def test_simulated_with_the_key_is_stored_simulated(client: TestClient, settings: Settings) -> None:
    simulated = client.post(
        "/v1/impressions",
        json={"placement": "background", "simulated": True},
        headers=SIMULATION_HEADERS,
    )
    real = client.post("/v1/impressions", json={"placement": "background"})
    assert (simulated.status_code, real.status_code) == (201, 201)
    assert sorted(stored_impressions(settings)) == [(False, False), (True, False)]


def test_no_simulation_key_set_means_no_simulated_traffic(
    settings: Settings, tmp_path: Path
) -> None:
    closed = make_settings(settings.database_url, tmp_path, simulation_key="")
    engine = make_engine(closed.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), closed, placeholder=True)
    engine.dispose()
    with TestClient(create_app(closed)) as client:
        answer = client.post(
            "/v1/impressions",
            json={"placement": "background", "simulated": True},
            headers={"X-Pirloop-Simulation-Key": ""},
        )
    assert answer.status_code == 403
    assert "PIRLOOP_SIMULATION_KEY" in answer.json()["message"]


def test_openapi_says_simulated_needs_the_key(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/impressions"]["post"]
    assert "403" in operation["responses"]
    headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
    assert headers == ["X-Pirloop-Simulation-Key"]
    simulated = schema["components"]["schemas"]["ImpressionCreate"]["properties"]["simulated"]
    assert "X-Pirloop-Simulation-Key" in simulated["description"]


# --- the in-memory rate limiter with many keys ------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_limiter_stays_exact_with_many_keys() -> None:
    """200,000 keys: a limited key stays limited, an idle key refills, and the keys idle for
    two windows are forgotten by the rotation alone (the old limiter scanned every key on
    every hit past 100,000 keys, ~9 ms a hit)."""
    clock = FakeClock()
    limiter = MemoryRateLimiter(window=120.0, clock=clock)
    for _ in range(60):
        assert limiter.hit("ip:busy", 60) is None
    assert limiter.hit("ip:busy", 60) == pytest.approx(1.0)

    for n in range(200_000):
        assert limiter.hit(f"visitor:{n}", 60) is None
    assert len(limiter) == 200_001
    # Still exhausted: nothing of the crowd touched it.
    assert limiter.hit("ip:busy", 60) == pytest.approx(1.0)

    # Past the first window: the rotation moves everything to the previous generation, and
    # a bucket found there keeps its state.
    clock.now += 120.5
    assert limiter.hit("ip:busy", 60) is None  # refilled over two minutes
    for _ in range(59):
        assert limiter.hit("ip:busy", 60) is None
    assert limiter.hit("ip:busy", 60) == pytest.approx(1.0)
    assert limiter.hit("visitor:7", 60, cost=60) is None  # found, full, drained now
    assert limiter.hit("visitor:7", 60) == pytest.approx(1.0)

    # One more window: the 199,999 keys idle since the start are gone, the two touched in the
    # last window stay, with their state.
    clock.now += 120.5
    assert limiter.hit("ip:other", 60) is None
    assert len(limiter) == 3
    assert limiter.hit("ip:busy", 60) is None  # refilled: 120 s at one token a second
    # A forgotten key starts full again: it had refilled long ago.
    assert limiter.hit("visitor:8", 60, cost=60) is None


def test_memory_limiter_forgets_everything_after_a_long_idle() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(window=120.0, clock=clock)
    for n in range(1000):
        limiter.hit(f"k{n}", 10)
    clock.now += 1000
    limiter.hit("new", 10)
    assert len(limiter) == 1
