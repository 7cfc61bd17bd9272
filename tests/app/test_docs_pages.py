"""/docs and /redoc load every file from pirloop itself, start with no inline script, and
carry a Content-Security-Policy that allows them: the strict one on /docs, a looser one (no
other script, no other origin) on /redoc only. tests/pages/test_docs_browser.py renders them
in a real browser."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.pages.docs import REDOC_CONTENT_SECURITY_POLICY
from app.security import CONTENT_SECURITY_POLICY


def assets(html: str) -> list[str]:
    return re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_only_their_own_files(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    files = [url for url in assets(page.text) if not url.startswith("data:")]
    assert files, page.text
    for url in files:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"].split(";")[0] in ("text/javascript", "text/css")
    # No inline script: every <script> has a src and no body.
    for attributes, body in re.findall(r"<script([^>]*)>(.*?)</script>", page.text, flags=re.S):
        assert "src=" in attributes
        assert not body.strip(), attributes


def test_docs_pages_have_their_own_policy_and_no_other(client: TestClient) -> None:
    assert client.get("/docs").headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    redoc = client.get("/redoc").headers["content-security-policy"]
    assert redoc == REDOC_CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in redoc.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert "http" not in redoc  # no other origin
    # Every other page keeps the strict one.
    for path in ("/rate", "/demo/host"):
        assert client.get(path).headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_openapi_json_is_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/v1/impressions" in schema["paths"]
