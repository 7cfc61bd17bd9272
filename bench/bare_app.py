"""The anchor: a bare FastAPI app returning the same bytes as pirloop, with no database."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Response

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

app = FastAPI()


@app.post("/bare/impressions", status_code=201)
def impression(body: dict[str, object]) -> dict[str, object]:
    return IMPRESSION


@app.get("/bare/image")
def image() -> Response:
    return Response(content=PNG, media_type="image/png")


INTERACTION = {
    "interaction_id": 123456,
    "impression_id": 654321,
    "kind": "click",
    "value": 1.0,
    "duplicate": False,
}


@app.post("/bare/interactions", status_code=201)
def interaction(body: dict[str, object]) -> dict[str, object]:
    return INTERACTION


BATCH_ITEM = {k: v for k, v in INTERACTION.items() if k != "duplicate"}


@app.post("/bare/interactions/batch")
def interactions_batch(body: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    """The same JSON in and a result per item out, as POST /v1/interactions/batch."""
    results = [
        {"index": index, "status": "created", **BATCH_ITEM}
        for index, _ in enumerate(body["interactions"])
    ]
    return {"results": results, "created": len(results), "duplicate": 0, "rejected": 0}
