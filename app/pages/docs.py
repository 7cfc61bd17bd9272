"""/docs (Swagger UI) and /redoc, the API reference pages, served whole by pirloop: their
scripts and styles come from the fastapi-offline package (no CDN), and a script file of ours
starts Swagger UI (no inline script). FastAPI's own pages load both from a CDN and start them
inline, which our Content-Security-Policy refuses, so they rendered blank.

Swagger UI then renders under the strict policy of every other page (app/security.py). Redoc
needs a little more: it writes its styles into <style> elements, and its search runs in a
blob: worker. `DocsPolicy` puts that looser policy on /redoc only; it still allows no script
but pirloop's own files and nothing from another origin (Redoc's branding logo, fetched from
its maker's site, is refused and the page hides it)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


@router.get(DOCS_PATH, response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "docs_swagger.html",
        {"title": "API", "assets": ASSETS_PATH, "openapi_url": OPENAPI_URL},
    )


@router.get(REDOC_PATH, response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "docs_redoc.html",
        {"title": "API reference", "assets": ASSETS_PATH, "openapi_url": OPENAPI_URL},
    )


class DocsPolicy:
    """The Content-Security-Policy of the pages in PAGE_POLICIES in place of the strict one.
    Added outside SecurityHeaders, so it has the last word, on exactly those paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = PAGE_POLICIES.get(scope["path"]) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = policy
            await send(message)

        await self.app(scope, receive, send_with_policy)
