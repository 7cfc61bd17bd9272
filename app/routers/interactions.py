from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from app import queries
from app.deps import SessionDep, SettingsDep
from app.schemas import InteractionCreate, InteractionRead
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
