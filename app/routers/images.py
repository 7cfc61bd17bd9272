from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from app import queries
from app.deps import SessionDep

router = APIRouter(prefix="/v1/images", tags=["images"])

IMMUTABLE = "public, max-age=31536000, immutable"


@router.get(
    "/{image_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 304: {"description": "not modified"}},
)
def get_image(image_id: int, request: Request, session: SessionDep) -> Response:
    """The PNG of one image. Images never change, so they are cached for a year."""
    image = queries.get_image(session, image_id)
    if image is None:
        raise HTTPException(status_code=404, detail=f"image {image_id} does not exist")
    etag = f'"{image.content_hash}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Access-Control-Allow-Origin": "*"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content=bytes(image.png), media_type="image/png", headers=headers)
