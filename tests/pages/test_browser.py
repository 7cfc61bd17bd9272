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

from app.placeholder import placeholder_batch
from tests.conftest import TEST_ADMIN
from tests.pages.conftest import Service, Site
from tests.rollouts import roll_out_candidate

pytestmark = pytest.mark.browser
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN}"}
IMAGES_LOADED = "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
PHONE = {"width": 390, "height": 844}


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


def next_to_rate(page: Any, previous: int) -> int:
    """The impression /rate shows once it has moved on from `previous` and is ready again."""
    page.wait_for_function(
        f"() => document.querySelector('#rate-image').dataset.impression !== '{previous}'"
        " && document.querySelector('#rate').dataset.state === 'ready'"
    )
    return int(page.get_attribute("#rate-image", "data-impression"))


def assert_fits_a_phone(page: Any, tap_targets: str, screenshot: Path, *, full_page: bool) -> None:
    """At a phone's width the page never scrolls sideways and each of `tap_targets` (a
    selector) is at least 44 CSS pixels high; then the screenshot."""
    page.set_viewport_size(PHONE)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    for height in page.eval_on_selector_all(
        tap_targets, "els => els.map(e => e.getBoundingClientRect().height)"
    ):
        assert height >= 44, tap_targets
    page.screenshot(path=str(screenshot), full_page=full_page)


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
    page.wait_for_function(IMAGES_LOADED)
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
    second = next_to_rate(page, first)
    page.click(".star[data-stars='2']")
    third = next_to_rate(page, second)
    page.keyboard.press("s")
    next_to_rate(page, third)
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
    assert_fits_a_phone(page, ".star, #skip", screenshot_dir / "rate-phone.png", full_page=False)
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
    page.wait_for_function(IMAGES_LOADED)
    page.screenshot(path=str(screenshot_dir / "admin.png"), full_page=True)

    # On a phone: the page itself never scrolls sideways (wide tables scroll in their box),
    # and the rollout's buttons stay big enough to tap.
    assert_fits_a_phone(
        page, "#comparison .actions button", screenshot_dir / "admin-phone.png", full_page=True
    )
    assert page.errors == []


# --- Every admin action at 1280 x 800 -------------------------------------------------------

# What a 1280 x 800 window must show of the dashboard, as a list of problems (none expected):
# the page never scrolls sideways; no button, table, form or scroll box sticks out of its
# parent unless that parent scrolls by design; and no button needs sideways scrolling (of the
# window or of a scroll box around it) to be reached.
LAYOUT_PROBLEMS = """() => {
  const name = (el) => {
    const classes = typeof el.className === "string" ? el.className.trim() : "";
    const text = el.tagName === "BUTTON" ? ` "${el.textContent.trim()}"` : "";
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
      + (classes ? "." + classes.split(/\\s+/).join(".") : "") + text;
  };
  const scrolls = (el) => /auto|scroll/.test(getComputedStyle(el).overflowX);
  const outside = (box, outer) => box.left < outer.left - 1 || box.right > outer.right + 1
    || box.top < outer.top - 1 || box.bottom > outer.bottom + 1;
  const root = document.documentElement;
  const problems = [];
  if (root.scrollWidth > root.clientWidth) {
    problems.push(`the page scrolls sideways: ${root.scrollWidth} > ${root.clientWidth} px`);
  }
  for (const el of document.querySelectorAll("button, table, form, .table-wrap, .mini-wrap")) {
    const box = el.getBoundingClientRect();
    const parent = el.parentElement;
    if (!box.width || !box.height || scrolls(parent)) continue;
    if (outside(box, parent.getBoundingClientRect())) {
      problems.push(`${name(el)} overflows ${name(parent)}`);
    }
  }
  for (const button of document.querySelectorAll("button")) {
    const box = button.getBoundingClientRect();
    if (!box.width) continue;
    if (box.left + window.scrollX < 0 || box.right + window.scrollX > root.clientWidth) {
      problems.push(`${name(button)} lies outside the window's width`);
    }
    for (let box_ = button.parentElement; box_; box_ = box_.parentElement) {
      const outer = box_.getBoundingClientRect();
      if (scrolls(box_) && (box.left < outer.left - 1 || box.right > outer.right + 1)) {
        problems.push(`${name(button)} is hidden sideways in ${name(box_)}`);
      }
    }
  }
  return problems;
}"""


