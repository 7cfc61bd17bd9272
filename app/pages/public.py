"""Pages anyone may open: /rate, the embed demo host page, and /embed.js itself."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from app.deps import SettingsDep
from app.pages import STATIC_DIR, templates

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/rate", status_code=307)


@router.get("/rate", response_class=HTMLResponse)
def rate(request: Request) -> HTMLResponse:
    """Rate images one at a time, 1 to 5 stars; every view an impression, every answer an
    interaction, through the public API."""
    return templates.TemplateResponse(request, "rate.html", {"title": "Rate images"})


@router.get("/demo/host", response_class=HTMLResponse)
def demo_host(request: Request, settings: SettingsDep) -> HTMLResponse:
    """A page as a site embedding pirloop would have it. The snippets name the service by
    PIRLOOP_PUBLIC_URL, never by the request's Host header (which the client chooses)."""
    base = settings.public_url.rstrip("/") or "https://PIRLOOP-HOST"
    return templates.TemplateResponse(
        request, "demo_host.html", {"title": "Embed demo", "base": base}
    )


@router.get("/embed.js")
def embed_js() -> FileResponse:
    """The embed script at a short, stable address (also at /static/embed.js)."""
    return FileResponse(
        STATIC_DIR / "embed.js",
        media_type="text/javascript",
        headers={
            "Cache-Control": "public, max-age=300",
            "Access-Control-Allow-Origin": "*",
            # Loadable by host pages that isolate themselves (COEP require-corp).
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )
