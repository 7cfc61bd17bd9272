"""Embedding without a script: an <img> whose source is a fresh impression each time."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from app.deps import IngestDep, SettingsDep
from app.errors import INVALID, RATE_LIMITED, UNAVAILABLE, responses
from app.models import Placement
from app.routers.images import DisplayWidth
from app.routers.impressions import serve_impression
from app.schemas import ImpressionCreate
from app.serving import NothingToServe

router = APIRouter(
    prefix="/v1/embed", tags=["embed"], responses=responses(INVALID, RATE_LIMITED, UNAVAILABLE)
)

# A transparent 1x1 PNG: what an <img> shows while nothing is served, instead of a broken icon.
BLANK_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg=="
)
NO_STORE = {"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"}


@router.get(
    "/image",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        200: {"content": {"image/png": {}}, "description": "nothing is being served"},
        303: {
            "description": "the served image",
            "headers": {"Location": {"description": "its URL", "schema": {"type": "string"}}},
        },
    },
)
async def embed_image(
    request: Request,
    settings: SettingsDep,
    ingest: IngestDep,
    placement: Placement = Placement.background,
    w: DisplayWidth = None,
) -> Response:
    """`<img src="https://HOST/v1/embed/image">`: log an impression and redirect (303, not
    cached) to its image, at display width `w` when given (as in `GET /v1/images/{id}`). No
    interactions can be reported this way, only impressions."""
    try:
        served = await serve_impression(
            ImpressionCreate(placement=placement), request, settings=settings, ingest=ingest
        )
    except NothingToServe:
        return Response(content=BLANK_PNG, media_type="image/png", headers=NO_STORE)
    location = served.image_url if w is None else f"{served.image_url}?w={w}"
    return RedirectResponse(location, status_code=303, headers=NO_STORE)
