"""One learning cycle: estimator on the logged batches, generator tuned against it, the new
version's batch stored and served. Plus the check that decides when a cycle is due."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import queries
from app.database import session_scope
from app.models import RunStatus, TrainingRun, VersionStatus, utcnow
from app.settings import Settings
from worker.jobs.abuse import flag_visitors
from worker.jobs.batches import draw_batch, version_checkpoint
from worker.jobs.context import JobContext, job_context
from worker.jobs.evaluation import evaluate_version, evaluation_due
from worker.jobs.retention import purge_events
from worker.jobs.training_data import lineage, logged_batch
from worker.ml.checkpoints import checkpoint_to_bytes, gan_checkpoint, load_gan
from worker.ml.device import pick_device
from worker.ml.estimator import (
    EstimatorConfig,
    PirEstimator,
    estimator_checkpoint,
    train_estimator,
)
from worker.ml.gan import Generator
from worker.ml.landscapes import render_landscapes
from worker.ml.sampling import generate_images, png_to_image
from worker.ml.tuning import TuningConfig, tune_generator

log = logging.getLogger(__name__)

CYCLE = "cycle"
MAX_ATTEMPTS = 3
REAL_IMAGES = 2000
# Latent seeds for the estimator's look at a tuned generator, apart from every served batch.
ESTIMATE_SEEDS = 10**12


def cycle_due(ctx: JobContext, version_id: int, promoted_age: timedelta) -> tuple[bool, str]:
    settings = ctx.settings
    with session_scope(ctx.sessions) as session:
        counts = queries.image_counts(
            session,
            version_id,
            placement=settings.learning_placement,
            positive_kinds=settings.positive_kinds,
            rating_weights=settings.rating_weights,
            include_simulated=settings.use_simulated_traffic,
        )
    trials = [c.rated if settings.learning_placement == "rating" else c.impressions for c in counts]
    if trials and min(trials) >= settings.target_impressions_per_image:
        return True, f"every image has {settings.target_impressions_per_image}+ impressions"
    seen = sum(1 for t in trials if t > 0)
    if promoted_age.total_seconds() >= settings.cycle_fallback_seconds and seen >= 2:
        return True, f"serving for {promoted_age} (time-based fallback), {seen} images seen"
    return False, f"{min(trials, default=0)} of {settings.target_impressions_per_image} impressions"


def abandon_stale_runs(ctx: JobContext) -> int:
    cutoff = utcnow() - timedelta(seconds=ctx.settings.cycle_timeout_seconds)
    with session_scope(ctx.sessions) as session:
        stale = [
            run
            for run in queries.active_runs(session, CYCLE)
            if (run.started_at or run.created_at) < cutoff
        ]
        for run in stale:
            queries.mark_run(session, run, status=RunStatus.failed, error="abandoned: timed out")
    return len(stale)


def maybe_start_cycle(force: bool = False) -> dict[str, Any]:
    """Start a cycle if one is due and none is active. Safe to call from any number of beats
    or workers at once: the database admits one active cycle only."""
    ctx = job_context()
    abandon_stale_runs(ctx)
    flag_visitors()  # bots are left out before anything counts impressions
    purge_events()
    with session_scope(ctx.sessions) as session:
        serving = queries.serving_version(session)
        if serving is None:
            return {"started": False, "reason": "nothing is serving"}
        version_id = serving.id
        age = utcnow() - _aware(serving.promoted_at or serving.created_at)
    if evaluation_due(ctx, version_id):
        evaluate_version(version_id)
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
    submit_cycle(ctx.settings, run_id)
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
            return {"run_id": run_id, "status": RunStatus.failed}
        queries.mark_run(session, run, status=RunStatus.running)
        parent_id = run.version_id
        assert parent_id is not None
    try:
        return _run_cycle(ctx, run_id, parent_id)
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


def _configs(settings: Settings, run_id: int) -> tuple[EstimatorConfig, TuningConfig]:
    estimator = EstimatorConfig(seed=run_id)
    if settings.estimator_epochs is not None:
        estimator = replace(estimator, epochs=settings.estimator_epochs)
    tuning = TuningConfig(seed=run_id)
    if settings.tuning_steps is not None:
        tuning = replace(tuning, steps=settings.tuning_steps)
    return estimator, tuning


def _run_cycle(ctx: JobContext, run_id: int, parent_id: int) -> dict[str, Any]:
    settings = ctx.settings
    device = pick_device()
    with session_scope(ctx.sessions) as session:
        versions = lineage(session, parent_id, settings.history_versions)
        data = logged_batch(session, settings, versions)
    log.info("run %s: estimator on %d logged images of versions %s", run_id, len(data), versions)
    gan_cfg, generator, discriminator = load_gan(version_checkpoint(ctx, parent_id), device=device)
    estimator_cfg, tuning_cfg = _configs(settings, run_id)
    estimator, estimator_metrics = train_estimator(
        data.images,
        data.impressions,
        data.positives,
        estimator_cfg,
        device=device,
        progress=False,
        discriminator=discriminator,
    )
    ctx.artifacts.put(
        f"runs/{run_id}/estimator.pt",
        checkpoint_to_bytes(estimator_checkpoint(estimator, metrics=estimator_metrics)),
    )
    with session_scope(ctx.sessions) as session:
        parent_batch = queries.batch_pngs(session, parent_id)
    real = render_landscapes(REAL_IMAGES, size=gan_cfg.image_size, seed=gan_cfg.dataset_seed)
    tuning_metrics = tune_generator(
        generator, discriminator, estimator, real, tuning_cfg, device=device, progress=False
    )
    tuned_key = f"runs/{run_id}/gan.pt"
    ctx.artifacts.put(
        tuned_key,
        checkpoint_to_bytes(
            gan_checkpoint(gan_cfg, generator, discriminator, None, None, tuning_cfg.steps, "")
        ),
    )
    estimated = _estimated_change(estimator, parent_batch, generator, settings.batch_size, run_id)
    metrics = {
        "run_id": run_id,
        "training_images": len(data),
        "training_impressions": float(data.impressions.sum()),
        "training_versions": data.version_ids,
        "estimator": _jsonable(estimator_metrics),
        "tuning": _jsonable(tuning_metrics),
        **estimated,
    }
    return _publish(ctx, run_id, parent_id, tuned_key, generator, metrics)


def _estimated_change(
    estimator: PirEstimator, parent_pngs: list[bytes], generator: Generator, count: int, run_id: int
) -> dict[str, float]:
    """The estimator's predicted change: its mean on the parent's served batch against its
    mean on a fresh sample of the tuned generator (the dashboard shows it beside the measured
    change)."""
    device = next(generator.parameters()).device
    before = torch.stack([png_to_image(p) for p in parent_pngs])
    first = ESTIMATE_SEEDS + run_id * count
    after = generate_images(generator, range(first, first + count), device=device)
    with torch.no_grad():
        pre = float(estimator.predict(before.to(device)).mean())
        post = float(estimator.predict(after.to(device)).mean())
    return {"estimated_pre_mean": pre, "estimated_post_mean": post, "estimated_delta": post - pre}


def _publish(
    ctx: JobContext,
    run_id: int,
    parent_id: int,
    checkpoint_key: str,
    generator: Any,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Create, fill and serve the new version in one transaction with the run's success."""
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
        version.metrics = metrics
        # An operator's pause outlasts the cycle: the new version waits, ready, for a resume
        # or a promotion instead of ending the pause by itself.
        if queries.paused_version(session) is None:
            queries.promote_version(session, version.id)
        queries.mark_run(
            session, run, status=RunStatus.succeeded, metrics={**metrics, "version_id": version.id}
        )
        new_id = version.id
    log.info("run %s: version %s (parent %s) is serving", run_id, new_id, parent_id)
    return {"run_id": run_id, "status": RunStatus.succeeded, "version_id": new_id}


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as plain JSON for the database (tensors and numpy scalars become floats)."""
    as_text = json.dumps(metrics, default=lambda v: float(v) if hasattr(v, "__float__") else str(v))
    loaded: dict[str, Any] = json.loads(as_text)
    return loaded
