"""One learning cycle: estimator on the logged batches, generator tuned against it, the new
version's batch stored and served. Plus the check that decides when a cycle is due."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app import queries, rollout
from app.database import session_scope
from app.decision import Outcome
from app.measurement import Measurement
from app.models import RunStatus, TrainingRun, VersionStatus, utcnow
from app.settings import Settings
from worker import metrics as worker_metrics
from worker.jobs.batches import draw_batch, image_quality, version_checkpoint
from worker.jobs.context import JobContext, job_context
from worker.jobs.retention import purge_events
from worker.jobs.training_data import logged_batch, training_versions
from worker.ml.checkpoints import checkpoint_to_bytes, gan_checkpoint, load_gan
from worker.ml.device import pick_device
from worker.ml.estimator import EstimatorConfig, estimator_checkpoint
from worker.ml.learning_round import RoundConfig, RoundProgress, run_learning_round
from worker.ml.sampling import png_to_image
from worker.ml.tuning import TuningConfig

log = logging.getLogger(__name__)

CYCLE = "cycle"
MAX_ATTEMPTS = 3
# A running cycle's progress reaches the dashboard through its run row; more often would only
# add writes.
PROGRESS_EVERY_SECONDS = 2.0


def cycle_due(ctx: JobContext, version_id: int, promoted_age: timedelta) -> tuple[bool, str]:
    """Every image of the champion's batch has its target of counted impressions (or the
    time-based fallback has passed with some data)."""
    settings = ctx.settings
    measure = Measurement.learning(settings)
    with session_scope(ctx.sessions) as session:
        counts = measure.counts(session, version_id)
    target = settings.target_impressions_per_image
    if measure.target_reached(counts, target):
        return True, f"every image has {target}+ impressions"
    seen = measure.images_seen(counts)
    if promoted_age.total_seconds() >= settings.cycle_fallback_seconds and seen >= 2:
        return True, f"serving for {promoted_age} (time-based fallback), {seen} images seen"
    counted = "" if measure.include_simulated else " (simulated traffic is not counted)"
    return False, f"{measure.fewest_trials(counts)} of {target} impressions{counted}"


def check_rollout(ctx: JobContext) -> dict[str, Any] | None:
    """Look at the running rollout and act on its decision; None when none is running."""
    with session_scope(ctx.sessions) as session:
        running = rollout.running_rollout(session)
        if running is None:
            return None
        rollout_id, candidate_id = running.id, running.candidate_id
        current = rollout.check_running(session, ctx.settings)
    if current is None:
        return {"rollout_id": rollout_id, "outcome": "continue", "reason": "ramping up"}
    decision = current.decision
    worker_metrics.record_decision(ctx.settings, str(decision.outcome))
    if decision.outcome != Outcome.continue_:
        log.info(
            "rollout %s: %s candidate version %s: %s",
            rollout_id, decision.outcome, candidate_id, decision.reason,
        )  # fmt: skip
    return {"rollout_id": rollout_id, "outcome": str(decision.outcome), "reason": decision.reason}


def abandon_stale_runs(ctx: JobContext) -> int:
    """Fail the active cycles that will never finish: one running (or queued) past the cycle
    timeout (its worker died for good), or one still queued past the queue timeout (its task
    never reached the broker). A late copy of such a task then finds its run failed and does
    nothing, and the next tick starts a new cycle."""
    now = utcnow()
    cutoff = now - timedelta(seconds=ctx.settings.cycle_timeout_seconds)
    queue_cutoff = now - timedelta(seconds=ctx.settings.cycle_queue_timeout_seconds)
    with session_scope(ctx.sessions) as session:
        runs = queries.active_runs(session, CYCLE)
        stale = [run.id for run in runs if _aware(run.started_at or run.created_at) < cutoff]
        lost = [
            run.id
            for run in runs
            if run.status == RunStatus.queued and _aware(run.created_at) < queue_cutoff
            and run.id not in stale
        ]  # fmt: skip
        abandoned = queries.fail_runs_still(
            session, stale, statuses=(RunStatus.queued, RunStatus.running),
            error="abandoned: timed out",
        ) + queries.fail_runs_still(
            session, lost, statuses=(RunStatus.queued,),
            error=f"abandoned: no worker started it within "
            f"{ctx.settings.cycle_queue_timeout_seconds} s (its task never reached the broker?)",
        )  # fmt: skip
    return abandoned


def maybe_start_cycle(force: bool = False) -> dict[str, Any]:
    """The scheduler's tick: decide a running rollout, then start a cycle if one is due and
    none is active. A cycle waits for a running rollout's decision (one candidate at a time,
    and the next cycle learns from both arms' data) and, unless forced by an operator, for a
    rollback's hold to be lifted. Safe to call from any number of beats or workers at once:
    the database admits one active cycle and one running rollout, and a decision is taken
    under a row lock."""
    ctx = job_context()
    with session_scope(ctx.sessions) as session:
        rollout.record_scheduler_tick(session)
    abandon_stale_runs(ctx)
    # Bots are flagged by their own periodic task (worker.flag_visitors), which the embedded
    # scheduler runs just before this check and beat beside it, with or without the ML stack.
    purge_events()
    checked = check_rollout(ctx)
    if checked is not None and checked["outcome"] == "continue":
        return {"started": False, "reason": f"rollout {checked['rollout_id']}: {checked['reason']}"}
    with session_scope(ctx.sessions) as session:
        serving = queries.serving_version(session)
        if serving is None:
            return {"started": False, "reason": "nothing is serving"}
        version_id = serving.id
        age = utcnow() - _aware(serving.promoted_at or serving.created_at)
        hold = rollout.learning_hold(session)
    if hold is not None and not force:
        return {"started": False, "reason": f"learning is held: {hold.get('reason')}"}
    due, reason = cycle_due(ctx, version_id, age)
    if not (due or force):
        return {"started": False, "reason": reason}
    try:
        with session_scope(ctx.sessions) as session:
            run = queries.create_run(
                session, kind=CYCLE, version_id=version_id, params={"reason": reason}
            )
            run_id = run.id
    except IntegrityError:
        return {"started": False, "reason": "a cycle is already active"}
    log.info("starting cycle run %s on version %s: %s", run_id, version_id, reason)
    try:
        submit_cycle(ctx.settings, run_id)
    except Exception as exc:  # the broker is down: no task, so the run must not stay active
        if ctx.settings.redis_url:
            with session_scope(ctx.sessions) as session:
                queries.fail_runs_still(
                    session, [run_id], statuses=(RunStatus.queued,),
                    error=f"could not be queued: {exc}",
                )  # fmt: skip
        raise
    return {"started": True, "run_id": run_id, "reason": reason}


def submit_cycle(settings: Settings, run_id: int) -> None:
    if settings.redis_url:
        from app.jobs import CeleryDispatcher

        CeleryDispatcher(settings.redis_url).submit("worker.run_cycle", run_id=run_id)
    else:
        run_cycle(run_id)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_cycle(run_id: int) -> dict[str, Any]:
    """Run cycle run_id. Idempotent: a finished run returns at once, and the new version is
    written in the same transaction that marks the run succeeded, so a redelivered or retried
    task never makes a second version, and a killed one leaves nothing half-served."""
    ctx = job_context()
    with session_scope(ctx.sessions) as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise LookupError(f"training run {run_id} does not exist")
        if run.status in (RunStatus.succeeded, RunStatus.failed):
            return {"run_id": run_id, "status": run.status, "repeat": True}
        if run.attempts >= MAX_ATTEMPTS:
            queries.mark_run(session, run, status=RunStatus.failed, error="too many attempts")
            worker_metrics.cycle_ended(ctx.settings, "failed")  # its attempts were killed
            return {"run_id": run_id, "status": RunStatus.failed}
        # The wait in the queue: from the run's creation to its first attempt.
        requested_at = _aware(run.created_at) if run.attempts == 0 else None
        queries.mark_run(session, run, status=RunStatus.running)
        parent_id = run.version_id
        assert parent_id is not None
    try:
        with worker_metrics.cycle_running(ctx.settings, requested_at) as outcome:
            result = _run_cycle(ctx, run_id, parent_id)
            if result.get("repeat"):
                outcome["outcome"] = "repeat"
        return result
    except Exception as exc:
        with session_scope(ctx.sessions) as session:
            run = session.get(TrainingRun, run_id)
            if run is not None and run.status == RunStatus.running:
                queries.mark_run(
                    session,
                    run,
                    status=RunStatus.failed,
                    error=f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()[-4000:]}",
                )
        raise


def _configs(settings: Settings, run_id: int) -> RoundConfig:
    estimator = EstimatorConfig(seed=run_id)
    if settings.estimator_epochs is not None:
        estimator = replace(estimator, epochs=settings.estimator_epochs)
    tuning = TuningConfig(seed=run_id)
    if settings.tuning_steps is not None:
        tuning = replace(tuning, steps=settings.tuning_steps)
    # The predicted change compares the parent's batch with a sample as large as the new one.
    return RoundConfig(estimator=estimator, tuning=tuning, estimate_images=settings.batch_size)


def _run_cycle(ctx: JobContext, run_id: int, parent_id: int) -> dict[str, Any]:
    settings = ctx.settings
    device = pick_device()
    with session_scope(ctx.sessions) as session:
        versions = training_versions(session, settings, parent_id)
        data = logged_batch(session, settings, versions)
        parent_batch = queries.batch_pngs(session, parent_id)
    log.info("run %s: estimator on %d logged images of versions %s", run_id, len(data), versions)
    gan_cfg, generator, discriminator = load_gan(version_checkpoint(ctx, parent_id), device=device)
    round_cfg = _configs(settings, run_id)
    # The run id seeds the round, so a redelivered cycle repeats the same round.
    result = run_learning_round(
        generator,
        discriminator,
        round_cfg,
        images=data.images,
        impressions=data.impressions,
        positives=data.positives,
        reference_images=torch.stack([png_to_image(png) for png in parent_batch]),
        seed=run_id,
        device=device,
        on_progress=_progress_writer(ctx, run_id),
    )
    ctx.artifacts.put(
        f"runs/{run_id}/estimator.pt",
        checkpoint_to_bytes(
            estimator_checkpoint(result.estimator, metrics=result.estimator_metrics)
        ),
    )
    tuned_key = f"runs/{run_id}/gan.pt"
    tuning_steps = round_cfg.tuning.steps
    ctx.artifacts.put(
        tuned_key,
        checkpoint_to_bytes(
            gan_checkpoint(gan_cfg, generator, discriminator, None, None, tuning_steps, "")
        ),
    )
    metrics = {
        "run_id": run_id,
        "training_images": len(data),
        "training_impressions": float(data.impressions.sum()),
        "training_versions": data.version_ids,
        "estimator": _jsonable(result.estimator_metrics),
        "tuning": _jsonable(result.tuning_metrics),
        **result.estimated_change(),
    }
    published = _publish(ctx, run_id, parent_id, tuned_key, generator, metrics)
    if not published.get("repeat"):
        worker_metrics.record_cycle(settings, metrics, published["version_id"])
    return published


def _progress_writer(
    ctx: JobContext, run_id: int, *, clock: Callable[[], float] = time.monotonic
) -> RoundProgress:
    """A callback that keeps the running cycle's progress in its run's metrics["progress"] for
    the dashboard, writing at most every PROGRESS_EVERY_SECONDS. _publish replaces the metrics
    when the run succeeds."""
    last_write: float | None = None

    def write(phase: str, step: int, total: int) -> None:
        nonlocal last_write
        now = clock()
        if last_write is not None and now - last_write < PROGRESS_EVERY_SECONDS:
            return
        last_write = now
        progress = {
            "phase": phase,
            "step": step,
            "total": total,
            "updated_at": utcnow().isoformat(),
        }
        try:
            with session_scope(ctx.sessions) as session:
                run = session.get(TrainingRun, run_id)
                if run is not None and run.status == RunStatus.running:
                    run.metrics = {**run.metrics, "progress": progress}
        except SQLAlchemyError:
            # Progress is for display only: a busy database must not fail an hour of training.
            log.warning("run %s: progress %s not recorded", run_id, progress, exc_info=True)

    return write


def _publish(
    ctx: JobContext,
    run_id: int,
    parent_id: int,
    checkpoint_key: str,
    generator: Any,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Create and fill the new version and start its rollout beside the champion, in one
    transaction with the run's success: a killed worker leaves no half-made candidate, and a
    redelivered task finds the run succeeded and makes no second one."""
    quality = image_quality(generator)  # before the transaction: it takes seconds
    with session_scope(ctx.sessions) as session:
        run = session.scalars(
            select(TrainingRun).where(TrainingRun.id == run_id).with_for_update()
        ).one()
        if run.status != RunStatus.running:
            return {"run_id": run_id, "status": run.status, "repeat": True}
        parent = queries.get_version(session, parent_id)
        assert parent is not None
        version = queries.create_version(
            session,
            source=parent.source,
            parent_id=parent_id,
            config={**parent.config, "run_id": run_id},
            status=VersionStatus.ready,
        )
        version.checkpoint_key = checkpoint_key
        rows = draw_batch(generator, version.id, ctx.settings.batch_size)
        queries.add_images(session, version.id, rows)
        version.batch_size = len(rows)
        version.metrics = {**metrics, "image_quality": quality}
        # The candidate is served beside the champion until the rollout's decision; during
        # an operator's pause nothing is served, and the rollout waits with it.
        started = rollout.start_rollout(session, ctx.settings, version)
        queries.mark_run(
            session,
            run,
            status=RunStatus.succeeded,
            metrics={
                **metrics,
                "version_id": version.id,
                "rollout_id": started.id if started else None,
            },
        )
        new_id = version.id
    state = f"a candidate in rollout {started.id}" if started else "ready (no rollout started)"
    log.info("run %s: version %s (parent %s) is %s", run_id, new_id, parent_id, state)
    return {"run_id": run_id, "status": RunStatus.succeeded, "version_id": new_id}


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as plain JSON for the database (tensors and numpy scalars become floats). NaN
    and infinities become null: they are not JSON, and PostgreSQL refuses them (a held-out
    correlation of a constant prediction is NaN, and failed the whole cycle)."""
    as_text = json.dumps(metrics, default=lambda v: float(v) if hasattr(v, "__float__") else str(v))
    loaded: dict[str, Any] = json.loads(as_text, parse_constant=lambda _: None)
    return loaded
