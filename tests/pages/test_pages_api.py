"""The pages and the admin API without a browser: auth, CSP, exports, beacon, pause."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_ADMIN
from tests.pages.seed import Seeded, seed_history

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN}"}


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    # Failed admin sign-ins are throttled per address (tests/app/test_ratelimit.py); here every
    # admin route is tried without credentials from one address, more than that limit allows.
    return create_app(
        settings.model_copy(
            update={"cors_origins": ["http://host.example"], "admin_failures_per_minute": 1000}
        )
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def seeded(client: TestClient, settings: Settings) -> Seeded:
    return seed_history(settings, per_image=8)


def test_every_admin_api_route_refuses_without_credentials(
    app: FastAPI, client: TestClient
) -> None:
    # Every operation the API documents under /v1/admin.
    operations = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/v1/admin")
        for method in item
    ]
    assert len(operations) >= 8
    for method, template in operations:
        path = template.replace("{version_id}", "1").replace("{table}", "impressions")
        for headers in ({}, {"Authorization": "Bearer wrong-token"}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin"),
        ("POST", "/admin/actions/cycle"),
        ("POST", "/admin/actions/pause"),
        ("POST", "/admin/actions/resume"),
        ("POST", "/admin/versions/1/promote"),
    ],
)
def test_admin_pages_redirect_to_login(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"


def test_login_sets_strict_httponly_cookie_and_logout_clears_it(client: TestClient) -> None:
    wrong = client.post("/admin/login", data={"token": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401
    assert "pirloop_admin" not in wrong.headers.get("set-cookie", "")
    right = client.post("/admin/login", data={"token": TEST_ADMIN}, follow_redirects=False)
    assert right.status_code == 303
    cookie = right.headers["set-cookie"].lower()
    assert "pirloop_admin=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert client.get("/admin", follow_redirects=False).status_code == 200
    assert client.get("/v1/admin/serving").status_code == 200  # the cookie works on the API
    # A cookie-authenticated change from another origin is refused.
    foreign = client.post("/v1/admin/pause", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    client.post("/admin/logout", follow_redirects=False)
    assert client.get("/admin", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("path", ["/rate", "/demo/host", "/admin/login", "/admin"])
def test_pages_set_csp_and_have_no_inline_script(client: TestClient, path: str) -> None:
    response = client.get(path, headers=ADMIN)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", response.text, flags=re.S)
    assert scripts or path == "/admin/login"
    for attributes, body in scripts:
        assert 'src="' in attributes
        assert body.strip() == ""
    assert not re.search(r"\son[a-z]+=", response.text)  # no inline event handlers
    assert " style=" not in response.text


def test_dashboard_escapes_what_it_renders(
    client: TestClient, settings: Settings, seeded: Seeded
) -> None:
    from app.database import make_engine, make_session_factory, session_scope
    from app.models import GeneratorVersion

    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        session.get(GeneratorVersion, seeded.version_ids[-1]).source = "<script>x()</script>"
    engine.dispose()
    page = client.get("/admin", headers=ADMIN).text
    assert "<script>x()</script>" not in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in page
    assert page.count("<svg") >= 6


def test_dashboard_plots_predicted_against_measured_change(
    client: TestClient, seeded: Seeded
) -> None:
    page = client.get("/admin", headers=ADMIN).text
    figure = page[page.index("Predicted against measured change") :]
    figure = figure[: figure.index("</svg>")]
    # The seeded v2 recorded a measured +0.02 and its estimator predicted +0.016.
    assert f"v{seeded.version_ids[1]}: measured +0.0200, predicted +0.0160" in figure
    assert figure.count("<circle") >= 1


def test_embed_script_is_loadable_cross_origin(client: TestClient) -> None:
    response = client.get("/embed.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["access-control-allow-origin"] == "*"
    assert "content-security-policy" not in response.headers


def test_cors_preflight_for_impressions(client: TestClient) -> None:
    response = client.options(
        "/v1/impressions",
        headers={
            "Origin": "http://host.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://host.example"
    refused = client.options(
        "/v1/impressions",
        headers={"Origin": "http://other.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400


def test_beacon_takes_text_plain_json_with_the_same_rules(
    client: TestClient, seeded: Seeded
) -> None:
    served = client.post("/v1/impressions", json={"placement": "background"}).json()
    body = f'{{"token": "{served["token"]}", "kind": "click"}}'
    first = client.post(
        "/v1/interactions/beacon", content=body, headers={"Content-Type": "text/plain"}
    )
    assert first.status_code == 201, first.text
    assert first.json()["kind"] == "click"
    again = client.post("/v1/interactions", json={"token": served["token"], "kind": "click"})
    assert again.status_code == 200  # one code path: the JSON route sees the beacon's row
    bad = client.post(
        "/v1/interactions/beacon",
        content=f'{{"token": "{served["token"]}", "kind": "dwell", "value": -1}}',
        headers={"Content-Type": "text/plain"},
    )
    same = client.post(
        "/v1/interactions", json={"token": served["token"], "kind": "dwell", "value": -1}
    )
    assert bad.status_code == same.status_code == 422
    assert bad.json()["message"] == same.json()["message"]
    junk = client.post("/v1/interactions/beacon", content="not json")
    assert junk.status_code == 422
    assert junk.json()["error"] == "validation_error"


def _csv_rows(client: TestClient, table: str, **params: object) -> list[dict[str, str]]:
    response = client.get(
        f"/v1/admin/exports/{table}", params={"format": "csv", **params}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_exports_filter_by_version_and_traffic(client: TestClient, seeded: Seeded) -> None:
    version = seeded.version_ids[1]
    for traffic, simulated in (("real", False), ("simulated", True)):
        rows = _csv_rows(client, "impressions", version_id=version, traffic=traffic)
        assert len(rows) == seeded.impressions[(version, simulated)]
        assert {r["version_id"] for r in rows} == {str(version)}
        assert {r["simulated"] for r in rows} == {"true" if simulated else "false"}
        clicks = _csv_rows(client, "interactions", version_id=version, traffic=traffic)
        assert len(clicks) == seeded.interactions[(version, simulated)]
    everything = _csv_rows(client, "impressions", version_id="")
    assert len(everything) == sum(seeded.impressions.values())

    parquet = client.get(
        "/v1/admin/exports/interactions",
        params={"format": "parquet", "traffic": "real"},
        headers=ADMIN,
    )
    assert parquet.status_code == 200
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == sum(n for (_, sim), n in seeded.interactions.items() if not sim)
    assert set(table.column("simulated").to_pylist()) == {False}


def test_pause_resume_and_roll_back(client: TestClient, seeded: Seeded) -> None:
    newest, older = seeded.version_ids[-1], seeded.version_ids[0]
    paused = client.post("/v1/admin/pause", headers=ADMIN)
    assert paused.json() == {"serving_version": None, "paused_version": newest, "paused": True}
    assert client.post("/v1/impressions", json={"placement": "background"}).status_code == 503
    blank = client.get("/v1/embed/image", follow_redirects=False)
    assert blank.status_code == 200
    assert blank.headers["cache-control"] == "no-store"
    assert client.post("/v1/admin/pause", headers=ADMIN).status_code == 409

    assert client.post("/v1/admin/resume", headers=ADMIN).json()["serving_version"] == newest
    served = client.post("/v1/impressions", json={"placement": "background"}).json()
    assert served["generator_version"] == newest

    rolled = client.post(f"/v1/admin/versions/{older}/promote", headers=ADMIN)
    assert rolled.json()["serving_version"] == older
    served = client.post("/v1/impressions", json={"placement": "background"}).json()
    assert served["generator_version"] == older
    assert client.post("/v1/admin/versions/9999/promote", headers=ADMIN).status_code == 404


def test_img_embed_redirects_to_a_fresh_impression(client: TestClient, seeded: Seeded) -> None:
    before = len(_csv_rows(client, "impressions"))
    first = client.get("/v1/embed/image?placement=background", follow_redirects=False)
    second = client.get("/v1/embed/image?placement=background", follow_redirects=False)
    assert first.status_code == second.status_code == 303
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["location"] != second.headers["location"]
    assert client.get(first.headers["location"]).content.startswith(b"\x89PNG")
    assert len(_csv_rows(client, "impressions")) == before + 2


def test_dashboard_api_lists_versions_and_live_counts(client: TestClient, seeded: Seeded) -> None:
    rows = client.get(
        "/v1/admin/versions", params={"include_simulated": True}, headers=ADMIN
    ).json()
    assert [r["id"] for r in rows] == list(reversed(seeded.version_ids))
    middle = next(r for r in rows if r["id"] == seeded.version_ids[1])
    assert middle["comparison_source"] == "recorded"
    assert middle["comparison"]["p_value"] == pytest.approx(0.031)
    assert middle["estimated_delta"] == pytest.approx(0.016)
    newest = rows[0]
    assert newest["comparison_source"] == "live"
    assert newest["impressions"] == sum(
        n for (v, _), n in seeded.impressions.items() if v == newest["id"]
    )
    live = client.get("/v1/admin/live", headers=ADMIN).json()
    recent = sum(live["impressions_real"]) + sum(live["impressions_simulated"])
    assert recent == sum(n for (v, _), n in seeded.impressions.items() if v == newest["id"])
