"""GET /metrics: the Prometheus scrape, to the admin credential only (a scraper sends the
admin token as a bearer token). Wrong or missing credentials count toward the admin throttle,
as on every admin surface."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app import metrics
from app.deps import AdminDep, SessionDep, SettingsDep
from app.errors import ADMIN, UNAVAILABLE, Responses, responses

router = APIRouter(tags=["metrics"], responses=responses(ADMIN, UNAVAILABLE))

SCRAPE: Responses = {
    200: {
        "description": "the metrics in Prometheus' text format (version 0.0.4)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=Response, responses=SCRAPE)
def scrape_metrics(_: AdminDep, session: SessionDep, settings: SettingsDep) -> Response:
    """Requests per route template and status, group commits, rate-limit refusals, the arms
    served now, and (embedded default) the learning cycles run in this service; summed over
    every process of this service."""
    body = metrics.exposition(metrics.ServingCollector(session, settings))
    return Response(
        content=body,
        media_type=metrics.CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )
