"""The three pages in a real browser: the embed on another origin, /rate, /admin."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_ADMIN
from tests.pages.conftest import Site

pytestmark = pytest.mark.browser
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN}"}


def wait_for(condition: Callable[[], Any], *, timeout: float = 15, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def interactions(base: str) -> list[dict[str, str]]:
    response = httpx.get(f"{base}/v1/admin/exports/interactions", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def of_impression(base: str, impression_id: int) -> dict[str, float]:
    return {
        row["kind"]: float(row["value"])
        for row in interactions(base)
        if int(row["impression_id"]) == impression_id
    }


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    yield page
    context.close()


def test_embed_on_another_origin_sets_background_and_reports(site: Site, page: Any) -> None:
    assert site.host.rsplit(":", 1)[1] != site.base.rsplit(":", 1)[1]
    layout_before: list[float] = []
    page.goto(f"{site.host}/")
    page.wait_for_selector("#hero[data-pirloop-impression]", timeout=15_000)
    background = page.eval_on_selector("#hero", "el => getComputedStyle(el).backgroundImage")
    assert f"{site.base}/v1/images/" in background
    assert page.eval_on_selector("#hero", "el => getComputedStyle(el).backgroundSize") == "cover"
    # The script adds nothing to the page: the content below the hero has not moved.
    layout_before.append(page.eval_on_selector("#after", "el => el.getBoundingClientRect().top"))
    impression_id = int(page.get_attribute("#hero", "data-pirloop-impression"))

    page.click("#hero")
    recorded = wait_for(
        lambda: of_impression(site.base, impression_id).get("click"), what="the click"
    )
    assert recorded == 1.0
    assert (
        page.eval_on_selector("#after", "el => el.getBoundingClientRect().top")
        == (layout_before[0])
    )

    # Leaving the page (pagehide) reports the dwell time by beacon.
    time.sleep(1.2)
    page.goto("about:blank")
    dwell = wait_for(
        lambda: (
            of_impression(site.base, impression_id).get("dwell") is not None
            and of_impression(site.base, impression_id)["dwell"]
        ),
        what="the dwell beacon",
    )
    assert 1.0 <= dwell < 60
    assert page.errors == []


def test_embed_fails_silently_when_pirloop_is_down(site: Site, page: Any) -> None:
    page.goto(f"{site.host}/down")
    page.wait_for_load_state("load")
    time.sleep(1.0)
    assert page.eval_on_selector("#hero", "el => getComputedStyle(el).backgroundImage") == "none"
    assert page.get_attribute("#hero", "data-pirloop-impression") is None
    assert page.errors == []


def test_demo_host_page(site: Site, page: Any, screenshot_dir: Path) -> None:
    page.goto(f"{site.base}/demo/host")
    page.wait_for_selector("#hero[data-pirloop-impression]", timeout=15_000)
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
    )
    assert "/v1/images/" in page.eval_on_selector(
        "#hero", "el => getComputedStyle(el).backgroundImage"
    )
    page.screenshot(path=str(screenshot_dir / "embed-demo.png"), full_page=True)
    assert page.errors == []


def test_rating_by_key_and_by_click(site: Site, page: Any, screenshot_dir: Path) -> None:
    page.goto(f"{site.base}/rate")
    page.wait_for_selector("#rate[data-state=ready]")
    first = int(page.get_attribute("#rate-image", "data-impression"))
    page.keyboard.press("4")
    page.wait_for_function(
        f"() => document.querySelector('#rate-image').dataset.impression !== '{first}'"
        " && document.querySelector('#rate').dataset.state === 'ready'"
    )
    second = int(page.get_attribute("#rate-image", "data-impression"))
    page.click(".star[data-stars='2']")
    page.wait_for_function(
        f"() => document.querySelector('#rate-image').dataset.impression !== '{second}'"
        " && document.querySelector('#rate').dataset.state === 'ready'"
    )
    third = int(page.get_attribute("#rate-image", "data-impression"))
    page.keyboard.press("s")
    page.wait_for_function(
        f"() => document.querySelector('#rate-image').dataset.impression !== '{third}'"
        " && document.querySelector('#rate').dataset.state === 'ready'"
    )
    assert of_impression(site.base, first) == {"rating": 4.0}
    assert of_impression(site.base, second) == {"rating": 2.0}
    assert of_impression(site.base, third) == {"skip": 1.0}
    assert page.text_content("#rated-count") == "2"
    page.keyboard.press("5")
    page.wait_for_function("() => document.querySelector('#rated-count').textContent === '3'")
    page.wait_for_selector("#rate[data-state=ready]")
    page.wait_for_function("() => document.querySelector('#rate-image').complete")
    page.mouse.move(5, 400)  # no hover highlight in the screenshot
    page.screenshot(path=str(screenshot_dir / "rate.png"))

    # On a phone: no sideways scrolling and touch targets of at least 44 CSS pixels.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for box in page.eval_on_selector_all(
        ".star, #skip", "els => els.map(e => e.getBoundingClientRect().height)"
    ):
        assert box >= 44
    page.screenshot(path=str(screenshot_dir / "rate-phone.png"))
    assert page.errors == []


def test_admin_needs_login_then_shows_plots(site: Site, page: Any, screenshot_dir: Path) -> None:
    response = httpx.get(f"{site.base}/admin", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"
    assert httpx.get(f"{site.base}/v1/admin/versions").status_code == 401

    page.goto(f"{site.base}/admin")
    assert page.url.endswith("/admin/login")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    assert page.is_visible(".error")
    page.fill("#token", TEST_ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base}/admin")

    cookie = next(c for c in page.context.cookies() if c["name"] == "pirloop_admin")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.locator("svg.plot").count() >= 5
    assert page.locator("svg.plot circle.point").count() > 0  # PIR and calibration points
    assert page.locator("svg.plot polyline.curve").count() > 0  # loss curves
    assert page.locator("svg.plot rect.bar").count() > 0  # histogram
    assert page.locator("#versions tbody tr").count() == len(site.seeded.version_ids)
    page.wait_for_selector("#live[data-loaded=true]")
    assert page.locator("canvas#live-canvas").count() == 1
    # The counters, as polled by the page, total the window the bars draw (the last 25
    # minutes of seeded traffic lie inside it).
    live = page.request.get(f"{site.base}/v1/admin/live").json()
    assert sum(live["impressions_simulated"]) > 0
    assert sum(live["impressions_real"]) > 0
    shown = int(page.text_content("#live-impressions-real") or "0")
    assert shown == sum(live["impressions_real"])
    # The live comparison: arms with their shares, the split, the interval plot, the buttons.
    arms = page.locator("#comparison table.arms tbody tr")
    assert arms.count() == 3  # champion, candidate, holdout
    assert page.locator("#split .badge.good").inner_text() == "split healthy"
    band = page.locator("#comparison svg.plot path.band")
    assert band.count() == 1
    assert band.bounding_box()["height"] > 20
    assert page.locator(
        "#comparison button", has_text="Stop rollout (reject candidate)"
    ).is_visible()
    assert page.locator("#comparison button", has_text="Promote candidate").is_visible()
    assert page.locator("#history tbody tr").count() == 2
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
    )
    page.screenshot(path=str(screenshot_dir / "admin.png"), full_page=True)

    # On a phone: the page itself never scrolls sideways (wide tables scroll in their box),
    # and the rollout's buttons stay big enough to tap.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for height in page.eval_on_selector_all(
        "#comparison .actions button", "els => els.map(e => e.getBoundingClientRect().height)"
    ):
        assert height >= 44
    page.screenshot(path=str(screenshot_dir / "admin-phone.png"), full_page=True)
    assert page.errors == []


# Last in this file: it rolls the seeded service back, which the tests above do not expect.
def test_versions_table_fits_1280_and_its_buttons_work(site: Site, page: Any) -> None:
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{site.base}/admin/login")
    page.fill("#token", TEST_ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base}/admin")
    wrap = page.locator("#versions .table-wrap")
    sizes = wrap.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert sizes[0] <= sizes[1], f"the versions table scrolls sideways at 1280 px: {sizes}"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
    buttons = page.locator("#versions tbody button")
    assert buttons.count() >= 2  # roll back to v1 or v2
    for index in range(buttons.count()):
        box = buttons.nth(index).bounding_box()
        assert box is not None
        assert box["x"] + box["width"] <= 1280
    # Clicking asks first (dismissed: nothing happens), then acts.
    target = page.locator("#versions tbody tr", has=page.locator("button")).last
    button = target.locator("button")
    assert button.inner_text() == "Roll back"
    page.once("dialog", lambda dialog: dialog.dismiss())
    button.click()
    assert page.url == f"{site.base}/admin"
    page.once("dialog", lambda dialog: dialog.accept())
    button.click()
    page.wait_for_url(f"{site.base}/admin?notice=promoted")
    assert page.locator(".notice").inner_text().startswith("Version promoted")
    assert page.locator("#versions tbody .badge.serving").count() == 1
    assert page.errors == []
