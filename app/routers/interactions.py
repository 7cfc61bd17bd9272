from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.deps import IngestDep, SettingsDep
from app.errors import (
    PUBLIC_WRITE,
    UNREADABLE_BODY,
    RateLimited,
    Responses,
    conflict,
    error_response,
    responses,
)
from app.ingest import Ingest, StoredInteraction
from app.ratelimit import RateLimiter, address_key, too_many
from app.recording import InteractionRefused, record_many, record_one
from app.schemas import (
    MAX_BATCH_INTERACTIONS,
    InteractionBatchCreate,
    InteractionBatchRead,
    InteractionCreate,
    InteractionRead,
    InteractionResult,
    ItemError,
)
from app.settings import Settings

PREFIX = "/v1/interactions"
BATCH_PATH = f"{PREFIX}/batch"

# A token that is malformed, forged, expired, or names an impression not stored here; a
# rating for an impression not shown for rating.
REFUSED: Responses = responses(
    {401: error_response("the impression token is not valid here; message says why")},
    conflict("a rating for an impression that was not shown in the rating placement"),
)
router = APIRouter(prefix=PREFIX, tags=["interactions"], responses=PUBLIC_WRITE)
REPEAT = {"description": "a repeat of an interaction already recorded"}
# Sending the same interaction again answers 200 with the stored one (idempotence).
REPEAT_LINK = {
    "create_interaction": {"operationId": "create_interaction", "requestBody": "$request.body"}
}


@router.post(
    "",
    status_code=201,
    responses=responses(UNREADABLE_BODY, REFUSED, {200: REPEAT, 201: {"links": REPEAT_LINK}}),
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
    except RecursionError as exc:  # nested deeper than the parser's recursion limit
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "body is nested too deeply", "type": "json_invalid"}]
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
    # Its body is read by beacon_body, never parsed by FastAPI: no 400 (UNREADABLE_BODY).
    responses=responses(REFUSED, {200: REPEAT}),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media_type: {"schema": {"$ref": "#/components/schemas/InteractionCreate"}}
                for media_type in ("application/json", "text/plain")
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


@router.post(
    "/batch",
    responses=responses(
        UNREADABLE_BODY,
        {200: {"description": "every item answered in order; the created ones are committed"}},
    ),
    response_model_exclude_none=True,
    description=(
        f"Record 1 to {MAX_BATCH_INTERACTIONS} interactions in one request. Each item is "
        "checked as POST /v1/interactions checks its body and answered in `results`, in "
        "order: `created`, `duplicate` (stored before, or earlier in this batch: the first "
        "value stands) or `rejected` with the error the single endpoint would give. The good "
        "items are stored in one transaction and the answer comes after its COMMIT; a bad "
        "item never fails the rest. The address rate limit counts every item."
    ),
)
async def create_interactions_batch(
    body: InteractionBatchCreate, request: Request, settings: SettingsDep, ingest: IngestDep
) -> InteractionBatchRead:
    """Many interactions, one writer submission, one answer after the COMMIT."""
    await charge_items(request, settings, len(body.interactions))
    outcomes = await record_many(body.interactions, secret=settings.secret_key, ingest=ingest)
    return batch_read(outcomes)


async def record_interaction(
    body: InteractionCreate, response: Response, *, settings: Settings, ingest: Ingest
) -> InteractionRead:
    """Answers once the row is committed (or was stored before: a repeat answers 200)."""
    read = await record_interaction_read(body, settings=settings, ingest=ingest)
    if read.duplicate:
        response.status_code = 200
    return read


async def record_interaction_read(
    body: InteractionCreate, *, settings: Settings, ingest: Ingest
) -> InteractionRead:
    """The stored interaction once committed; `duplicate` when it was stored before."""
    stored = await record_one(body, secret=settings.secret_key, ingest=ingest)
    return InteractionRead(
        interaction_id=stored.interaction_id,
        impression_id=stored.impression_id,
        kind=stored.kind,
        value=stored.value,
        duplicate=not stored.created,
    )


async def charge_items(request: Request, settings: Settings, items: int) -> None:
    """The address limit counts interactions, not requests: the middleware counted this
    request as one (app/ratelimit.py); count the rest of its items, or refuse it whole."""
    if not settings.rate_limit_ip_per_minute or items <= 1:
        return
    limiter: RateLimiter = request.app.state.rate_limiter
    address = request.client.host if request.client else "unknown"
    wait = await limiter.hit_async(
        address_key(address), settings.rate_limit_ip_per_minute, cost=items - 1
    )
    if wait is not None:
        headers, _ = too_many(wait)
        raise RateLimited(
            f"too many interactions from this address; retry in {headers['Retry-After']} s",
            retry_after=headers["Retry-After"],
        )


def batch_read(outcomes: list[StoredInteraction | InteractionRefused]) -> InteractionBatchRead:
    results = [
        InteractionResult(
            index=index,
            status="rejected",
            error=ItemError(error=outcome.error, message=outcome.message),
        )
        if isinstance(outcome, InteractionRefused)
        else InteractionResult(
            index=index,
            status="created" if outcome.created else "duplicate",
            interaction_id=outcome.interaction_id,
            impression_id=outcome.impression_id,
            kind=outcome.kind,
            value=outcome.value,
        )
        for index, outcome in enumerate(outcomes)
    ]
    return InteractionBatchRead(
        results=results,
        created=sum(result.status == "created" for result in results),
        duplicate=sum(result.status == "duplicate" for result in results),
        rejected=sum(result.status == "rejected" for result in results),
    )
