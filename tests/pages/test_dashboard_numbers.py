"""The dashboard's numbers say what they rest on and follow the filters they sit under:
version intervals inside [0, 1] however little traffic backs them, nothing significant from a
handful of images, the traffic columns per placement, the live counters over the same window
as the bars, and the rollout's sections saying which placement they measure."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import dashboard, queries
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.main import create_app
from app.measurement import MIN_IMAGES_FOR_SIGNIFICANCE
from app.models import VersionStatus
from app.placeholder import placeholder_batch
from app.settings import Settings
from tests.conftest import TEST_ADMIN
from tests.pages.seed import seed_history

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _page(client: TestClient, **params: str) -> str:
    response = client.get("/admin", headers=ADMIN, params=params)
    assert response.status_code == 200
    return response.text


def _log(
    session: Session,
    version_id: int,
    clicks: Sequence[bool],
    *,
    placement: str = "background",
    simulated: bool = False,
    when: datetime | None = None,
) -> None:
    """One impression per entry, round robin over the version's images, clicked or not."""
    image_ids = queries.batch_image_ids(session, version_id)
    created = when or datetime.now(UTC) - timedelta(hours=1)
    rows = [
        {
            "image_id": image_ids[i % len(image_ids)],
            "version_id": version_id,
            "placement": placement,
            "visitor_hash": f"test-{version_id}-{i}",
            "simulated": simulated,
            "created_at": created,
        }
        for i in range(len(clicks))
    ]
    ids = queries.insert_impressions(session, rows)
    queries.insert_new_interactions(
        session,
        [
            {"impression_id": impression_id, "kind": "click", "value": 1.0, "created_at": created}
            for impression_id, clicked in zip(ids, clicks, strict=True)
            if clicked
        ],
    )


