from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import queries
from app.deps import IdPath
from app.errors import INVALID, UNAVAILABLE, NotFound, not_found, responses
from app.image_cache import CachedImage, ImageCache

router = APIRouter(
    prefix="/v1/images",
    tags=["images"],
    responses=responses(not_found("image"), INVALID, UNAVAILABLE),
)
ETAG = {"ETag": {"description": "the image's content hash, quoted", "schema": {"type": "string"}}}

IMMUTABLE = "public, max-age=31536000, immutable"


def image_url(request: Request, image_id: int) -> str:
    """The absolute URL of GET /v1/images/{image_id}, as request.url_for would build it,
    without searching the routing table on every impression."""
    return f"{str(request.base_url).rstrip('/')}{router.prefix}/{image_id}"


def _load_image(session_factory: sessionmaker[Session], image_id: int) -> CachedImage | None:
    with session_factory() as session:
        row = queries.get_image(session, image_id)
        return (
            None if row is None else CachedImage(png=bytes(row.png), content_hash=row.content_hash)
        )


@router.get(
    "/{image_id}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "headers": ETAG},
        304: {"description": "not modified: If-None-Match named this ETag", "headers": ETAG},
    },
)
async def get_image(image_id: IdPath, request: Request) -> Response:
    """The PNG of one image. Images never change, so they are cached for a year."""
    cache: ImageCache = request.app.state.image_cache
    image = cache.get(image_id)
    if image is None:
        # Only a miss needs the database (and a thread, so the event loop never waits on it);
        # a served batch is in memory after its first few requests.
        image = await run_in_threadpool(_load_image, request.app.state.session_factory, image_id)
        if image is None:
            raise NotFound(f"image {image_id} does not exist")
        cache.put(image_id, image)
    etag = f'"{image.content_hash}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Access-Control-Allow-Origin": "*"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content=image.png, media_type="image/png", headers=headers)
