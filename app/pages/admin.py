"""The admin dashboard at /admin: a login form that sets an HttpOnly, SameSite=Strict cookie,
the dashboard itself, and form actions that answer with a redirect back to it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from app import admin_auth, dashboard, plots, queries, rollout
from app.deps import (
    ADMIN_COOKIE,
    IdPath,
    JobsDep,
    PickerDep,
    SessionDep,
    SettingsDep,
    check_admin,
    count_admin_failure,
    is_admin_token,
    refuse_if_throttled,
    require_same_origin,
)
from app.measurement import MIN_IMAGES_FOR_SIGNIFICANCE
from app.models import GeneratorVersion, VersionStatus
from app.pages import comparison, templates
from app.schemas import AdminVersionRow
from app.serving import BatchPicker
from app.settings import Settings

router = APIRouter(prefix="/admin", tags=["pages"], include_in_schema=False)
SAME_ORIGIN = [Depends(require_same_origin)]
LOGIN = "/admin/login"
NOTICES = {
    "cycle": "A learning cycle was requested.",
    "paused": "Serving is paused: impressions answer 503 until you resume or promote.",
    "resumed": "Serving resumed.",
    "promoted": "Version promoted: it is the champion now.",
    "stopped": "Rollout stopped: the candidate is rejected and the champion serves alone.",
}
# Tuning curves in plain words (worker/ml/tuning.py names them fool, anchor, ...).
TUNING_CURVES = (
    ("loss_fool", "fooling the discriminator"),
    ("loss_anchor", "distance from parent's images"),
    ("loss_diversity", "diversity loss"),
    ("loss_d", "discriminator's loss"),
    ("predicted_pir", "estimator's predicted PIR"),
)
SAMPLE_VERSIONS = 6


def _signed_in(request: Request, settings: Settings, session: Session) -> bool:
    """A valid token or session; a wrong one is counted against the address (a missing one is
    not: that is a first visit). 429 while the address is throttled."""
    return check_admin(request, settings, session) is True


def _to_login() -> RedirectResponse:
    response = RedirectResponse(LOGIN, status_code=303)
    # A cookie that did not sign in (expired, revoked, an old token's) is dropped, so the
    # browser does not present it again and again.
    _forget_cookie(response)
    return response


def _forget_cookie(response: Response) -> None:
    response.delete_cookie(ADMIN_COOKIE, path="/", httponly=True, samesite="strict")


async def form_token(request: Request) -> str:
    """The login form's one field. A urlencoded form parsed by hand: one field does not warrant
    python-multipart."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    return (form.get("token") or [""])[0].strip()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, settings: SettingsDep, session: SessionDep) -> Response:
    if _signed_in(request, settings, session):
        return RedirectResponse("/admin", status_code=303)
    response = templates.TemplateResponse(request, "admin_login.html", {"title": "Sign in"})
    if ADMIN_COOKIE in request.cookies:
        _forget_cookie(response)
    return response


@router.post("/login", response_class=HTMLResponse, dependencies=SAME_ORIGIN)
def login(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    token: Annotated[str, Depends(form_token)],
) -> Response:
    refuse_if_throttled(request, settings)
    if not is_admin_token(settings, token):
        count_admin_failure(request)
        return templates.TemplateResponse(
            request,
            "admin_login.html",
            {"title": "Sign in", "error": "That is not the admin token."},
            status_code=401,
        )
    # The cookie carries a random session id, never the token: sign-out revokes it.
    session_id = admin_auth.start_session(session, settings)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(
        ADMIN_COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=admin_auth.SESSION_SECONDS,
        path="/",
    )
    return response


@router.post("/logout", dependencies=SAME_ORIGIN)
def logout(request: Request, session: SessionDep) -> RedirectResponse:
    session_id = request.cookies.get(ADMIN_COOKIE)
    if session_id is not None:
        admin_auth.end_session(session, session_id)
    return _to_login()


def _floats(value: Any) -> list[float]:
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, int | float) and math.isfinite(float(v))]


# How each kind of measured change is labelled, so a concurrent comparison (a rollout: both
# arms at random on the same traffic at the same time) is never mistaken for a before/after one
# (the version against its parent over different periods: confounded with anything that
# changed in between).
COMPARISON_SOURCES = {
    "rollout": ("concurrent", "rollout vs champion v{against}: same traffic, same time"),
    "before_after": ("before/after", "vs parent v{against} over different periods"),
}


