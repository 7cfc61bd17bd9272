"""Cached images answered before routing: the busiest GET skips FastAPI's machinery.

A page that embeds pirloop fetches each served image once per visitor, so GET
/v1/images/{id} is the most frequent request there is, and nearly every one is a hit in the
process's image caches. Profiling it under load (bench/profile_hot_path.py, docs/BENCHMARKS.md)
put about 60% of its CPU in route matching, dependency solving and parameter validation, none
of which a cache hit needs. This middleware answers exactly the requests whose answer is
already in memory, with the same status, body and headers the route gives
(app/routers/images.py::image_headers), and hands everything else to the route unchanged: a
miss (the route loads and caches it), a query other than one allowed `w`, an id outside the
column's range, another method. Errors are therefore always the route's, and the OpenAPI
schema stays the route's. It sits inside the security-headers, metrics and rate-limit
middleware, so those still see every request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.deps import MAX_ID
from app.image_cache import CachedImage, ImageCache
from app.image_sizes import DISPLAY_WIDTHS, display_etag
from app.routers.images import image_headers, router

IMAGE_PATH = re.compile(rf"^{re.escape(router.prefix)}/([1-9][0-9]{{0,9}})$")
# The only queries answered here: none, or one allowed display width, as clients send it.
WIDTH_QUERIES = {b"": None} | {f"w={width}".encode(): width for width in DISPLAY_WIDTHS}


@dataclass(frozen=True)
class AnsweredRoute:
    """What the router leaves in scope["route"] for the request it answers: here only its
    template, which app/metrics.py labels requests by (without it, it would match the path
    against every route on this hottest of paths)."""

    path: str


IMAGE_ROUTE = AnsweredRoute(f"{router.prefix}/{{image_id}}")


class CachedImageAnswers:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self._cached(scope) if scope["type"] == "http" else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        image, etag = answer
        scope["route"] = IMAGE_ROUTE
        headers = [
            (name.lower().encode(), value.encode()) for name, value in image_headers(etag).items()
        ]
        if etag in Headers(scope=scope).get("if-none-match", ""):  # as the route reads it
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [
            (b"content-length", str(len(image.content)).encode()),
            (b"content-type", image.media_type.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": image.content})

    @staticmethod
    def _cached(scope: Scope) -> tuple[CachedImage, str] | None:
        """The cached image and its ETag when this request is a plain hit, else None."""
        if scope["method"] != "GET":
            return None
        match = IMAGE_PATH.match(scope["path"])
        query = scope.get("query_string", b"")
        if match is None or query not in WIDTH_QUERIES:
            return None
        image_id = int(match.group(1))
        if image_id > MAX_ID:
            return None
        width = WIDTH_QUERIES[query]
        state = scope["app"].state
        originals: ImageCache | None = getattr(state, "image_cache", None)  # set at start-up
        original = originals.get(image_id) if originals is not None else None
        if original is None:
            return None
        if width is None:
            return original, display_etag(original.content_hash, None)
        sized: ImageCache = state.display_cache
        image = sized.get((image_id, width))
        return None if image is None else (image, display_etag(original.content_hash, width))
