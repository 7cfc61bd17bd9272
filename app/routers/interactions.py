from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.deps import IngestDep, SettingsDep
from app.ingest import Ingest, NewInteraction, RatingNotAllowed, UnknownImpression
from app.schemas import InteractionCreate, InteractionRead
from app.settings import Settings
from app.tokens import TokenError, verify_impression

router = APIRouter(prefix="/v1/interactions", tags=["interactions"])


@router.post(
    "",
    status_code=201,
    responses={200: {"description": "a repeat of an interaction already recorded"}},
)
async def create_interaction(
    body: InteractionCreate, response: Response, settings: SettingsDep, ingest: IngestDep
) -> InteractionRead:
    """Record what a person did with an impression. The same (impression, kind) twice is
    stored once: the repeat answers 200 with the first value."""
    return await record_interaction(body, response, settings=settings, ingest=ingest)


async def beacon_body(request: Request) -> InteractionCreate:
    """Parse the body as JSON whatever its content type; errors read as the JSON route's."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "body is not valid JSON", "type": "json_invalid"}]
        ) from exc
    try:
        return InteractionCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        ) from exc


@router.post(
    "/beacon",
    status_code=201,
    responses={200: {"description": "a repeat of an interaction already recorded"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/plain": {"schema": {"$ref": "#/components/schemas/InteractionCreate"}}
            },
        }
    },
)
async def create_interaction_beacon(
    body: Annotated[InteractionCreate, Depends(beacon_body)],
    response: Response,
    settings: SettingsDep,
    ingest: IngestDep,
) -> InteractionRead:
    """The same as POST /v1/interactions for `navigator.sendBeacon`: the same JSON, which may
    be sent as text/plain, a type that needs no CORS preflight (beacons cannot make one)."""
    return await record_interaction(body, response, settings=settings, ingest=ingest)


async def record_interaction(
    body: InteractionCreate, response: Response, *, settings: Settings, ingest: Ingest
) -> InteractionRead:
    """Answers once the row is committed (or was stored before: a repeat answers 200)."""
    try:
        claims = verify_impression(settings.secret_key, body.token)
    except TokenError as exc:
        raise HTTPException(status_code=401, detail=str(exc)) from exc
    assert body.value is not None  # the schema fills a default for every kind
    try:
        stored = await ingest.record_interaction(
            NewInteraction(
                impression_id=claims.impression_id,
                image_id=claims.image_id,
                kind=body.kind,
                value=body.value,
            )
        )
    except UnknownImpression as exc:
        raise HTTPException(status_code=401, detail=str(exc)) from exc
    except RatingNotAllowed as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    if not stored.created:
        response.status_code = 200
    return InteractionRead(
        interaction_id=stored.interaction_id,
        impression_id=stored.impression_id,
        kind=stored.kind,
        value=stored.value,
        duplicate=not stored.created,
    )
