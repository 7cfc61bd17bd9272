from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BeforeValidator
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import queries
from app.deps import IdPath
from app.errors import INVALID, UNAVAILABLE, NotFound, not_found, responses
from app.image_cache import CachedImage, ImageCache
from app.image_sizes import (
    DISPLAY_MEDIA_TYPE,
    DISPLAY_WIDTHS,
    allowed_widths_text,
    check_width,
    display_etag,
    resample,
)
from app.settings import Settings

router = APIRouter(
    prefix="/v1/images",
    tags=["images"],
    responses=responses(not_found("image"), INVALID, UNAVAILABLE),
)
ETAG = {
    "ETag": {
        "description": "the image's content hash, quoted; with a width, the hash and the width",
        "schema": {"type": "string"},
    }
}

IMMUTABLE = "public, max-age=31536000, immutable"

DisplayWidth = Annotated[
    int | None,
    BeforeValidator(check_width),
    Query(
        description=(
            "Display width in CSS pixels × devicePixelRatio: the image resampled on the server "
            "(Lanczos, light unsharp mask) to this width, height in proportion, as WebP. One "
            f"of {allowed_widths_text()}; any other value is a 422. Without it, the original "
            "PNG as the generator drew it (what the estimator learns from). Pick the smallest "
            "allowed width at least as wide as the image is shown."
        ),
        json_schema_extra={"enum": list(DISPLAY_WIDTHS)},
    ),
]


def image_headers(etag: str) -> dict[str, str]:
    """What every image answer carries besides its type and length (app/image_fast_path.py
    answers cached images with the same)."""
    return {"ETag": etag, "Cache-Control": IMMUTABLE, "Access-Control-Allow-Origin": "*"}


def image_url(settings: Settings, image_id: int) -> str:
    """The URL of GET /v1/images/{image_id}: on PIRLOOP_PUBLIC_URL when it is set, else
    relative to this service. Never built from the request's Host header, which the client
    chooses (a forged Host would put its own address into answers and caches)."""
    return f"{settings.public_url.rstrip('/')}{router.prefix}/{image_id}"


def _load_image(session_factory: sessionmaker[Session], image_id: int) -> CachedImage | None:
    with session_factory() as session:
        row = queries.get_image(session, image_id)
        return (
            None
            if row is None
            else CachedImage(content=bytes(row.png), content_hash=row.content_hash)
        )


@router.get(
    "/{image_id}",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, DISPLAY_MEDIA_TYPE: {}},
            "description": "the original PNG, or with w the display size as WebP",
            "headers": ETAG,
        },
        304: {"description": "not modified: If-None-Match named this ETag", "headers": ETAG},
    },
)
async def get_image(image_id: IdPath, request: Request, w: DisplayWidth = None) -> Response:
    """One image: the original PNG, or with `w` resampled to a display width. Images never
    change, so both are cached for a year."""
    cache: ImageCache = request.app.state.image_cache
    image = cache.get(image_id)
    if image is None:
        # Only a miss needs the database (and a thread, so the event loop never waits on it);
        # a served batch is in memory after its first few requests.
        image = await run_in_threadpool(_load_image, request.app.state.session_factory, image_id)
        if image is None:
            raise NotFound(f"image {image_id} does not exist")
        cache.put(image_id, image)
    etag = display_etag(image.content_hash, w)
    headers = image_headers(etag)
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)  # before any resampling
    if w is not None:
        image = await _display_size(request, image_id, image, w)
    return Response(content=image.content, media_type=image.media_type, headers=headers)


async def _display_size(
    request: Request, image_id: int, original: CachedImage, width: int
) -> CachedImage:
    cache: ImageCache = request.app.state.display_cache
    key = (image_id, width)
    image = cache.get(key)
    if image is None:
        # Resampling and encoding take milliseconds to a few hundred (1920 px): off the loop.
        content = await run_in_threadpool(resample, original.content, width)
        image = CachedImage(
            content=content, content_hash=original.content_hash, media_type=DISPLAY_MEDIA_TYPE
        )
        cache.put(key, image)
    return image
