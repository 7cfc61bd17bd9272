"""The admin JSON API: bearer token (or the dashboard's cookie) on every route."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Interval
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from app import dashboard, exports
from app.deps import (
    MAX_ID,
    IdPath,
    JobsDep,
    PickerDep,
    SessionDep,
    SettingsDep,
    require_admin,
    require_same_origin,
)
from app.errors import (
    ADMIN,
    CROSS_ORIGIN,
    INVALID,
    UNAVAILABLE,
    conflict,
    not_found,
    responses,
)
from app.models import Placement
from app.schemas import (
    AdminVersionRow,
    HoldoutGain,
    JobStarted,
    LiveTraffic,
    ServingState,
)

Traffic = Literal["all", "real", "simulated"]
# An HTML form sends an empty field for "all versions".
OptionalId = Annotated[
    Annotated[int, Interval(ge=1, le=MAX_ID)] | None, BeforeValidator(lambda value: value or None)
]


# Every route of this router needs the admin token, whatever its own parameters say.
router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=responses(ADMIN, UNAVAILABLE),
)
# The changes: same origin when the cookie authenticates; refused actions raise
# dashboard.ActionRefused, which the app's error handler answers. Included into `router` below.
actions = APIRouter(
    dependencies=[Depends(require_same_origin)],
    responses=responses(
        CROSS_ORIGIN, conflict("the action cannot be done now; the message says why")
    ),
)
# Promoting a listed version: the link stateful clients follow from the lineage.
PROMOTE_LINK = {
    "admin_promote": {
        "operationId": "admin_promote",
        "parameters": {"version_id": "$response.body#/0/id"},
    }
}


def simulated_filter(traffic: Traffic) -> bool | None:
    return {"all": None, "real": False, "simulated": True}[traffic]


@router.get("/versions", responses=responses(INVALID, {200: {"links": PROMOTE_LINK}}))
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


@router.get("/live", responses=INVALID)
def admin_live(
    session: SessionDep, minutes: Annotated[int, Query(ge=1, le=240)] = 30
) -> LiveTraffic:
    """Impressions and interactions per minute, real and simulated."""
    return dashboard.live_traffic(session, window_minutes=minutes)


@router.get("/serving")
def admin_serving(session: SessionDep, settings: SettingsDep) -> ServingState:
    """The champion, a running candidate, the holdout, the split, a running cycle."""
    return dashboard.serving_state(session, settings)


@actions.post(
    "/cycles",
    status_code=202,
    responses=conflict("a cycle or a rollout is running, or there is no data"),
)
def admin_start_cycle(session: SessionDep, settings: SettingsDep, jobs: JobsDep) -> JobStarted:
    """Start a learning cycle now (ends a hold set by a rollback)."""
    started = dashboard.start_cycle(session, settings, jobs)
    session.commit()
    return started


@actions.post(
    "/versions/{version_id}/promote", responses=responses(not_found("generator version"), INVALID)
)
def admin_promote(
    version_id: IdPath, session: SessionDep, settings: SettingsDep, picker: PickerDep
) -> ServingState:
    """Serve this version as the champion: the running candidate (recorded as a manual
    promotion), or an older one to roll back (automatic learning then holds until a cycle is
    started by hand). Cancels any other running rollout. Ends a pause."""
    state = dashboard.promote(session, settings, version_id)
    session.commit()
    picker.invalidate()
    return state


@actions.post("/rollouts/current/stop")
def admin_stop_rollout(
    session: SessionDep, settings: SettingsDep, picker: PickerDep
) -> ServingState:
    """Reject the running candidate by hand; the champion serves alone."""
    state = dashboard.stop_rollout(session, settings)
    session.commit()
    picker.invalidate()
    return state


@actions.post("/pause")
def admin_pause(session: SessionDep, settings: SettingsDep, picker: PickerDep) -> ServingState:
    """Stop serving every arm: impressions answer 503 (the embed then does nothing)."""
    state = dashboard.pause(session, settings)
    session.commit()
    picker.invalidate()
    return state


@actions.post("/resume")
def admin_resume(session: SessionDep, settings: SettingsDep, picker: PickerDep) -> ServingState:
    """Serve the paused champion again (and a running rollout's candidate beside it)."""
    state = dashboard.resume(session, settings)
    session.commit()
    picker.invalidate()
    return state


@router.get("/holdout")
def admin_holdout(session: SessionDep, settings: SettingsDep) -> HoldoutGain | None:
    """The champion against the holdout arm on today's traffic (null without a holdout)."""
    return dashboard.holdout_gain(session, settings)


@router.get(
    "/exports/{table}",
    response_class=StreamingResponse,
    responses=responses(
        INVALID, {200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}}}
    ),
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


router.include_router(actions)
