"""The pages and the admin API without a browser: auth, CSP, exports, beacon, pause, and the
dashboard's live comparison of a rollout."""

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
        ("POST", "/admin/actions/stop-rollout"),
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


def test_dashboard_shows_each_versions_realism_and_diversity(
    client: TestClient, seeded: Seeded
) -> None:
    rows = {r["id"]: r for r in client.get("/v1/admin/versions", headers=ADMIN).json()}
    page = client.get("/admin", headers=ADMIN).text
    for version in seeded.version_ids[1:]:
        quality = rows[version]["quality"]
        assert quality is not None
        assert quality["realism_kid"] > 0
        # KID in the usual unit (×10³) with its standard error, and the diversity beside it.
        cell = f'KID {1000 * quality["realism_kid"]:.1f} <span class="sub">± 4.5</span>'
        assert cell in page
        assert f"diversity {quality['diversity']:.3f}" in page


def test_dashboard_plots_predicted_against_measured_change(
    client: TestClient, seeded: Seeded
) -> None:
    rows = {r["id"]: r for r in client.get("/v1/admin/versions", headers=ADMIN).json()}
    page = client.get("/admin", headers=ADMIN).text
    figure = page[page.index("Predicted against measured change") :]
    figure = figure[: figure.index("</svg>")]
    labels = dict(re.findall(r"<title>v(\d+): measured ([^<]+)</title>", figure))
    # Versions decided by a rollout are plotted with their concurrent comparison, the older
    # one with its before/after change, each labelled and coloured as such.
    v2, v3, v4 = seeded.version_ids[1:]
    for version, kind, against in (
        (v2, "before/after", seeded.version_ids[0]),
        (v3, "concurrent", v2),
        (v4, "concurrent", v3),
    ):
        row = rows[version]
        assert labels[str(version)] == (
            f"{row['comparison']['delta']:+.4f} ({kind} vs v{against}), "
            f"predicted {row['estimated_delta']:+.4f}"
        )
    assert "concurrent (rollout)" in figure
    assert "before/after (confounded with time)" in figure


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
    champion, older = seeded.champion_id, seeded.version_ids[0]
    paused = client.post("/v1/admin/pause", headers=ADMIN)
    assert paused.json()["serving_version"] is None
    assert paused.json()["paused_version"] == champion
    assert paused.json()["paused"] is True
    assert paused.json()["arms"] == []
    assert client.post("/v1/impressions", json={"placement": "background"}).status_code == 503
    blank = client.get("/v1/embed/image", follow_redirects=False)
    assert blank.status_code == 200
    assert blank.headers["cache-control"] == "no-store"
    assert client.post("/v1/admin/pause", headers=ADMIN).status_code == 409

    resumed = client.post("/v1/admin/resume", headers=ADMIN).json()
    assert resumed["serving_version"] == champion
    # The running rollout's candidate is served beside the champion again.
    assert {a["version_id"]: a["role"] for a in resumed["arms"]} == {
        champion: "champion",
        seeded.candidate_id: "candidate",
    }
    served = client.post("/v1/impressions", json={"placement": "background"}).json()
    assert served["generator_version"] in (champion, seeded.candidate_id)

    rolled = client.post(f"/v1/admin/versions/{older}/promote", headers=ADMIN)
    assert rolled.json()["serving_version"] == older
    assert rolled.json()["candidate_version"] is None  # the rollout was cancelled
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
    sources = {r["id"]: r["comparison_source"] for r in rows}
    v1, v2, v3, v4 = seeded.version_ids
    assert sources == {v1: None, v2: "before_after", v3: "rollout", v4: "rollout"}
    middle = next(r for r in rows if r["id"] == v2)
    assert middle["estimated_delta"] == pytest.approx(0.016)
    newest = rows[0]
    assert newest["status"] == "candidate"
    assert newest["impressions"] == sum(
        n for (v, _), n in seeded.impressions.items() if v == newest["id"]
    )
    live = client.get("/v1/admin/live", headers=ADMIN).json()
    recent = sum(live["impressions_real"]) + sum(live["impressions_simulated"])
    assert recent == seeded.recent_impressions


