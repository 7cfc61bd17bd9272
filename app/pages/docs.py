"""/docs (Swagger UI) and /redoc, the API reference pages, served whole by pirloop: their
scripts and styles come from the fastapi-offline package (no CDN), and a script file of ours
starts Swagger UI (no inline script). FastAPI's own pages load both from a CDN and start them
inline, which our Content-Security-Policy refuses, so they rendered blank.

Swagger UI then renders under the strict policy of every other page (app/security.py). Redoc
needs a little more: it writes its styles into <style> elements, and its search runs in a
blob: worker. PAGE_POLICIES, which app/main.py hands to SecurityHeaders, puts that looser
policy on /redoc only; it still allows no script but pirloop's own files and nothing from
another origin (Redoc's branding logo, fetched from its maker's site, is refused and the page
hides it)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.pages import templates

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
# Where the viewers' files are mounted (app/main.py), and where they come from.
ASSETS_PATH = "/docs-assets"
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
OPENAPI_URL = "/openapi.json"

REDOC_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data:",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# The pages whose policy is not the strict one, and theirs.
PAGE_POLICIES = {REDOC_PATH: REDOC_CONTENT_SECURITY_POLICY}

router = APIRouter(tags=["pages"], include_in_schema=False)


def _viewer(request: Request, template: str, *, title: str) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, {"title": title, "assets": ASSETS_PATH, "openapi_url": OPENAPI_URL}
    )


@router.get(DOCS_PATH, response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return _viewer(request, "docs_swagger.html", title="API")


@router.get(REDOC_PATH, response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return _viewer(request, "docs_redoc.html", title="API reference")
