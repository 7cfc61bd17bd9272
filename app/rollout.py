"""Rollouts: a tuned generator (the candidate) is served beside the champion on the same
traffic at the same time, and the decision rule (app/decision.py) promotes or rejects it.

Arms. Every impression picks an arm at random with the configured shares (app/serving.py), in
every API process alike, so several processes together keep the split; within an arm the
least-served image is shown, so each arm's batch stays evenly served. An optional holdout arm
keeps serving one old version (the first, by default) for the lineage's cumulative gain.

What a decision is about: the generators, with each arm's served images as clusters (per-image
PIR; between- and within-image variance both count). Evidence is therefore capped by the
number of images per arm; the futility budget ends a rollout that cannot reach a verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import queries
from app.decision import Decision, DecisionPolicy, MetricArms, Outcome, decide
from app.measurement import Measurement
from app.models import (
    GeneratorVersion,
    Rollout,
    RolloutCheck,
    RolloutStatus,
    ServiceFlag,
    VersionStatus,
    utcnow,
)
from app.sequential import ArmSummary
from app.settings import Settings

LEARNING_HOLD = "learning_hold"
SCHEDULER_TICK = "scheduler_tick"


def policy_from(settings: Settings) -> DecisionPolicy:
    return DecisionPolicy(
        alpha=settings.rollout_alpha,
        harm_alpha=settings.rollout_harm_alpha,
        mixing_lift=settings.rollout_mixing_lift,
        min_images_per_arm=min(settings.rollout_min_images_per_arm, settings.batch_size),
        min_trials_per_arm=settings.rollout_min_impressions_per_arm,
        max_trials_per_arm=settings.batch_size * settings.rollout_max_impressions_per_image,
    )


# --- Reading state ----------------------------------------------------------------------


def running_rollout(session: Session, *, lock: bool = False) -> Rollout | None:
    statement = select(Rollout).where(Rollout.status == RolloutStatus.running)
    if lock:
        statement = statement.with_for_update()
    return session.scalar(statement.limit(1))


def list_rollouts(session: Session, *, limit: int = 50) -> list[Rollout]:
    return list(session.scalars(select(Rollout).order_by(Rollout.id.desc()).limit(limit)))


def get_rollout(session: Session, rollout_id: int) -> Rollout | None:
    return session.get(Rollout, rollout_id)


def rollout_checks(session: Session, rollout_id: int) -> list[RolloutCheck]:
    return list(
        session.scalars(
            select(RolloutCheck)
            .where(RolloutCheck.rollout_id == rollout_id)
            .order_by(RolloutCheck.id)
        )
    )


def holdout_version_id(session: Session, settings: Settings) -> int | None:
    """The version the holdout arm serves: the configured one, else the first version."""
    if settings.holdout_share <= 0:
        return None
    if settings.holdout_version is not None:
        version = queries.get_version(session, settings.holdout_version)
    else:
        version = session.scalar(select(GeneratorVersion).order_by(GeneratorVersion.id).limit(1))
    if version is None or not version.batch_size:
        return None
    return version.id


@dataclass(frozen=True)
class ServingPlan:
    """Who is served, with which share, as a function of time: the candidate's share steps
    from the ramp's to the rollout's at ramp_until. Impression pickers cache the plan and
    evaluate it at each pick, so the switch happens at ramp_until exactly, not up to a cache
    period later: impressions picked with the ramp's shares but logged after ramp_until would
    unbalance the decision window and trip the sample-ratio check."""

    champion_id: int | None = None
    rest: float = 1.0
    """The share left after the holdout."""
    candidate_id: int | None = None
    ramp_share: float = 0.0
    candidate_share: float = 0.0
    ramp_until: datetime | None = None
    holdout: tuple[int, float] | None = None

    def arms_at(self, now: datetime) -> list[tuple[int, float]]:
        """[(version id, share of impressions)] at time now; empty when nothing is served."""
        if self.champion_id is None:
            return []
        arms = [(self.champion_id, self.rest)]
        if self.candidate_id is not None and self.ramp_until is not None:
            share = self.ramp_share if now < self.ramp_until else self.candidate_share
            arms = [
                (self.champion_id, self.rest * (1 - share)),
                (self.candidate_id, self.rest * share),
            ]
        if self.holdout is not None:
            arms.append(self.holdout)
        return arms


def serving_plan(session: Session, settings: Settings) -> ServingPlan:
    """The champion, a running candidate and the holdout, with their shares over time."""
    champion = queries.serving_version(session)
    if champion is None:
        return ServingPlan()
    holdout = holdout_version_id(session, settings)
    holdout_share = settings.holdout_share if holdout not in (None, champion.id) else 0.0
    plan = ServingPlan(
        champion_id=champion.id,
        rest=1.0 - holdout_share,
        holdout=(holdout, holdout_share) if holdout_share and holdout is not None else None,
    )
    rollout = running_rollout(session)
    if rollout is not None and rollout.champion_id == champion.id:
        plan = replace(
            plan,
            candidate_id=rollout.candidate_id,
            ramp_share=rollout.ramp_share,
            candidate_share=rollout.candidate_share,
            ramp_until=rollout.ramp_until,
        )
    return plan


def serving_arms(session: Session, settings: Settings) -> list[tuple[int, float]]:
    """[(version id, share of impressions)] now: the champion, a running candidate, the
    holdout. Empty when nothing is serving (paused, or no version yet)."""
    return serving_plan(session, settings).arms_at(utcnow())


# --- Flags --------------------------------------------------------------------------------


def get_flag(session: Session, name: str) -> dict[str, Any] | None:
    flag = session.get(ServiceFlag, name)
    return dict(flag.value) if flag is not None else None


def set_flag(session: Session, name: str, value: dict[str, Any] | None) -> None:
    flag = session.get(ServiceFlag, name)
    if value is None:
        if flag is not None:
            session.delete(flag)
            session.flush()
        return
    if flag is None:
        session.add(ServiceFlag(name=name, value=value, updated_at=utcnow()))
    else:
        flag.value = value
        flag.updated_at = utcnow()
    session.flush()


def learning_hold(session: Session) -> dict[str, Any] | None:
    """Set by a manual rollback: no automatic cycle until an operator starts one."""
    return get_flag(session, LEARNING_HOLD)


def record_scheduler_tick(session: Session) -> None:
    set_flag(session, SCHEDULER_TICK, {"at": utcnow().isoformat()})


def last_scheduler_tick(session: Session) -> datetime | None:
    flag = session.get(ServiceFlag, SCHEDULER_TICK)
    return flag.updated_at if flag is not None else None


# --- Starting and deciding ---------------------------------------------------------------


def start_rollout(
    session: Session, settings: Settings, candidate: GeneratorVersion
) -> Rollout | None:
    """Serve candidate beside the current champion (inside the caller's transaction).
    None when there is no champion or a rollout is already running: the candidate then waits,
    ready, for an operator."""
    champion = queries.serving_version(session) or queries.paused_version(session)
    if champion is None or running_rollout(session) is not None:
        return None
    now = utcnow()
    candidate.status = VersionStatus.candidate
    rollout = Rollout(
        champion_id=champion.id,
        candidate_id=candidate.id,
        status=RolloutStatus.running,
        candidate_share=settings.rollout_candidate_share,
        ramp_share=min(settings.rollout_ramp_share, settings.rollout_candidate_share),
        ramp_until=now + timedelta(seconds=settings.rollout_ramp_seconds),
        policy=asdict(policy_from(settings)),
        latest={},
        manual=False,
        started_at=now,
    )
    session.add(rollout)
    session.flush()
    return rollout


@dataclass(frozen=True)
class Look:
    """One look at a rollout: the decision and the impressions each arm had."""

    decision: Decision
    primary: MetricArms
    champion_impressions: int
    candidate_impressions: int

    def evidence(self) -> dict[str, Any]:
        return {
            **self.decision.evidence(),
            "champion": _arm_dict(self.primary.champion),
            "candidate": _arm_dict(self.primary.candidate),
            "impressions": [self.champion_impressions, self.candidate_impressions],
        }


def _arm_dict(arm: ArmSummary) -> dict[str, Any]:
    return {
        "images": arm.images,
        "impressions": arm.trials,
        "mean": arm.mean if math.isfinite(arm.mean) else None,
    }


def look(session: Session, settings: Settings, rollout: Rollout) -> Look:
    """The decision rule applied to the rollout's data now (nothing written)."""
    measure = Measurement.learning(settings)
    champion = measure.live_counts(session, rollout.champion_id, since=rollout.ramp_until)
    candidate = measure.live_counts(session, rollout.candidate_id, since=rollout.ramp_until)
    primary, guardrails = measure.metric_arms(champion, candidate)
    champion_n = sum(c.impressions for c in champion)
    candidate_n = sum(c.impressions for c in candidate)
    share = rollout.candidate_share
    decision = decide(
        primary,
        guardrails,
        arm_impressions=[champion_n, candidate_n],
        expected_shares=[1 - share, share],
        policy=DecisionPolicy(**rollout.policy),
    )
    return Look(decision, primary, champion_n, candidate_n)


def check_running(session: Session, settings: Settings) -> Look | None:
    """Look at the running rollout and act on the decision, in the caller's transaction under
    a row lock: two schedulers (or a redelivered task) never both act, and a promotion retires
    the old champion in the same commit, so there is never a second champion."""
    rollout = running_rollout(session, lock=True)
    if rollout is None:
        return None
    if utcnow() < rollout.ramp_until:
        return None
    current = look(session, settings, rollout)
    evidence = current.evidence()
    previous = rollout.latest.get("impressions") if rollout.latest else None
    if previous != evidence["impressions"] or current.decision.outcome != Outcome.continue_:
        session.add(
            RolloutCheck(
                rollout_id=rollout.id,
                outcome=str(current.decision.outcome),
                champion_impressions=current.champion_impressions,
                candidate_impressions=current.candidate_impressions,
                evidence=evidence,
                checked_at=utcnow(),
            )
        )
    rollout.latest = {**evidence, "checked_at": utcnow().isoformat()}
    if current.decision.outcome == Outcome.promote:
        _end(session, rollout, RolloutStatus.promoted, current.decision.reason, manual=False)
    elif current.decision.outcome == Outcome.reject:
        _end(session, rollout, RolloutStatus.rejected, current.decision.reason, manual=False)
    session.flush()
    return current


def _end(
    session: Session, rollout: Rollout, status: RolloutStatus, reason: str, *, manual: bool
) -> None:
    """Close the rollout; a promotion makes the candidate the only champion, anything else
    retires the candidate and leaves the champion serving."""
    rollout.status = status
    rollout.reason = reason
    rollout.manual = manual
    rollout.decided_at = utcnow()
    candidate = queries.get_version(session, rollout.candidate_id)
    assert candidate is not None
    candidate.metrics = {
        **candidate.metrics,
        "rollout": {
            "rollout_id": rollout.id,
            "status": str(status),
            "reason": reason,
            "manual": manual,
            "evidence": rollout.latest,
            "decided_at": rollout.decided_at.isoformat(),
        },
    }
    if status == RolloutStatus.promoted:
        paused = queries.paused_version(session)
        if paused is not None and paused.id == rollout.champion_id:
            # Promoted during a pause: the candidate is the one to resume, nothing serves yet.
            paused.status = VersionStatus.retired
            paused.retired_at = utcnow()
            candidate.status = VersionStatus.paused
            candidate.promoted_at = utcnow()
        else:
            queries.promote_version(session, candidate.id)
    else:
        candidate.status = VersionStatus.retired
        candidate.retired_at = utcnow()


def end_manually(session: Session, rollout: Rollout, *, status: RolloutStatus, reason: str) -> None:
    """An operator's verdict on the running rollout, recorded as manual: promoted, rejected
    (stopped), or cancelled (another version served instead)."""
    _end(session, rollout, status, reason, manual=True)
    session.flush()
