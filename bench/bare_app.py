"""The anchors: a bare FastAPI app returning the same bytes as pirloop, with no database.

The routes under /bare are `async def`, as pirloop's hot routes are: the fast way to write
FastAPI, and the honest anchor. The same routes under /bare-sync are plain `def` (run in the
thread pool, the slower way), kept as a second row so both show in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Response

PNG = Path(os.environ["BENCH_PNG"]).read_bytes()
IMPRESSION = {
    "impression_id": 123456,
    "token": "x" * 86,
    "image_id": 42,
    "image_url": "http://127.0.0.1:8000/v1/images/42",
    "generator_version": 1,
    "placement": "background",
    "expires_at": "2026-11-24T12:00:00Z",
}
INTERACTION = {
    "interaction_id": 123456,
    "impression_id": 654321,
    "kind": "click",
    "value": 1.0,
    "duplicate": False,
}
BATCH_ITEM = {k: v for k, v in INTERACTION.items() if k != "duplicate"}


def impression(body: dict[str, object]) -> dict[str, object]:
    return IMPRESSION


def image() -> Response:
    return Response(content=PNG, media_type="image/png")


def interaction(body: dict[str, object]) -> dict[str, object]:
    return INTERACTION


def interactions_batch(body: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    """The same JSON in and a result per item out, as POST /v1/interactions/batch."""
    results = [
        {"index": index, "status": "created", **BATCH_ITEM}
        for index, _ in enumerate(body["interactions"])
    ]
    return {"results": results, "created": len(results), "duplicate": 0, "rejected": 0}


def as_async(handler: Callable[..., Any]) -> Callable[..., Any]:
    """The handler as a coroutine function with its signature (FastAPI reads __wrapped__)."""

    @functools.wraps(handler)
    async def route(*args: Any, **kwargs: Any) -> Any:
        return handler(*args, **kwargs)

    return route


def anchor_routes(
    prefix: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> APIRouter:
    router = APIRouter(prefix=prefix)
    router.add_api_route("/impressions", wrap(impression), methods=["POST"], status_code=201)
    router.add_api_route("/image", wrap(image), methods=["GET"])
    router.add_api_route("/interactions", wrap(interaction), methods=["POST"], status_code=201)
    router.add_api_route("/interactions/batch", wrap(interactions_batch), methods=["POST"])
    return router


app = FastAPI()
app.include_router(anchor_routes("/bare", as_async))
app.include_router(anchor_routes("/bare-sync", lambda handler: handler))