def _versions(settings: Settings, traffic: Sequence[Sequence[bool]]) -> list[int]:
    """A lineage of versions, the i-th with traffic[i]'s impressions (batch of 8 images)."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    first = ensure_initial_version(factory, settings, placeholder=True)
    assert first is not None
    ids = [first]
    with session_scope(factory) as session:
        for step in range(1, len(traffic)):
            version = queries.create_version(
                session,
                source="placeholder",
                parent_id=ids[-1],
                config={"size": 32},
                status=VersionStatus.ready,
            )
            queries.add_images(
                session, version.id, placeholder_batch(settings.batch_size, first_seed=1000 * step)
            )
            version.batch_size = settings.batch_size
            ids.append(version.id)
        session.flush()
        for version_id, clicks in zip(ids, traffic, strict=True):
            _log(session, version_id, clicks)
    engine.dispose()
    return ids


def test_version_intervals_stay_inside_unit_range_with_few_impressions(
    client: TestClient, settings: Settings
) -> None:
    # 1 impression (no click), 2 (one click), 16 (4 clicks on 8 images): the t-interval
    # across images gave [0.000, 0.000] and [-0.546, 1.046]-like intervals here.
    traffic = [[False], [True, False], [True, False, False, False] * 4]
    ids = _versions(settings, traffic)
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        rows = {
            row.id: row
            for row in dashboard.version_rows(
                session, settings, placement="background", include_simulated=False
            )
        }
    engine.dispose()
    for version_id, clicks in zip(ids, traffic, strict=True):
        pir = rows[version_id].pir
        assert pir.pir is not None
        assert pir.ci_low is not None
        assert pir.ci_high is not None
        assert 0.0 <= pir.ci_low <= pir.pir <= pir.ci_high <= 1.0, pir
        # Few observations: a wide interval, never a point.
        assert pir.ci_high - pir.ci_low > 0.3, pir
        assert pir.trials == len(clicks)
    # A single unclicked impression is not "0.000 [0.000, 0.000]".
    assert rows[ids[0]].pir.ci_high > 0.5
    # The page shows what each interval rests on.
    page = _page(client)
    assert "16 imp. · 8 img" in page
    assert "1 imp. · 1 img" in page
    for low, high in re.findall(r"\[(-?\d\.\d{3}), (-?\d\.\d{3})\]", page):
        assert 0.0 <= float(low) <= float(high) <= 1.0


def test_nothing_is_significant_from_a_handful_of_images(settings: Settings) -> None:
    # Parent never clicked, child always: Welch's p is 0, yet only 8 images a side.
    ids = _versions(settings, [[False] * 16, [True] * 16])
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        child = next(
            row
            for row in dashboard.version_rows(
                session, settings, placement="background", include_simulated=False
            )
            if row.id == ids[1]
        )
    engine.dispose()
    assert child.comparison is not None
    assert child.comparison.images_before == child.comparison.images_after == 8
    assert MIN_IMAGES_FOR_SIGNIFICANCE > 8
    assert not child.comparison.significant


def test_traffic_columns_and_comparison_follow_the_placement_filter(
    client: TestClient, settings: Settings
) -> None:
    ids = _versions(settings, [[True, False] * 8, [True, True, False, False] * 4])
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        # Ratings on the first version only: 3 impressions, none rated.
        _log(session, ids[0], [False] * 3, placement="rating")
    engine.dispose()

    def row_cells(page: str, version_id: int) -> list[str]:
        table = page[page.index('id="versions"') :]
        row = re.search(rf'<a href="/admin\?version={version_id}&amp;.*?</tr>', table, re.S)
        assert row is not None
        return [
            re.sub(r"<[^>]+>|\s+", " ", c).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
        ]

    background = _page(client, placement="background")
    rating = _page(client, placement="rating")
    # Impressions and interactions columns: per placement.
    assert row_cells(background, ids[0])[2:4] == ["16", "8"]
    assert row_cells(rating, ids[0])[2:4] == ["3", "0"]
    # The background change does not stand beside a rating PIR of "–".
    assert row_cells(background, ids[1])[5].startswith("+")
    assert row_cells(rating, ids[1])[4:8] == ["–", "–", "–", "–"]
    assert "rating placement, real traffic" in rating


def test_live_counters_count_the_window_the_bars_show(
    client: TestClient, settings: Settings
) -> None:
    seeded = seed_history(settings, per_image=8)
    page = _page(client)
    counters = {
        name: int(value) for name, value in re.findall(r'<dd id="live-([a-z-]+)">(\d+)</dd>', page)
    }
    live = client.get("/v1/admin/live", headers=ADMIN).json()
    assert counters["impressions-real"] == sum(live["impressions_real"]) > 0
    assert counters["impressions-simulated"] == sum(live["impressions_simulated"]) > 0
    assert counters["impressions-real"] + counters["impressions-simulated"] == (
        seeded.recent_impressions
    )
    # The rollout's sections say they do not follow the filters.
    rating = _page(client, placement="rating")
    scope = re.search(r'id="comparison-scope">(.*?)</p>', rating, re.S)
    assert scope is not None
    assert "background placement" in scope.group(1)
    assert "filters above do not apply" in scope.group(1)


def test_plots_have_plain_legends_and_version_labels(
    client: TestClient, settings: Settings
) -> None:
    seeded = seed_history(settings, per_image=8)
    page = _page(client, version=str(seeded.version_ids[-1]))
    figures = re.findall(r'<svg class="plot".*?</svg>', page, re.S)
    assert len(figures) >= 6
    for figure in figures:
        assert re.search(r'class="plot-title"[^>]*>[^<]+<', figure)
        if "no version has" in figure or "no curve" in figure:
            continue
        # Every legend entry starts inside the plot and leaves room for its name.
        for x, name in re.findall(r'<text class="legend" x="(\d+)" y="\d+">([^<]+)<', figure):
            assert int(x) + 8 * len(name) <= 560 + 16, (name, x)
    legends = {html.unescape(n) for n in re.findall(r'<text class="legend"[^>]*>([^<]+)<', page)}
    assert "fool D" not in legends
    assert "anchor" not in legends
    assert {"fooling the discriminator", "distance from parent's images"} <= legends
    assert "a version's PIR, 95% interval" in legends
    # Dots that stand for versions say which.
    tags = set(re.findall(r'<text class="point-label"[^>]*>(v\d+)<', page))
    assert {f"v{v}" for v in seeded.version_ids[1:]} <= tags
