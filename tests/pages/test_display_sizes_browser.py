"""Display sizes in a real browser: the embed and /rate ask for the image resampled to the
width they show it at (GET /v1/images/{id}?w=), never the generator's 32 or 64 px original."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytestmark = pytest.mark.browser
IMAGE_PATH = re.compile(r"^/v1/images/\d+$")


class ImageRequests:
    """The /v1/images/{id} URLs a page loaded, with the width each asked for (None: none)."""

    def __init__(self, page: Any) -> None:
        self.widths: list[int | None] = []
        self.types: list[str] = []
        page.on("response", self._record)

    def _record(self, response: Any) -> None:
        parts = urlsplit(response.url)
        if not IMAGE_PATH.match(parts.path) or response.status != 200:
            return
        width = parse_qs(parts.query).get("w")
        self.widths.append(int(width[0]) if width else None)
        self.types.append(response.headers.get("content-type", ""))


@pytest.fixture(params=[1, 2], ids=["1x", "2x"])
def screen(browser: Any, request: pytest.FixtureRequest) -> Iterator[tuple[Any, int]]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, device_scale_factor=request.param
    )
    yield context.new_page(), request.param
    context.close()


def test_embed_asks_for_the_width_of_a_1280_px_hero(site: Any, screen: tuple[Any, int]) -> None:
    page, density = screen
    loaded = ImageRequests(page)
    page.goto(f"{site.host}/")  # the hero is 1280 x 320 CSS px on another origin
    page.wait_for_selector("#hero[data-pirloop-impression]", timeout=15_000)
    background = page.eval_on_selector("#hero", "el => getComputedStyle(el).backgroundImage")
    # The smallest served width at least 1280 device pixels wide; at 2x (2560) the largest.
    expected = 1280 if density == 1 else 1920
    assert re.search(rf"/v1/images/\d+\?w={expected}\"", background), background
    assert loaded.widths == [expected]
    assert loaded.types == ["image/webp"]


def test_demo_host_hero_is_served_at_display_size(site: Any, screen: tuple[Any, int]) -> None:
    page, density = screen
    loaded = ImageRequests(page)
    page.goto(f"{site.base}/demo/host")
    page.wait_for_selector("#hero[data-pirloop-impression]", timeout=15_000)
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
    )
    hero = 1280 if density == 1 else 1920
    # The hero by the script; the script-free <img> (128 CSS px) by its own ?w=256.
    assert sorted(w for w in loaded.widths if w is not None) == sorted([hero, 256])
    natural = page.eval_on_selector(".img-variant img", "img => img.naturalWidth")
    assert natural == 256


def test_rate_prompt_is_served_at_its_frame_size(site: Any, screen: tuple[Any, int]) -> None:
    page, density = screen
    loaded = ImageRequests(page)
    page.goto(f"{site.base}/rate")
    page.wait_for_selector("#rate[data-state=ready]")
    page.wait_for_function("() => document.querySelector('#rate-image').complete")
    frame = page.eval_on_selector(".rate-frame", "el => el.getBoundingClientRect().width")
    assert frame == 512  # 32rem on a 1280 x 860 window
    expected = 512 * density
    assert page.eval_on_selector("#rate-image", "img => img.naturalWidth") == expected
    # The image on screen and the next one, preloaded: both at the frame's size.
    deadline = time.monotonic() + 10
    while len(loaded.widths) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert loaded.widths == [expected, expected]