# --- The live comparison on the dashboard ------------------------------------------------


def _section(page: str, element_id: str) -> str:
    """The page from the element with this id to the end of the section holding it."""
    start = page.index(f'id="{element_id}"')
    return page[start : page.index("</section>", start)]


def _edit_running_rollout(settings: Settings, **latest: object) -> None:
    from app import rollout
    from app.database import make_engine, make_session_factory, session_scope

    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        running = rollout.running_rollout(session)
        assert running is not None
        running.latest = {**running.latest, **latest}
    engine.dispose()


def test_dashboard_shows_the_live_comparison(
    client: TestClient, settings: Settings, seeded: Seeded
) -> None:
    state = client.get("/v1/admin/serving", headers=ADMIN).json()
    current = client.get("/v1/rollouts/current").json()
    page = client.get("/admin", headers=ADMIN).text
    panel = _section(page, "comparison")
    champion, candidate = seeded.champion_id, seeded.candidate_id
    assert f"candidate v{candidate} against champion v{champion}" in panel
    # The arms with their shares now and their numbers at the last look.
    arms = re.findall(
        r'<tr class="arm-(\w+)"><td><span class="badge \w+">\w+</span> v(\d+)</td>\s*'
        r"<td>([\d.]+)%</td>\s*<td class=\"images\">(\d+)</td>\s*<td>(\d+)</td>",
        panel,
    )
    latest = current["latest"]
    assert arms == [
        (
            arm["role"],
            str(arm["version_id"]),
            f"{arm['share'] * 100:.1f}",
            str(latest[arm["role"]]["images"]),
            str(latest[arm["role"]]["impressions"]),
        )
        for arm in state["arms"]
    ]
    assert [a[2] for a in arms] == ["50.0", "50.0"]
    # The split and its sample-ratio check.
    split = latest["sample_ratio"]
    assert not split["mismatch"]
    assert f"({split['observed'][0]} / {split['observed'][1]} impressions" in panel
    assert f"anytime-valid p = {split['p_value']:.3g}" in panel
    assert f"χ² p = {split['chi_square_p']:.3g}" in panel
    assert "split healthy" in panel
    # The decision and its reason, the interval, the guardrails.
    assert '<span class="badge outcome continue">continue</span>' in panel
    assert f"look {seeded.looks})" in panel
    assert f'<p class="reason">{latest["reason"]}</p>' in panel
    primary = latest["primary"]
    assert f"[{primary['ci_low']:+.4f}, {primary['ci_high']:+.4f}]" in panel
    guardrails = _section(page, "guardrails")
    dwell = latest["harm_checks"]["dwell_seconds"]
    assert "dwell time per report (s)" in guardrails
    assert f"[{dwell['ci_low']:+.3f}, {dwell['ci_high']:+.3f}]" in guardrails
    assert guardrails.count('<span class="badge good">ok</span>') == 2
    # The interval narrowing over the looks: one band point above and one below per look.
    band = re.search(r'<path class="band" d="([^"]+)"', panel)
    assert band is not None
    assert len(re.findall(r"[\d.]+,[\d.]+", band.group(1))) == 2 * seeded.looks
    assert '<line class="zero"' in panel
    assert panel.count('<polyline class="curve"') == 2  # each arm's PIR
    # The operator's two verdicts, same-origin forms like the other buttons.
    assert f'action="/admin/versions/{candidate}/promote"' in panel
    assert "Promote candidate</button>" in panel
    assert 'action="/admin/actions/stop-rollout"' in panel
    assert "Stop rollout (reject candidate)</button>" in panel
    assert "No holdout arm" in _section(page, "holdout")


