"""Admin sign-in as an attacker tries it (issue 13): a throttle that refuses every credential
from a throttled address and counts failures on every admin surface; server-side sessions that
sign-out and token rotation end; weak secrets refused without being echoed; admin answers kept
out of caches."""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, update

from app import admin_auth
from app.admin_auth import MemoryAdminThrottle, RedisAdminThrottle, make_admin_throttle
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.main import create_app
from app.models import AdminSession, utcnow
from app.settings import Settings, SettingsInvalid, get_settings
from tests.conftest import TEST_ADMIN, TEST_SECRET

LIMIT = 3
BEARER = {"Authorization": f"Bearer {TEST_ADMIN}"}
WRONG_BEARER = {"Authorization": "Bearer not-the-admin-token"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


@contextmanager
def serve(settings: Settings, address: str = "203.0.113.7") -> Iterator[TestClient]:
    """The app on a database with a placeholder version serving, as seen from one address."""
    engine = make_engine(settings.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    with TestClient(create_app(settings), client=(address, 50000)) as client:
        yield client


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.model_copy(update={"admin_failures_per_minute": LIMIT})


@pytest.fixture
def client(limited: Settings) -> Iterator[TestClient]:
    with serve(limited) as test_client:
        yield test_client


def sign_in(client: TestClient) -> str:
    response = client.post(
        "/admin/login", content=f"token={TEST_ADMIN}".encode(), headers=FORM, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    cookie = client.cookies.get("pirloop_admin")
    assert cookie
    return cookie


def sessions(settings: Settings) -> list[AdminSession]:
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        rows = list(session.scalars(select(AdminSession)))
        session.expunge_all()
    engine.dispose()
    return rows


# 1. The throttle ------------------------------------------------------------------------------


def test_a_throttled_address_is_refused_even_with_the_right_token(client: TestClient) -> None:
    codes = [client.get("/v1/admin/serving", headers=WRONG_BEARER).status_code for _ in range(3)]
    assert codes == [401] * LIMIT
    right = client.get("/v1/admin/serving", headers=BEARER)
    assert right.status_code == 429, right.text
    assert int(right.headers["retry-after"]) > 0
    assert client.get("/admin", headers=BEARER).status_code == 429
    login = client.post(
        "/admin/login", content=f"token={TEST_ADMIN}".encode(), headers=FORM, follow_redirects=False
    )
    assert login.status_code == 429
    assert "pirloop_admin" not in login.headers.get("set-cookie", "")


def test_a_throttled_address_is_refused_even_with_a_valid_session(client: TestClient) -> None:
    sign_in(client)
    assert client.get("/v1/admin/serving").status_code == 200
    for _ in range(LIMIT):
        client.get("/v1/admin/serving", headers=WRONG_BEARER)
    # The session cookie is still valid, and still refused while the address is throttled.
    assert client.get("/v1/admin/serving").status_code == 429
    assert client.get("/admin", follow_redirects=False).status_code == 429
    assert client.post("/admin/actions/pause", follow_redirects=False).status_code == 429


def test_the_throttle_is_per_address(limited: Settings) -> None:
    with serve(limited, "198.51.100.1") as attacker:
        for _ in range(LIMIT):
            attacker.get("/v1/admin/serving", headers=WRONG_BEARER)
        assert attacker.get("/v1/admin/serving", headers=BEARER).status_code == 429
    with serve(limited, "198.51.100.2") as operator:
        assert operator.get("/v1/admin/serving", headers=BEARER).status_code == 200


def _wrong_cookie(client: TestClient, method: str, path: str) -> int:
    client.cookies.set("pirloop_admin", "forged-or-stale-session-id")
    try:
        return client.request(method, path, follow_redirects=False).status_code
    finally:
        client.cookies.clear()


def _wrong_bearer(client: TestClient, method: str, path: str) -> int:
    return client.request(method, path, headers=WRONG_BEARER, follow_redirects=False).status_code


def _wrong_login(client: TestClient, method: str, path: str) -> int:
    return client.post(path, content=b"token=a-guess", headers=FORM).status_code


Attempt = Callable[[TestClient, str, str], int]


@pytest.mark.parametrize(
    ("attempt", "method", "path", "status"),
    [
        (_wrong_cookie, "GET", "/admin", 303),
        (_wrong_bearer, "GET", "/admin", 303),
        (_wrong_cookie, "GET", "/admin/login", 200),
        (_wrong_login, "POST", "/admin/login", 401),
        (_wrong_cookie, "POST", "/admin/actions/pause", 303),
        (_wrong_bearer, "POST", "/admin/actions/cycle", 303),
        (_wrong_cookie, "POST", "/admin/versions/1/promote", 303),
        (_wrong_cookie, "GET", "/v1/admin/versions", 401),
        (_wrong_bearer, "POST", "/v1/admin/pause", 401),
    ],
)
def test_failures_count_on_every_admin_surface(
    client: TestClient, attempt: Attempt, method: str, path: str, status: int
) -> None:
    assert [attempt(client, method, path) for _ in range(LIMIT)] == [status] * LIMIT
    assert client.get("/v1/admin/serving", headers=BEARER).status_code == 429


def test_no_credential_on_a_page_is_not_a_failure(client: TestClient) -> None:
    """A first visit to the dashboard (no cookie yet) is sent to the form, not counted."""
    for _ in range(LIMIT + 2):
        assert client.get("/admin", follow_redirects=False).status_code == 303
        assert client.get("/admin/login").status_code == 200
    assert client.get("/v1/admin/serving", headers=BEARER).status_code == 200


def test_memory_throttle_window_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(admin_auth.time, "monotonic", lambda: now[0])
    throttle = MemoryAdminThrottle()
    for _ in range(LIMIT):
        assert throttle.retry_after("a", LIMIT) is None
        throttle.count_failure("a")
    assert throttle.retry_after("a", LIMIT) == pytest.approx(60)
    now[0] += 30
    assert throttle.retry_after("a", LIMIT) == pytest.approx(30)
    now[0] += 31
    assert throttle.retry_after("a", LIMIT) is None
    throttle.count_failure("a")  # a new window: one failure in it
    assert throttle.retry_after("a", LIMIT) is None


REDIS_URL = os.environ.get("PIRLOOP_TEST_REDIS", "redis://127.0.0.1:6379") + "/8"


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("PIRLOOP_REQUIRE_REDIS") == "1":
            pytest.fail("Redis is required")
        pytest.skip("Redis is not reachable")
    return REDIS_URL


@pytest.mark.redis
def test_redis_throttle_is_shared_by_api_processes(redis_url: str, tmp_path: Path) -> None:
    """Two API processes on one Redis: failures counted by one throttle the other."""
    from tests.conftest import make_settings

    address = f"192.0.2.{uuid.uuid4().int % 250 + 1}-{uuid.uuid4().hex[:8]}"
    first, second = RedisAdminThrottle(redis_url), RedisAdminThrottle(redis_url)
    assert isinstance(make_admin_throttle(redis_url), RedisAdminThrottle)
    for _ in range(LIMIT):
        assert second.retry_after(address, LIMIT) is None
        first.count_failure(address)
    wait = second.retry_after(address, LIMIT)
    assert wait is not None
    assert 0 < wait <= 60

    # The same through two apps (separate limiters, one Redis), as two API processes.
    db = tmp_path / "shared.db"
    from app import migrate

    migrate.upgrade(f"sqlite:///{db}")
    settings = make_settings(
        f"sqlite:///{db}", tmp_path, redis_url=redis_url, admin_failures_per_minute=LIMIT
    )
    app_address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.9"
    with serve(settings, app_address) as api_one, serve(settings, app_address) as api_two:
        assert api_two.app.state.admin_throttle is not api_one.app.state.admin_throttle
        for _ in range(LIMIT):
            assert api_one.get("/v1/admin/serving", headers=WRONG_BEARER).status_code == 401
        assert api_two.get("/v1/admin/serving", headers=BEARER).status_code == 429


def test_redis_outage_still_throttles_in_process() -> None:
    throttle = RedisAdminThrottle("redis://127.0.0.1:1/0")  # nothing listens there
    for _ in range(LIMIT):
        throttle.count_failure("a")
    assert throttle.retry_after("a", LIMIT) is not None


# 4. Server-side sessions ----------------------------------------------------------------------


def test_the_cookie_is_a_random_session_id_stored_hashed(
    client: TestClient, limited: Settings
) -> None:
    cookie = sign_in(client)
    assert TEST_ADMIN not in cookie
    assert len(cookie) >= 40
    [row] = sessions(limited)
    assert row.id_hash == hashlib.sha256(cookie.encode()).hexdigest()
    assert cookie not in (row.id_hash, row.token_fingerprint)
    assert TEST_ADMIN not in row.token_fingerprint
    assert row.revoked_at is None
    assert row.expires_at - row.created_at == timedelta(seconds=admin_auth.SESSION_SECONDS)
    assert client.get("/v1/admin/serving").status_code == 200
    assert client.get("/admin", follow_redirects=False).status_code == 200
    # A second sign-in is a session of its own.
    client.cookies.clear()
    assert sign_in(client) != cookie
    assert len(sessions(limited)) == 2


def test_sign_out_revokes_the_session(client: TestClient, limited: Settings) -> None:
    cookie = sign_in(client)
    client.post("/admin/logout", follow_redirects=False)
    assert sessions(limited)[0].revoked_at is not None
    # A copy of the cookie, presented after sign-out, no longer works anywhere.
    client.cookies.set("pirloop_admin", cookie)
    assert client.get("/v1/admin/serving").status_code == 401
    client.cookies.set("pirloop_admin", cookie)
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_rotating_the_admin_token_ends_every_session(limited: Settings) -> None:
    with serve(limited) as before:
        cookie = sign_in(before)
    rotated = limited.model_copy(update={"admin_token": "rotated-admin-token-9f8e7d6c5b4a3210"})
    with serve(rotated) as after:
        after.cookies.set("pirloop_admin", cookie)
        assert after.get("/v1/admin/serving").status_code == 401
        assert after.get("/v1/admin/serving", headers=BEARER).status_code == 401
    with serve(limited) as same:  # the same token as at sign-in: the session still works
        same.cookies.set("pirloop_admin", cookie)
        assert same.get("/v1/admin/serving").status_code == 200


def test_an_expired_session_is_refused(client: TestClient, limited: Settings) -> None:
    sign_in(client)
    engine = make_engine(limited.resolved_database_url)
    with engine.begin() as connection:
        connection.execute(update(AdminSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    engine.dispose()
    assert client.get("/v1/admin/serving").status_code == 401
    # The next sign-in clears sessions past their expiry.
    client.cookies.clear()
    sign_in(client)
    assert len(sessions(limited)) == 1


# 5. Secrets -----------------------------------------------------------------------------------

STRONG = {"secret_key": TEST_SECRET, "admin_token": TEST_ADMIN}


@pytest.mark.parametrize("name", ["secret_key", "admin_token"])
@pytest.mark.parametrize(
    "weak",
    [
        "a" * 16,  # one letter, 16 times
        "a" * 64,
        " " * 40,  # all spaces
        "abcabcabcabcabcabcabcabcabcabcabcabc",  # long, but 3 different characters
        "Z7kQ2mW9xR4vB8nL",  # random, but 16 characters
        f" {TEST_ADMIN} ",  # whitespace pasted around a good one
        "changeme",
    ],
)
def test_production_refuses_weak_secrets_and_says_the_rule(name: str, weak: str) -> None:
    Settings(environment="production", **STRONG)
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production", **{**STRONG, name: weak})
    message = str(refused.value)
    assert f"PIRLOOP_{name.upper()}" in message
    assert "at least 32 characters" in message
    assert "at least 8 different" in message
    Settings(environment="development", **{**STRONG, name: weak})


def assert_not_echoed(secret: str, text: str) -> None:
    parts = {secret[i : i + 5] for i in range(len(secret) - 4)}
    leaked = sorted(part for part in parts if part in text)
    assert not leaked, f"secret fragments {leaked} in: {text}"


LEAKY = "Qv8Jp3Xw0Rn"  # refused before and after the fix: a placeholder-length secret


@pytest.mark.parametrize("name", ["secret_key", "admin_token"])
def test_a_refused_secret_is_never_echoed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Constructed in code: the ValidationError's text quoted both ends of its input before
    # (so the weak secret goes last here).
    values = {key: value for key, value in STRONG.items() if key != name} | {name: LEAKY}
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production", **values)
    assert_not_echoed(LEAKY, str(refused.value))
    assert_not_echoed(LEAKY, repr(refused.value))
    # From the environment, as a start-up reads it.
    for key, value in values.items():
        monkeypatch.setenv(f"PIRLOOP_{key.upper()}", value)
    monkeypatch.setenv("PIRLOOP_ENVIRONMENT", "production")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsInvalid) as invalid:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert f"PIRLOOP_{name.upper()}" in str(invalid.value)
    assert_not_echoed(LEAKY, str(invalid.value))


def test_settings_repr_hides_the_secrets() -> None:
    secret_key, admin_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    settings = Settings(environment="production", secret_key=secret_key, admin_token=admin_token)
    assert_not_echoed(secret_key, repr(settings))
    assert_not_echoed(admin_token, repr(settings))


# 7. Admin answers are not cached --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/admin/serving", BEARER, 200),
        ("/v1/admin/versions", BEARER, 200),
        ("/v1/admin/exports/impressions", BEARER, 200),
        ("/v1/admin/serving", {}, 401),
        ("/admin", BEARER, 200),
        ("/admin/login", {}, 200),
    ],
)
def test_admin_answers_are_not_stored(
    client: TestClient, path: str, headers: dict[str, str], status: int
) -> None:
    response = client.get(path, headers=headers, follow_redirects=False)
    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"


def test_public_answers_keep_their_own_caching(client: TestClient) -> None:
    assert client.get("/healthz").headers.get("cache-control") != "no-store"


def test_same_origin_check_uses_the_public_url_not_the_host_header(settings: Settings) -> None:
    """Behind a proxy the request's Host is whatever reached pirloop; with PIRLOOP_PUBLIC_URL
    set, a cookie-authenticated change must come from that origin."""
    public = settings.model_copy(update={"public_url": "https://pirloop.example"})
    with serve(public) as client:
        sign_in(client)
        # The Host-derived origin (TestClient's http://testserver) is not the public one.
        forged = client.post("/v1/admin/pause", headers={"Origin": "http://testserver"})
        assert forged.status_code == 403
        own = client.post("/v1/admin/pause", headers={"Origin": "https://pirloop.example"})
        assert own.status_code == 200, own.text
