from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request

from app.deps import IngestDep, SettingsDep
from app.errors import (
    PUBLIC_WRITE,
    UNREADABLE_BODY,
    Forbidden,
    RateLimited,
    Responses,
    error_response,
    responses,
)
from app.ingest import Ingest, NewImpression
from app.ratelimit import RateLimiter, too_many
from app.routers.images import image_url
from app.schemas import ImpressionCreate, ImpressionRead
from app.settings import Settings
from app.tokens import hash_visitor, sign_impression

router = APIRouter(
    prefix="/v1/impressions",
    tags=["impressions"],
    responses=responses(UNREADABLE_BODY, PUBLIC_WRITE),
)

VISITOR_COOKIE = "pirloop_vid"
SIMULATION_KEY_HEADER = "X-Pirloop-Simulation-Key"
SimulationKeyHeader = Annotated[
    str | None,
    Header(
        alias=SIMULATION_KEY_HEADER,
        description="PIRLOOP_SIMULATION_KEY: needed to mark an impression `simulated`",
    ),
]
SIMULATED_REFUSED: Responses = {
    403: error_response(
        "`simulated` was set without the service's simulation key (X-Pirloop-Simulation-Key)"
    )
}


def check_simulated(settings: Settings, body: ImpressionCreate, key: str | None) -> None:
    """Only the operator's simulator may mark traffic simulated: a public client that could
    would take its impressions out of the real-traffic numbers at will. Refused rather than
    ignored, so a simulator without the key stops at once instead of passing its clicks off
    as real people's."""
    if not body.simulated:
        return
    if not settings.simulation_key:
        raise Forbidden("this service takes no simulated traffic (PIRLOOP_SIMULATION_KEY is unset)")
    if key is None or not hmac.compare_digest(key.encode(), settings.simulation_key.encode()):
        raise Forbidden(f"simulated impressions need the simulation key in {SIMULATION_KEY_HEADER}")


def raw_client(request: Request) -> str:
    """The connection's address and user agent: unlike a visitor id, not a free choice of
    the client for every request. Only a salted hash of this is stored."""
    host = request.client.host if request.client else "unknown"
    return f"ip:{host}|ua:{request.headers.get('user-agent', '')[:256]}"


def raw_visitor(request: Request, body: ImpressionCreate) -> str | None:
    """The page's own visitor id when it sends one (body or cookie); None when it sends none
    and the visitor is the connection's address and agent (raw_client). Only a salted hash
    of this is stored."""
    if body.visitor_id:
        return "id:" + body.visitor_id
    if cookie := request.cookies.get(VISITOR_COOKIE):
        return "id:" + cookie[:128]
    return None


# What a client does with a served impression: fetch its image, report an interaction with
# its token, read its version. Declared as links so that stateful clients chain real ids.
IMPRESSION_LINKS = {
    "get_image": {
        "operationId": "get_image",
        "parameters": {"image_id": "$response.body#/image_id"},
    },
    "create_interaction": {
        "operationId": "create_interaction",
        "requestBody": {"token": "$response.body#/token"},
    },
    "create_interactions_batch": {
        "operationId": "create_interactions_batch",
        "requestBody": {"interactions": [{"token": "$response.body#/token", "kind": "click"}]},
    },
    "get_version": {
        "operationId": "get_version",
        "parameters": {"version_id": "$response.body#/generator_version"},
    },
    "version_images_pir": {
        "operationId": "version_images_pir",
        "parameters": {"version_id": "$response.body#/generator_version"},
    },
}


@router.post(
    "", status_code=201, responses=responses(SIMULATED_REFUSED, {201: {"links": IMPRESSION_LINKS}})
)
async def create_impression(
    body: ImpressionCreate,
    request: Request,
    settings: SettingsDep,
    ingest: IngestDep,
    simulation_key: SimulationKeyHeader = None,
) -> ImpressionRead:
    """Serve the next image (the champion's, a rollout candidate's or the holdout's, drawn at
    random with the arms' shares) and log the impression. `simulated: true` (the simulator's
    traffic) needs the service's simulation key in X-Pirloop-Simulation-Key: 403 without."""
    check_simulated(settings, body, simulation_key)
    return await serve_impression(body, request, settings=settings, ingest=ingest)


async def serve_impression(
    body: ImpressionCreate, request: Request, *, settings: Settings, ingest: Ingest
) -> ImpressionRead:
    """Pick the next image and log its impression; raises NothingToServe. Shared by the JSON
    route and the script-free <img> embed. Answers only once the row is committed."""
    client_hash = hash_visitor(settings.secret_key, raw_client(request))
    visitor = raw_visitor(request, body)
    visitor_hash = client_hash if visitor is None else hash_visitor(settings.secret_key, visitor)
    if settings.rate_limit_visitor_per_minute:
        limiter: RateLimiter = request.app.state.rate_limiter
        wait = await limiter.hit_async(
            f"visitor:{visitor_hash}", settings.rate_limit_visitor_per_minute
        )
        if wait is not None:
            headers, _ = too_many(wait)
            raise RateLimited(
                "too many impressions for this visitor", retry_after=headers["Retry-After"]
            )
    stored = await ingest.log_impression(
        NewImpression(
            placement=body.placement,
            visitor_hash=visitor_hash,
            simulated=body.simulated,
            client_hash=client_hash,
        )
    )
    token, expires_at = sign_impression(
        settings.secret_key,
        impression_id=stored.impression_id,
        image_id=stored.image_id,
        ttl_seconds=settings.token_ttl_seconds,
    )
    return ImpressionRead(
        impression_id=stored.impression_id,
        token=token,
        image_id=stored.image_id,
        image_url=image_url(settings, stored.image_id),
        generator_version=stored.version_id,
        placement=body.placement,
        expires_at=datetime.fromtimestamp(expires_at, UTC),
    )
