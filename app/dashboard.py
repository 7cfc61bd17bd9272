"""What the admin dashboard shows and does, shared by its HTML pages and its JSON API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session

from app import queries, rollout
from app.errors import PirloopError
from app.jobs import JobDispatcher, UnknownTask
from app.measurement import Measurement
from app.models import (
    GeneratorVersion,
    Rollout,
    RolloutStatus,
    TrainingRun,
    VersionStatus,
    utcnow,
)
from app.schemas import (
    AdminVersionRow,
    ArmShare,
    ComparisonRead,
    CycleState,
    HoldoutGain,
    ImagePir,
    ImageQuality,
    JobStarted,
    LiveTraffic,
    RolloutCheckRead,
    RolloutDetail,
    RolloutRead,
    ServingState,
    VersionBase,
)
from app.sequential import compare_arms
from app.settings import Settings

CYCLE_TASK = "worker.maybe_start_cycle"
# Versions that hold a complete batch and so can be served again.
PROMOTABLE = {VersionStatus.ready, VersionStatus.retired, VersionStatus.paused}


class ActionRefused(PirloopError):
    """An admin action that cannot be done now; the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status_code=status)

    @property
    def status(self) -> int:
        return self.status_code


def _quality(version: GeneratorVersion) -> ImageQuality | None:
    """The worker's image-quality figures for the version (none for versions made before it
    measured them, or by the placeholder generator)."""
    try:
        return ImageQuality.model_validate(version.metrics["image_quality"])
    except (KeyError, TypeError, ValueError):
        return None


def _estimated_delta(version: GeneratorVersion) -> float | None:
    value = version.metrics.get("estimated_delta")
    return float(value) if isinstance(value, int | float) else None


def rollout_comparison(
    session: Session, measure: Measurement, rollout_row: Rollout
) -> ComparisonRead | None:
    """The candidate against its champion over the rollout's decision window (same traffic,
    same time)."""
    return measure.compare_versions(
        session, rollout_row.champion_id, rollout_row.candidate_id, since=rollout_row.ramp_until
    )


def version_rows(
    session: Session,
    settings: Settings,
    *,
    placement: str,
    include_simulated: bool,
) -> list[AdminVersionRow]:
    """Every version, newest first, with traffic, PIR and the change against its champion."""
    measure = Measurement.of(settings, placement=placement, include_simulated=include_simulated)
    traffic = queries.traffic_by_version(
        session, include_simulated=include_simulated, placement=placement
    )
    rollouts = {r.candidate_id: r for r in reversed(rollout.list_rollouts(session, limit=500))}
    rows = []
    for version in reversed(queries.list_versions(session)):
        comparison: ComparisonRead | None = None
        source: Any = None
        if version.id in rollouts:
            comparison = rollout_comparison(session, measure, rollouts[version.id])
            source = "rollout" if comparison else None
        elif version.parent_id is not None:
            comparison = measure.compare_versions(session, version.parent_id, version.id)
            source = "before_after" if comparison else None
        impressions, interactions = traffic.get(version.id, (0, 0))
        rows.append(
            AdminVersionRow(
                **VersionBase.model_validate(version).model_dump(),
                impressions=impressions,
                interactions=interactions,
                pir=measure.summarize_version(session, version.id),
                comparison=comparison,
                comparison_source=source,
                estimated_delta=_estimated_delta(version),
                quality=_quality(version),
            )
        )
    return rows


def image_extremes(
    session: Session,
    settings: Settings,
    version_id: int,
    *,
    placement: str,
    include_simulated: bool,
    per_side: int = 8,
) -> tuple[list[ImagePir], list[ImagePir]]:
    """The version's highest-PIR images and its lowest-PIR ones (unseen images last)."""
    measure = Measurement.of(settings, placement=placement, include_simulated=include_simulated)
    seen = sorted(
        (p for p in measure.images_pir(measure.counts(session, version_id)) if p.pir is not None),
        key=lambda p: (p.pir or 0.0, p.impressions),
    )
    top = list(reversed(seen[-per_side:]))
    bottom = [p for p in seen[:per_side] if p.image_id not in {t.image_id for t in top}]
    return top, bottom


def per_image_pir(
    session: Session,
    settings: Settings,
    version_id: int,
    *,
    placement: str,
    include_simulated: bool,
) -> list[float]:
    measure = Measurement.of(settings, placement=placement, include_simulated=include_simulated)
    return measure.pir_values(measure.counts(session, version_id))