def test_dashboard_lists_the_decision_history(client: TestClient, seeded: Seeded) -> None:
    decided = client.get(f"/v1/rollouts/{seeded.decided_rollout_id}").json()
    history = _section(client.get("/admin", headers=ADMIN).text, "history")
    rows = re.findall(r'<tr class="rollout-(\w+)">(.*?)</tr>', history, flags=re.S)
    assert [status for status, _ in rows] == ["running", "promoted"]
    running, promoted = (cells for _, cells in rows)
    assert f"v{seeded.candidate_id} vs v{seeded.champion_id}" in running
    v2 = seeded.version_ids[1]
    assert f"v{seeded.champion_id} vs v{v2}" in promoted
    assert "<td>automatic</td>" in promoted
    assert decided["reason"].startswith("better than the champion")
    assert decided["reason"] in promoted
    assert decided["decided_at"][:16].replace("T", " ") + " UTC" in promoted
    final = decided["latest"]["primary"]
    assert f"[{final['ci_low']:+.4f}, {final['ci_high']:+.4f}]" in promoted
    assert final["ci_low"] > 0


def test_dashboard_labels_concurrent_and_before_after_changes(
    client: TestClient, seeded: Seeded
) -> None:
    versions = _section(client.get("/admin", headers=ADMIN).text, "versions")
    labels = {
        int(version): (kind, against)
        for version, kind, against in re.findall(
            r'href="/admin\?version=(\d+)[^"]*">.*?'
            r'<div class="sub"><span class="badge source \w+"[^>]*>([^<]+)</span>\s*'
            r"vs (?:champion|parent) v(\d+)</div>",
            versions,
            flags=re.S,
        )
    }
    v1, v2, v3, v4 = seeded.version_ids
    assert labels == {
        v2: ("before/after", str(v1)),
        v3: ("concurrent", str(v2)),
        v4: ("concurrent", str(v3)),
    }
    assert "confounded with anything that changed in between" in versions


def test_a_broken_split_shows_the_decision_frozen(
    client: TestClient, settings: Settings, seeded: Seeded
) -> None:
    current = client.get("/v1/rollouts/current").json()["latest"]
    reason = "sample ratio mismatch (anytime-valid p = 1e-07 < 0.001): the decision is frozen"
    _edit_running_rollout(
        settings,
        frozen=True,
        reason=reason,
        sample_ratio={**current["sample_ratio"], "p_value": 1e-7, "mismatch": True},
    )
    panel = _section(client.get("/admin", headers=ADMIN).text, "comparison")
    assert 'class="decision outcome-continue frozen"' in panel
    assert '<span class="badge outcome continue">frozen</span>' in panel
    assert "sample ratio mismatch: decision frozen" in panel
    assert "split healthy" not in panel
    assert reason.replace("<", "&lt;") in panel  # escaped, as everything the page shows


def test_stop_rollout_button_rejects_the_candidate(client: TestClient, seeded: Seeded) -> None:
    stopped = client.post("/admin/actions/stop-rollout", headers=ADMIN, follow_redirects=False)
    assert stopped.status_code == 303
    assert stopped.headers["location"] == "/admin?notice=stopped"
    page = client.get(stopped.headers["location"], headers=ADMIN).text
    assert "Rollout stopped" in page
    panel = _section(page, "comparison")
    assert "No candidate is under evaluation" in panel
    assert "stop-rollout" not in panel
    assert re.findall(r'<tr class="arm-(\w+)">', panel) == ["champion"]
    history = _section(page, "history")
    first = re.search(r'<tr class="rollout-(\w+)">(.*?)</tr>', history, flags=re.S)
    assert first is not None
    assert first.group(1) == "rejected"
    assert "<td>manual</td>" in first.group(2)
    assert "stopped by an operator" in first.group(2)
    # Once nothing runs, stopping again is refused with the reason, on the page itself.
    again = client.post("/admin/actions/stop-rollout", headers=ADMIN)
    assert again.status_code == 409
    assert "no rollout is running" in again.text


