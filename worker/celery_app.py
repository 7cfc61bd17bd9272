"""The Celery application: Redis broker, late acks, model work on its own queue."""

from __future__ import annotations

import os

from celery import Celery

from app.settings import get_settings
from worker.beat import beat_schedule

settings = get_settings()
broker = settings.redis_url or "redis://127.0.0.1:6379/0"

celery_app = Celery("pirloop", broker=broker, backend=broker, include=["worker.tasks"])
celery_app.conf.update(
    task_acks_late=True,
    # A task whose worker dies is redelivered, not dropped.
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    task_track_started=True,
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    # How long an unacknowledged task waits before Redis hands it to another worker. Cycles
    # are idempotent, so a redelivery while one still runs costs time, never a second version.
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("PIRLOOP_VISIBILITY_TIMEOUT", "3600"))
    },
    beat_schedule=beat_schedule(settings),
    timezone="UTC",
)
