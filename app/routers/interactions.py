from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app import queries
from app.deps import SessionDep, SettingsDep
from app.schemas import InteractionCreate, InteractionRead
from app.settings import Settings
from app.tokens import TokenError, verify_impression

router = APIRouter(prefix="/v1/interactions", tags=["interactions"])


@router.post(
    "",
    status_code=201,
    responses={200: {"description": "a repeat of an interaction already recorded"}},
)
def create_interaction(
    body: InteractionCreate, response: Response, session: SessionDep, settings: SettingsDep
) -> InteractionRead:
    """Record what a person did with an impression. The same (impression, kind) twice is
    stored once: the repeat answers 200 with the first value."""
    return record_interaction(body, response, session=session, settings=settings)


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
def create_interaction_beacon(
    body: Annotated[InteractionCreate, Depends(beacon_body)],
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> InteractionRead:
    """The same as POST /v1/interactions for `navigator.sendBeacon`: the same JSON, which may
    be sent as text/plain, a type that needs no CORS preflight (beacons cannot make one)."""
    return record_interaction(body, response, session=session, settings=settings)


def record_interaction(
    body: InteractionCreate, response: Response, *, session: Session, settings: Settings
) -> InteractionRead:
    try:
        claims = verify_impression(settings.secret_key, body.token)
    except TokenError as exc:
        raise HTTPException(status_code=401, detail=str(exc)) from exc
    impression = queries.get_impression(session, claims.impression_id)
    if impression is None or impression.image_id != claims.image_id:
        raise HTTPException(status_code=401, detail="token names no impression served here")
    if body.kind == "rating" and impression.placement != "rating":
        raise HTTPException(
            status_code=422, detail="ratings are accepted only for rating-placement impressions"
        )
    assert body.value is not None  # the schema fills a default for every kind
    interaction, created = queries.insert_interaction_once(
        session, impression_id=impression.id, kind=body.kind, value=body.value
    )
    if not created:
        response.status_code = 200
    return InteractionRead(
        interaction_id=interaction.id,
        impression_id=impression.id,
        kind=interaction.kind,
        value=interaction.value,
        duplicate=not created,
    )
