from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from app import queries
from app.deps import IdPath, SessionDep
from app.image_cache import CachedImage, ImageCache

router = APIRouter(prefix="/v1/images", tags=["images"])

IMMUTABLE = "public, max-age=31536000, immutable"


@router.get(
    "/{image_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 304: {"description": "not modified"}},
)
def get_image(image_id: IdPath, request: Request, session: SessionDep) -> Response:
    """The PNG of one image. Images never change, so they are cached for a year."""
    cache: ImageCache = request.app.state.image_cache
    image = cache.get(image_id)
    if image is None:
        row = queries.get_image(session, image_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"image {image_id} does not exist")
        image = CachedImage(png=bytes(row.png), content_hash=row.content_hash)
        cache.put(image_id, image)
    etag = f'"{image.content_hash}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Access-Control-Allow-Origin": "*"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content=image.png, media_type="image/png", headers=headers)