def test_promote_candidate_button_records_a_manual_promotion(
    client: TestClient, seeded: Seeded
) -> None:
    promoted = client.post(
        f"/admin/versions/{seeded.candidate_id}/promote", headers=ADMIN, follow_redirects=False
    )
    assert promoted.status_code == 303
    assert client.get("/v1/admin/serving", headers=ADMIN).json()["serving_version"] == (
        seeded.candidate_id
    )
    history = _section(client.get("/admin", headers=ADMIN).text, "history")
    first = re.search(r'<tr class="rollout-(\w+)">(.*?)</tr>', history, flags=re.S)
    assert first is not None
    assert first.group(1) == "promoted"
    assert "<td>manual</td>" in first.group(2)
    assert "promoted by an operator" in first.group(2)


def test_dashboard_shows_the_hold_after_a_rollback_and_a_cycle_in_progress(
    client: TestClient, settings: Settings, seeded: Seeded
) -> None:
    from app.database import make_engine, make_session_factory, session_scope
    from app.models import RunStatus, TrainingRun

    page = client.get("/admin", headers=ADMIN).text
    assert "Automatic learning is held" not in page
    assert 'action="/admin/actions/cycle"' in page
    rolled = client.post(f"/v1/admin/versions/{seeded.version_ids[1]}/promote", headers=ADMIN)
    assert rolled.status_code == 200
    held = client.get("/admin", headers=ADMIN).text
    start = held.index('<div class="hold"')
    notice = held[start : held.index("</div>", start)]
    assert "Automatic learning is held." in notice
    assert rolled.json()["learning_held"] in notice
    assert "Starting a cycle" in notice
    assert "resumes learning" in notice

    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        session.add(
            TrainingRun(
                kind="cycle",
                status=RunStatus.running,
                metrics={"progress": {"phase": "tuning", "step": 40, "total": 200}},
            )
        )
    engine.dispose()
    cycle = _section(client.get("/admin", headers=ADMIN).text, "cycle")
    assert "Learning cycle" in cycle
    assert '<span class="badge training">running</span>' in cycle
    assert "tuning · step 40 of 200" in cycle
    assert '<progress max="200" value="40"' in cycle
    assert 'action="/admin/actions/cycle"' not in cycle  # one cycle at a time


def test_dashboard_shows_the_holdout_arm_and_its_gain(
    settings: Settings,
) -> None:
    with_holdout = settings.model_copy(update={"holdout_share": 0.1})
    with TestClient(create_app(with_holdout)) as client:
        seeded = seed_history(with_holdout, per_image=8)
        gain = client.get("/v1/admin/holdout", headers=ADMIN).json()
        page = client.get("/admin", headers=ADMIN).text
    first = seeded.version_ids[0]
    arms = re.findall(r'<tr class="arm-(\w+)">.*? v(\d+)</td>\s*<td>([\d.]+)%</td>', page)
    assert arms == [
        ("champion", str(seeded.champion_id), "45.0"),
        ("candidate", str(seeded.candidate_id), "45.0"),
        ("holdout", str(first), "10.0"),
    ]
    holdout = _section(page, "holdout")
    assert gain["holdout_version"] == first
    assert f"Champion v{seeded.champion_id} against holdout v{first}" in holdout
    assert f"{gain['delta']:+.4f}" in holdout
    assert f"[{gain['ci_low']:+.4f}, {gain['ci_high']:+.4f}]" in holdout
    # A difference of two rates: the interval never claims more than [-1, 1] (the seeded
    # holdout's 80 impressions give a sequence wider than that).
    assert -1.0 <= gain["ci_low"] <= gain["delta"] <= gain["ci_high"] <= 1.0
    assert f"({gain['champion_impressions']} / {gain['holdout_impressions']} counted" in holdout
