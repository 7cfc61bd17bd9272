"""The admin JSON API: bearer token (or the dashboard's cookie) on every route."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from app import dashboard, exports
from app.deps import (
    JobsDep,
    PickerDep,
    SessionDep,
    SettingsDep,
    require_admin,
    require_same_origin,
)
from app.models import Placement
from app.schemas import AdminVersionRow, JobStarted, LiveTraffic, ServingState

Traffic = Literal["all", "real", "simulated"]
# An HTML form sends an empty field for "all versions".
OptionalId = Annotated[int | None, BeforeValidator(lambda value: value or None)]


# Every route of this router needs the admin token, whatever its own parameters say.
router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])
SAME_ORIGIN = [Depends(require_same_origin)]


def _refused(exc: dashboard.ActionRefused) -> HTTPException:
    return HTTPException(status_code=exc.status, detail=exc.message)


def simulated_filter(traffic: Traffic) -> bool | None:
    return {"all": None, "real": False, "simulated": True}[traffic]


@router.get("/versions")
def admin_versions(
    session: SessionDep,
    settings: SettingsDep,
    placement: Placement | None = None,
    include_simulated: bool | None = None,
) -> list[AdminVersionRow]:
    """The lineage: every version with traffic, PIR (95% CI) and change against its parent."""
    return dashboard.version_rows(
        session,
        settings,
        placement=placement or settings.learning_placement,
        include_simulated=(
            settings.use_simulated_traffic if include_simulated is None else include_simulated
        ),
    )


@router.get("/live")
def admin_live(
    session: SessionDep, minutes: Annotated[int, Query(ge=1, le=240)] = 30
) -> LiveTraffic:
    """Impressions and interactions per minute, real and simulated."""
    return dashboard.live_traffic(session, window_minutes=minutes)


@router.get("/serving")
def admin_serving(session: SessionDep) -> ServingState:
    return dashboard.serving_state(session)


@router.post("/cycles", status_code=202, dependencies=SAME_ORIGIN)
def admin_start_cycle(jobs: JobsDep) -> JobStarted:
    """Start a learning cycle now."""
    try:
        return dashboard.start_cycle(jobs)
    except dashboard.ActionRefused as exc:
        raise _refused(exc) from exc


@router.post("/versions/{version_id}/promote", dependencies=SAME_ORIGIN)
def admin_promote(version_id: int, session: SessionDep, picker: PickerDep) -> ServingState:
    """Serve this version: a newer one, or an older one to roll back. Ends a pause."""
    try:
        state = dashboard.promote(session, version_id)
    except dashboard.ActionRefused as exc:
        raise _refused(exc) from exc
    session.commit()
    picker.invalidate()
    return state


@router.post("/pause", dependencies=SAME_ORIGIN)
def admin_pause(session: SessionDep, picker: PickerDep) -> ServingState:
    """Stop serving: impressions answer 503 (the embed then does nothing) until resumed."""
    try:
        state = dashboard.pause(session)
    except dashboard.ActionRefused as exc:
        raise _refused(exc) from exc
    session.commit()
    picker.invalidate()
    return state


@router.post("/resume", dependencies=SAME_ORIGIN)
def admin_resume(session: SessionDep, picker: PickerDep) -> ServingState:
    """Serve the paused version again."""
    try:
        state = dashboard.resume(session)
    except dashboard.ActionRefused as exc:
        raise _refused(exc) from exc
    session.commit()
    picker.invalidate()
    return state


@router.get(
    "/exports/{table}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}},
    },
)
def admin_export(
    table: exports.Table,
    request: Request,
    format: exports.Format = "csv",
    version_id: OptionalId = None,
    traffic: Traffic = "all",
) -> StreamingResponse:
    """Impressions or interactions, filtered by version and real/simulated, streamed."""
    factory = request.app.state.session_factory
    simulated = simulated_filter(traffic)
    stream = (exports.stream_csv if format == "csv" else exports.stream_parquet)(
        factory, table, version_id=version_id, simulated=simulated
    )
    name = f"pirloop-{table}" + (f"-v{version_id}" if version_id is not None else "")
    name += "" if traffic == "all" else f"-{traffic}"
    return StreamingResponse(
        stream,
        media_type=exports.MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{name}.{format}"',
            "Cache-Control": "no-store",
        },
    )