def compared_against(row: AdminVersionRow, champions: dict[int, int]) -> int | None:
    """The version a row's measured change is against: its rollout's champion, or its parent."""
    if row.comparison_source == "rollout":
        return champions.get(row.id)
    return row.parent_id


def predicted_against_measured(rows: list[AdminVersionRow], champions: dict[int, int]) -> Markup:
    """Each tuned version's predicted change (the estimator's, at tuning time) against the
    change measured from its traffic: its rollout's concurrent comparison where it had one,
    else before/after against its parent (another colour). Points on the diagonal mean a
    calibrated estimator, and points below it the paper's underestimation."""
    points = [
        plots.ScatterPoint(
            x=row.comparison.delta,
            y=row.estimated_delta,
            label=(
                f"v{row.id}: measured {row.comparison.delta:+.4f} "
                f"({COMPARISON_SOURCES[row.comparison_source][0]} vs "
                f"v{compared_against(row, champions)}), "
                f"predicted {row.estimated_delta:+.4f}"
            ),
            series=0 if row.comparison_source == "rollout" else 1,
            tag=f"v{row.id}",
        )
        for row in rows
        if row.comparison is not None
        and row.comparison_source is not None
        and row.estimated_delta is not None
    ]
    return plots.scatter(
        points,
        title="Predicted against measured change, per version",
        x_label="measured change in PIR",
        y_label="estimator's predicted change",
        series_names=["concurrent (rollout)", "before/after (confounded with time)"],
        diagonal=True,
        empty_message="no version has both a predicted and a measured change yet",
    )


def _selected(versions: list[GeneratorVersion], wanted: str | None) -> GeneratorVersion | None:
    by_id = {v.id: v for v in versions}
    if wanted and wanted.isdigit() and int(wanted) in by_id:
        return by_id[int(wanted)]
    with_estimator = [v for v in versions if isinstance(v.metrics.get("estimator"), dict)]
    if with_estimator:
        return with_estimator[-1]
    serving = [v for v in versions if v.status == VersionStatus.serving]
    return serving[-1] if serving else (versions[-1] if versions else None)


def _context(
    request: Request, session: Session, settings: Settings, **extra: Any
) -> dict[str, Any]:
    params = request.query_params
    placement = params.get("placement")
    if placement not in ("background", "rating"):
        placement = settings.learning_placement
    traffic = params.get("traffic")
    if traffic not in ("real", "all"):
        traffic = "all" if settings.use_simulated_traffic else "real"
    include_simulated = traffic == "all"
    rows: list[AdminVersionRow] = dashboard.version_rows(
        session, settings, placement=placement, include_simulated=include_simulated
    )
    versions = list(queries.list_versions(session))
    selected = _selected(versions, params.get("version"))
    state = dashboard.serving_state(session, settings)
    serving_id = state.serving_version or state.paused_version
    running = rollout.running_rollout(session)
    live_comparison = comparison.live_comparison(
        session, running, placement=settings.learning_placement
    )
    holdout = dashboard.holdout_gain(session, settings)
    history = comparison.decision_history(session)
    # Rollout candidate -> its champion, the newest rollout winning, as version_rows reads them.
    champions = {
        r.candidate_id: r.champion_id for r in reversed(rollout.list_rollouts(session, limit=500))
    }

    pir_points = [
        plots.PirPoint(
            f"v{row.id}", row.pir.pir, row.pir.ci_low, row.pir.ci_high, row.id == serving_id
        )
        for row in reversed(rows)
    ]
    figures = {
        "pir": plots.pir_by_version(pir_points, title=f"PIR per version ({placement})"),
        "predicted_vs_measured": predicted_against_measured(rows, champions),
        **comparison.interval_figures(live_comparison),
    }
    histogram_groups: list[tuple[str, list[float]]] = []
    if selected is not None:
        estimator = selected.metrics.get("estimator")
        estimator = estimator if isinstance(estimator, dict) else {}
        tuning = selected.metrics.get("tuning")
        tuning = tuning if isinstance(tuning, dict) else {}
        calibration_rows = estimator.get("calibration")
        figures["calibration"] = plots.calibration(
            calibration_rows if isinstance(calibration_rows, list) else [],
            title=f"Estimator calibration (v{selected.id})",
        )
        figures["estimator_loss"] = plots.line_chart(
            [
                ("train", _floats(estimator.get("train_loss"))),
                ("held-out", _floats(estimator.get("holdout_loss"))),
            ],
            title=f"Estimator training loss (v{selected.id})",
            x_label="epoch",
        )
        figures["tuning_loss"] = plots.line_chart(
            [(label, _floats(tuning.get(key))) for key, label in TUNING_CURVES],
            title=f"Generator tuning curves (v{selected.id})",
            x_label="tuning step (as logged)",
            y_label="loss, or predicted PIR",
        )
        for version_id in (selected.id, selected.parent_id):
            if version_id is not None:
                histogram_groups.append(
                    (
                        f"v{version_id}",
                        dashboard.per_image_pir(
                            session,
                            settings,
                            version_id,
                            placement=placement,
                            include_simulated=include_simulated,
                        ),
                    )
                )
    figures["histogram"] = plots.histogram(histogram_groups, title=f"Per-image PIR ({placement})")
    samples = []
    for row in rows[:SAMPLE_VERSIONS]:
        top, bottom = dashboard.image_extremes(
            session, settings, row.id, placement=placement, include_simulated=include_simulated
        )
        samples.append({"row": row, "top": top, "bottom": bottom})
    live = dashboard.live_traffic(session, window_minutes=30)
    return {
        "title": "pirloop admin",
        "rows": rows,
        "state": state,
        "comparison": live_comparison,
        "arms": comparison.arm_rows(state, live_comparison, holdout),
        "holdout": holdout,
        "history": history,
        "champions": champions,
        "sources": COMPARISON_SOURCES,
        "selected": selected,
        "figures": figures,
        "samples": samples,
        "live": live,
        "placement": placement,
        "traffic": traffic,
        "learning_placement": settings.learning_placement,
        "learning_simulated": settings.use_simulated_traffic,
        "min_images": MIN_IMAGES_FOR_SIGNIFICANCE,
        "promotable": {s.value for s in dashboard.PROMOTABLE},
        "notice": NOTICES.get(params.get("notice", "")),
        **extra,
    }


