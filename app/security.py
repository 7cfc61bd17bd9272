"""Headers that keep pirloop's own pages safe: a strict Content-Security-Policy on every HTML
response (no inline script, nothing from another origin), and a few cheap companions."""

from __future__ import annotations

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
    images keep no CSP of their own: embed.js runs under the host page's policy, not ours."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if is_admin_path(scope["path"]):
                    # Admin answers (lineage, state, exports, the dashboard) stay out of every
                    # cache: a shared proxy's, and the browser's after sign-out.
                    headers["Cache-Control"] = "no-store"
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                    headers["X-Frame-Options"] = "DENY"
                    headers["Referrer-Policy"] = "same-origin"
            await send(message)

        await self.app(scope, receive, send_with_headers)
