"""Headers that keep pirloop's own pages safe: a strict Content-Security-Policy on every HTML
response (no inline script, nothing from another origin), and a few cheap companions. A page
that needs a looser policy hands it to SecurityHeaders by its path (app/pages/docs.py's
PAGE_POLICIES: Redoc's)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data:",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def is_admin_path(path: str) -> bool:
    return path in ("/admin", "/v1/admin") or path.startswith(("/admin/", "/v1/admin/"))


class SecurityHeaders:
    """CSP and framing rules on HTML; nosniff on everything; no-store on admin. Scripts and
    images keep no CSP of their own: embed.js runs under the host page's policy, not ours.
    `page_policies` gives the pages at those exact paths their own CSP instead of the strict
    one."""

    def __init__(self, app: ASGIApp, *, page_policies: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.page_policies = dict(page_policies or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        policy = self.page_policies.get(scope["path"], CONTENT_SECURITY_POLICY)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if is_admin_path(scope["path"]):
                    # Admin answers (lineage, state, exports, the dashboard) stay out of every
                    # cache: a shared proxy's, and the browser's after sign-out.
                    headers["Cache-Control"] = "no-store"
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = policy
                    headers["X-Frame-Options"] = "DENY"
                    headers["Referrer-Policy"] = "same-origin"
            await send(message)

        await self.app(scope, receive, send_with_headers)