def live_traffic(session: Session, *, window_minutes: int = 30) -> LiveTraffic:
    now = datetime.now(UTC)
    last = int(now.timestamp() // 60)
    first = last - window_minutes + 1
    since = datetime.fromtimestamp(first * 60, UTC)
    series: dict[tuple[str, bool], list[int]] = {
        (table, simulated): [0] * window_minutes
        for table in ("impressions", "interactions")
        for simulated in (False, True)
    }
    for table, minute, simulated, count in queries.traffic_per_minute(session, since=since):
        if first <= minute <= last:
            series[(table, simulated)][minute - first] += count
    return LiveTraffic(
        window_minutes=window_minutes,
        minutes=[since + timedelta(minutes=i) for i in range(window_minutes)],
        impressions_real=series[("impressions", False)],
        impressions_simulated=series[("impressions", True)],
        interactions_real=series[("interactions", False)],
        interactions_simulated=series[("interactions", True)],
    )


def _cycle_state(session: Session) -> CycleState | None:
    runs = queries.active_runs(session, "cycle")
    if not runs:
        return None
    run: TrainingRun = runs[0]
    progress = run.metrics.get("progress") or {}
    return CycleState(
        run_id=run.id,
        status=run.status,
        version_id=run.version_id,
        phase=progress.get("phase"),
        step=progress.get("step"),
        total=progress.get("total"),
        created_at=run.created_at,
        started_at=run.started_at,
    )


def serving_state(session: Session, settings: Settings) -> ServingState:
    serving = queries.serving_version(session)
    paused = queries.paused_version(session)
    running = rollout.running_rollout(session)
    holdout = rollout.holdout_version_id(session, settings)
    roles: dict[int, Literal["champion", "candidate", "holdout"]] = {}
    if running is not None:
        roles[running.candidate_id] = "candidate"
    if holdout is not None:
        roles[holdout] = "holdout"
    if serving is not None:
        roles[serving.id] = "champion"
    hold = rollout.learning_hold(session)
    return ServingState(
        serving_version=serving.id if serving else None,
        paused_version=paused.id if paused else None,
        paused=serving is None and paused is not None,
        candidate_version=running.candidate_id if running else None,
        rollout_id=running.id if running else None,
        holdout_version=holdout,
        arms=[
            ArmShare(version_id=version_id, role=roles[version_id], share=share)
            for version_id, share in rollout.serving_arms(session, settings)
        ],
        learning_held=hold.get("reason") if hold else None,
        cycle=_cycle_state(session),
    )


def cycle_refusal(session: Session, settings: Settings) -> str | None:
    """Why a learning cycle cannot start now, or None when it can."""
    cycle = _cycle_state(session)
    if cycle is not None:
        where = f" ({cycle.phase} {cycle.step}/{cycle.total})" if cycle.phase else ""
        return f"learning cycle run {cycle.run_id} is already {cycle.status}{where}"
    running = rollout.running_rollout(session)
    if running is not None:
        return (
            f"candidate version {running.candidate_id} is under evaluation in rollout "
            f"{running.id}; a cycle waits for its decision (or promote or stop it)"
        )
    champion = queries.serving_version(session) or queries.paused_version(session)
    if champion is None:
        return "no generator version is serving"
    measure = Measurement.learning(settings)
    if not measure.images_seen(measure.counts(session, champion.id)):
        counted = "real and simulated" if measure.include_simulated else "real (not simulated)"
        return (
            f"version {champion.id} has no counted {measure.placement} impressions yet "
            f"({counted} traffic counts; PIRLOOP_USE_SIMULATED_TRAFFIC sets which)"
        )
    return None


def start_cycle(session: Session, settings: Settings, jobs: JobDispatcher) -> JobStarted:
    """Ask for a learning cycle now; refused, with the reason, when it could not act. Ends a
    hold set by a rollback: starting a cycle is the operator saying to learn again."""
    refusal = cycle_refusal(session, settings)
    if refusal is not None:
        raise ActionRefused(409, refusal)
    try:
        job_id = jobs.submit(CYCLE_TASK, force=True)
    except (ImportError, UnknownTask) as exc:
        raise ActionRefused(503, "no worker can run learning cycles here") from exc
    rollout.set_flag(session, rollout.LEARNING_HOLD, None)
    return JobStarted(job_id=job_id, task=CYCLE_TASK, message="a learning cycle was started")


def promote(session: Session, settings: Settings, version_id: int) -> ServingState:
    """Serve version_id as the champion: the rollout's candidate (a manual promotion), or
    another version (a roll back, or a version made during a pause). Ends a pause. Any other
    running rollout is cancelled, recorded as manual; promoting an older version than the
    champion is a rollback and holds automatic learning until an operator starts a cycle."""
    version = queries.get_version(session, version_id)
    if version is None:
        raise ActionRefused(404, f"generator version {version_id} does not exist")
    running = rollout.running_rollout(session, lock=True)
    if running is not None and running.candidate_id == version_id:
        rollout.end_manually(
            session, running, status=RolloutStatus.promoted, reason="promoted by an operator"
        )
        queries.retire_paused(session, keep=None)
        queries.promote_version(session, version_id)
        session.flush()
        return serving_state(session, settings)
    if version.status == VersionStatus.serving:
        return serving_state(session, settings)
    if version.status not in PROMOTABLE:
        raise ActionRefused(409, f"version {version_id} is {version.status}; it cannot be served")
    if not version.batch_size and not queries.batch_image_ids(session, version_id):
        raise ActionRefused(409, f"version {version_id} has no images")
    champion = queries.serving_version(session) or queries.paused_version(session)
    if running is not None:
        rollout.end_manually(
            session,
            running,
            status=RolloutStatus.cancelled,
            reason=f"cancelled: an operator served version {version_id} instead",
        )
    if champion is not None and version_id < champion.id:
        rollout.set_flag(
            session,
            rollout.LEARNING_HOLD,
            {
                "reason": f"rolled back from version {champion.id} to version {version_id} "
                "by an operator; no automatic cycle until one is started by hand",
                "version_id": version_id,
            },
        )
    queries.retire_paused(session, keep=None)
    queries.promote_version(session, version_id)
    # Recorded as manual on the version (a rollout's verdicts are on the rollout).
    version.metrics = {
        **version.metrics,
        "last_promotion": {
            "manual": True,
            "at": utcnow().isoformat(),
            "replaced": champion.id if champion is not None else None,
            "rollback": champion is not None and version_id < champion.id,
        },
    }
    session.flush()
    return serving_state(session, settings)


def stop_rollout(session: Session, settings: Settings) -> ServingState:
    """Reject the running candidate by hand: the champion goes on serving alone."""
    running = rollout.running_rollout(session, lock=True)
    if running is None:
        raise ActionRefused(409, "no rollout is running")
    rollout.end_manually(
        session, running, status=RolloutStatus.rejected, reason="stopped by an operator"
    )
    return serving_state(session, settings)


def pause(session: Session, settings: Settings) -> ServingState:
    """Stop serving every arm; a running rollout waits (its decision sees no new data)."""
    if not queries.pause_serving(session):
        raise ActionRefused(409, "nothing is serving")
    session.flush()
    return serving_state(session, settings)


def resume(session: Session, settings: Settings) -> ServingState:
    """Serve the paused champion again, and a running rollout's candidate beside it."""
    paused = queries.paused_version(session)
    if paused is None:
        raise ActionRefused(409, "serving is not paused")
    queries.promote_version(session, paused.id)
    session.flush()
    return serving_state(session, settings)


# --- Rollouts as the API and the dashboard show them -------------------------------------


def rollout_read(row: Rollout) -> RolloutRead:
    return RolloutRead.model_validate(row)


def _check_read(check: Any) -> RolloutCheckRead:
    primary = check.evidence.get("primary") or {}
    return RolloutCheckRead(
        checked_at=check.checked_at,
        outcome=check.outcome,
        champion_impressions=check.champion_impressions,
        candidate_impressions=check.candidate_impressions,
        delta=primary.get("delta"),
        ci_low=primary.get("ci_low"),
        ci_high=primary.get("ci_high"),
        p_value=primary.get("p_value"),
    )


def rollout_detail(session: Session, row: Rollout) -> RolloutDetail:
    return RolloutDetail(
        **rollout_read(row).model_dump(),
        checks=[_check_read(c) for c in rollout.rollout_checks(session, row.id)],
    )


def holdout_gain(session: Session, settings: Settings) -> HoldoutGain | None:
    """The champion against the holdout since the champion began serving: both arms on the
    same traffic, so the difference is the lineage's gain today (always-valid interval)."""
    holdout = rollout.holdout_version_id(session, settings)
    champion = queries.serving_version(session)
    if holdout is None or champion is None or holdout == champion.id:
        return None
    since = champion.promoted_at or champion.created_at
    measure = Measurement.learning(settings)
    held = measure.live_counts(session, holdout, since=since)
    served = measure.live_counts(session, champion.id, since=since)
    policy = rollout.policy_from(settings)
    held_arm, served_arm = measure.primary_arm(held), measure.primary_arm(served)
    evidence = compare_arms(held_arm, served_arm, tau=policy.tau(held_arm), alpha=policy.alpha)
    finite = evidence.as_dict()
    return HoldoutGain(
        holdout_version=holdout,
        champion_version=champion.id,
        since=since,
        holdout_impressions=held_arm.trials,
        champion_impressions=served_arm.trials,
        delta=finite["delta"],
        # A difference of two rates lies in [-1, 1]; the sequence is cut to what is possible.
        ci_low=None if finite["ci_low"] is None else max(-1.0, finite["ci_low"]),
        ci_high=None if finite["ci_high"] is None else min(1.0, finite["ci_high"]),
    )
