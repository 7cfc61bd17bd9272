"""/docs and /redoc render in a real browser under their Content-Security-Policy, with every
file from pirloop itself (FastAPI's own pages came up blank: CDN scripts and an inline start,
both refused by our policy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.pages.conftest import Site

pytestmark = pytest.mark.browser

# Redoc shows its maker's logo from its maker's site; the policy refuses it and Redoc hides
# the broken image. Nothing else may be refused.
REDOC_BRANDING = "img-src https://cdn.redoc.ly/redoc/logo-mini.svg"
COLLECT_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(e.effectiveDirective + " " + e.blockedURI));
"""


@pytest.fixture
def docs_page(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.add_init_script(COLLECT_VIOLATIONS)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.loaded = []
    page.on("requestfinished", lambda request: page.loaded.append(request.url))
    yield page
    context.close()


def test_swagger_ui_renders_under_the_strict_policy(site: Site, docs_page: Any) -> None:
    docs_page.goto(f"{site.base}/docs")
    docs_page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert docs_page.locator(".swagger-ui .opblock").count() >= 20
    assert docs_page.locator("[data-path='/v1/impressions']").count() == 1
    assert docs_page.evaluate("window.__violations") == []
    assert docs_page.errors == []
    assert all(url.startswith(site.base) for url in docs_page.loaded), docs_page.loaded


def test_redoc_renders_and_searches_under_its_policy(site: Site, docs_page: Any) -> None:
    docs_page.goto(f"{site.base}/redoc")
    docs_page.wait_for_selector("[data-section-id^='operation/']", timeout=20_000)
    assert docs_page.locator("[data-section-id^='operation/']").count() >= 20
    # The search runs in a blob: worker, which the policy allows on this page.
    docs_page.fill("input[placeholder^='Search']", "impression")
    docs_page.wait_for_selector("[role=search] li", timeout=10_000)
    assert set(docs_page.evaluate("window.__violations")) <= {REDOC_BRANDING}
    assert docs_page.errors == []
    loaded = [url for url in docs_page.loaded if not url.startswith(("blob:", "data:"))]
    assert all(url.startswith(site.base) for url in loaded), loaded
