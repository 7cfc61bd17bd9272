"""Celery tasks: thin wrappers that pass ids to the job functions. Only transient database
and broker errors are retried.

The ML jobs are imported inside their tasks, so that a worker without the ML stack (torch)
still starts and runs the jobs that need none (flagging bots)."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from app.bootstrap import ml_available
from worker.celery_app import celery_app
from worker.jobs import abuse

if ml_available():
    # Loaded once by the main process, before the pool forks, so tasks start warm.
    from worker.jobs import batches, cycle  # noqa: F401

TRANSIENT = (OperationalError, RedisConnectionError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_kwargs": {"max_retries": 5}}


@celery_app.task(name="worker.generate_batch", acks_late=True, **RETRY)
def generate_batch(version_id: int, promote: bool = False) -> dict[str, Any]:
    from worker.jobs import batches

    return batches.generate_batch(version_id, promote=promote)


@celery_app.task(name="worker.run_cycle", acks_late=True, **RETRY)
def run_cycle(run_id: int) -> dict[str, Any]:
    from worker.jobs import cycle

    return cycle.run_cycle(run_id)


@celery_app.task(name="worker.maybe_start_cycle", acks_late=True, **RETRY)
def maybe_start_cycle(force: bool = False) -> dict[str, Any]:
    from worker.jobs import cycle

    return cycle.maybe_start_cycle(force=force)


@celery_app.task(name="worker.flag_visitors", acks_late=True, **RETRY)
def flag_visitors() -> dict[str, Any]:
    return abuse.flag_visitors()