@router.get("", response_class=HTMLResponse)
def admin_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    if not _signed_in(request, settings, session):
        return _to_login()
    return templates.TemplateResponse(request, "admin.html", _context(request, session, settings))


def _refused_page(
    request: Request, session: Session, settings: Settings, exc: dashboard.ActionRefused
) -> Response:
    session.rollback()
    return templates.TemplateResponse(
        request,
        "admin.html",
        _context(request, session, settings, error=exc.message),
        status_code=exc.status,
    )


def _done(notice: str) -> RedirectResponse:
    return RedirectResponse(f"/admin?notice={notice}", status_code=303)


def _act(
    request: Request,
    session: Session,
    settings: Settings,
    action: Callable[[], object],
    notice: str,
    picker: BatchPicker | None = None,
) -> Response:
    """A form action: signed in, the action, its refusal shown on the page, or the commit
    (and the picker told, when serving changed) and a redirect with the notice."""
    if not _signed_in(request, settings, session):
        return _to_login()
    try:
        action()
    except dashboard.ActionRefused as exc:
        return _refused_page(request, session, settings, exc)
    session.commit()
    if picker is not None:
        picker.invalidate()
    return _done(notice)


@router.post("/actions/cycle", dependencies=SAME_ORIGIN)
def start_cycle(
    request: Request, session: SessionDep, settings: SettingsDep, jobs: JobsDep
) -> Response:
    return _act(
        request, session, settings, lambda: dashboard.start_cycle(session, settings, jobs), "cycle"
    )


@router.post("/actions/pause", dependencies=SAME_ORIGIN)
def pause(
    request: Request, session: SessionDep, settings: SettingsDep, picker: PickerDep
) -> Response:
    return _act(
        request, session, settings, lambda: dashboard.pause(session, settings), "paused", picker
    )


@router.post("/actions/resume", dependencies=SAME_ORIGIN)
def resume(
    request: Request, session: SessionDep, settings: SettingsDep, picker: PickerDep
) -> Response:
    return _act(
        request, session, settings, lambda: dashboard.resume(session, settings), "resumed", picker
    )


@router.post("/versions/{version_id}/promote", dependencies=SAME_ORIGIN)
def promote(
    version_id: IdPath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    picker: PickerDep,
) -> Response:
    return _act(
        request,
        session,
        settings,
        lambda: dashboard.promote(session, settings, version_id),
        "promoted",
        picker,
    )


@router.post("/actions/stop-rollout", dependencies=SAME_ORIGIN)
def stop_rollout(
    request: Request, session: SessionDep, settings: SettingsDep, picker: PickerDep
) -> Response:
    return _act(
        request,
        session,
        settings,
        lambda: dashboard.stop_rollout(session, settings),
        "stopped",
        picker,
    )