def serving_state(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/admin/serving", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def rollout_record(base: str, rollout_id: int) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/rollouts/{rollout_id}", timeout=10)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def assert_layout(page: Any) -> None:
    assert page.evaluate(LAYOUT_PROBLEMS) == [], page.url


def click(page: Any, button: Any, *, confirm: str | None = None) -> None:
    """Click a dashboard button as a person would, without scrolling sideways. A button that
    asks first (`confirm`: part of its question) is dismissed once, which must send nothing,
    then accepted."""
    assert button.count() == 1
    box = button.bounding_box()
    assert box is not None
    assert box["x"] >= 0, box
    assert box["x"] + box["width"] <= 1280, box
    if confirm is not None:
        base = page.url.split("/admin", 1)[0]
        state, url, asked = serving_state(base), page.url, []

        def dismiss(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        button.click()
        assert len(asked) == 1
        assert confirm in asked[0], asked
        assert page.url == url
        assert serving_state(base) == state, "a dismissed confirmation changed something"
        page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        button.click()
    assert page.evaluate("() => window.scrollX") == 0
    assert page.errors == []


def test_every_admin_action_at_1280_by_800(service: Service, page: Any) -> None:
    base, seeded = service.base, service.seeded
    champion, candidate = seeded.champion_id, seeded.candidate_id
    page.set_viewport_size({"width": 1280, "height": 800})

    # Sign in.
    page.goto(f"{base}/admin/login")
    page.fill("#token", TEST_ADMIN)
    click(page, page.locator("button[type=submit]"))
    assert page.url == f"{base}/admin"
    assert_layout(page)
    # The versions table fits its box: its Promote and Roll back buttons need no scrolling.
    sizes = page.locator("#versions .table-wrap").evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert sizes[0] <= sizes[1], f"the versions table scrolls sideways at 1280 px: {sizes}"

    # The filters: the versions table follows them.
    page.select_option("select[name=placement]", "rating")
    page.select_option("select[name=traffic]", "all")
    click(page, page.locator(".filters button", has_text="Apply"))
    assert "placement=rating" in page.url
    assert "traffic=all" in page.url
    assert (
        page.locator("#versions-scope")
        .inner_text()
        .startswith("rating placement, real and simulated traffic")
    )
    assert_layout(page)
    page.goto(f"{base}/admin")

    # The exports: a CSV download of each table.
    for label, column in (("Impressions", "visitor_hash"), ("Interactions", "kind")):
        with page.expect_download() as download:
            page.locator(".export button", has_text=label).click()
        header = Path(download.value.path()).read_text().splitlines()[0]
        assert column in header.split(","), header
        assert download.value.suggested_filename == f"pirloop-{label.lower()}.csv"

    # A cycle cannot start while the candidate is under evaluation: the page says why.
    click(
        page,
        page.locator("#cycle button", has_text="Start a cycle now"),
        confirm="Start a learning cycle now?",
    )
    assert f"rollout {seeded.rollout_id}; a cycle waits" in page.locator(".error").inner_text()
    assert serving_state(base)["cycle"] is None
    assert_layout(page)
    page.goto(f"{base}/admin")

    # Pause, then resume: the rollout waits meanwhile.
    click(page, page.locator("button", has_text="Pause serving"), confirm="Pause serving?")
    assert page.locator(".notice").inner_text().startswith("Serving is paused")
    state = serving_state(base)
    assert (state["paused"], state["serving_version"], state["paused_version"]) == (
        True,
        None,
        champion,
    )
    assert page.locator(".state .big").inner_text().startswith("paused")
    assert_layout(page)
    click(page, page.locator("button", has_text="Resume serving"))
    assert page.locator(".notice").inner_text() == "Serving resumed."
    state = serving_state(base)
    assert (state["paused"], state["serving_version"], state["candidate_version"]) == (
        False,
        champion,
        candidate,
    )
    assert_layout(page)

    # Promote the running candidate by hand.
    click(
        page,
        page.locator("#comparison button", has_text="Promote candidate"),
        confirm=f"Promote candidate v{candidate} now",
    )
    assert page.locator(".notice").inner_text().startswith("Version promoted")
    state = serving_state(base)
    assert (state["serving_version"], state["candidate_version"]) == (candidate, None)
    record = rollout_record(base, seeded.rollout_id)
    assert (record["status"], record["manual"]) == ("promoted", True)
    latest = page.locator("#history tbody tr").first
    assert "promoted" in latest.inner_text()
    assert "manual" in latest.inner_text()
    assert_layout(page)

    # Stop the next rollout: its candidate is rejected and the champion serves alone.
    _, rejected = roll_out_candidate(
        service.settings, placeholder_batch(service.settings.batch_size, first_seed=5000)
    )
    page.goto(f"{base}/admin")
    assert (
        f"candidate v{rejected} against champion v{candidate}"
        in page.locator("#comparison h2").inner_text()
    )
    stopped = serving_state(base)["rollout_id"]
    assert_layout(page)
    click(
        page,
        page.locator("#comparison button", has_text="Stop rollout"),
        confirm=f"reject candidate v{rejected}?",
    )
    assert page.locator(".notice").inner_text().startswith("Rollout stopped")
    state = serving_state(base)
    assert (state["serving_version"], state["candidate_version"]) == (candidate, None)
    record = rollout_record(base, stopped)
    assert (record["status"], record["manual"]) == ("rejected", True)
    assert "No candidate is under evaluation" in page.locator("#comparison").inner_text()
    assert_layout(page)

    # The versions table: Promote a newer version (the rejected candidate), then roll back.
    row = page.locator(f"#versions tbody tr:has(a:text-is('v{rejected}'))")
    click(page, row.locator("button", has_text="Promote"), confirm=f"Serve v{rejected}")
    assert page.locator(".notice").inner_text().startswith("Version promoted")
    assert serving_state(base)["serving_version"] == rejected
    assert page.locator("#versions tbody .badge.serving").count() == 1
    assert_layout(page)
    buttons = page.locator("#versions tbody button")
    labels = [buttons.nth(i).inner_text() for i in range(buttons.count())]
    assert labels, "no version to roll back to"
    assert set(labels) == {"Roll back"}, labels
    row = page.locator(f"#versions tbody tr:has(a:text-is('v{champion}'))")
    click(page, row.locator("button", has_text="Roll back"), confirm=f"Serve v{champion}")
    state = serving_state(base)
    assert state["serving_version"] == champion
    assert state["learning_held"].startswith(f"rolled back from version {rejected}")
    assert page.locator(".hold").inner_text().startswith("Automatic learning is held.")
    assert_layout(page)

    # Starting a cycle by hand ends the hold (the cycle itself runs on in the service).
    click(
        page,
        page.locator("#cycle button", has_text="Start a cycle now"),
        confirm="Start a learning cycle now?",
    )
    assert page.locator(".notice").inner_text() == "A learning cycle was requested."
    assert page.locator(".hold").count() == 0
    assert serving_state(base)["learning_held"] is None
    assert_layout(page)

    # On a phone too, no button hides sideways: the versions table scrolls in its box with
    # its buttons' column in view.
    page.set_viewport_size(PHONE)
    assert_layout(page)
    page.set_viewport_size({"width": 1280, "height": 800})

    # Sign out: the dashboard asks for the token again.
    click(page, page.locator("button", has_text="Sign out"))
    assert page.url == f"{base}/admin/login"
    assert not [c for c in page.context.cookies() if c["name"] == "pirloop_admin"]
    page.goto(f"{base}/admin")
    assert page.url == f"{base}/admin/login"
