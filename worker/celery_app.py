"""The Celery application: Redis broker, late acks, model work on its own queue."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from app.bootstrap import ml_available
from app.settings import get_settings
from worker import metrics as worker_metrics
from worker.beat import beat_schedule


def redelivery_options(visibility_timeout: int) -> dict[str, Any]:
    """Redis transport options under which a task whose worker died (SIGKILL, lost machine)
    is handed to another worker about visibility_timeout seconds after it was delivered.

    kombu keeps each delivered, unacknowledged task in the `unacked` hash, scored by its
    delivery time. A worker puts back those older than visibility_timeout when its consumer
    starts and then on a periodic sweep, which by default runs on every 10th 10 s timer tick:
    100 s. The sweep holds the `unacked_mutex` lock, which outlives a worker killed while
    holding it by unacked_mutex_expire (default 300 s). Both are sized here from the timeout,
    so a short timeout (as in the tests) means a prompt redelivery. Cycles are idempotent, so
    a redelivery while one still runs costs time, never a second version."""
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1, min(10, visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(1, min(300, visibility_timeout)),
    }


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
    broker_transport_options=redelivery_options(
        int(os.environ.get("PIRLOOP_VISIBILITY_TIMEOUT", "3600"))
    ),
    beat_schedule=beat_schedule(settings, learning=ml_available()),
    timezone="UTC",
)
# Tasks timed and counted, their queue wait stamped; the exporter on PIRLOOP_WORKER_METRICS_PORT.
worker_metrics.connect_celery(settings)


@worker_process_init.connect
def _leave_sigterm_to_the_main_process(**_: Any) -> None:
    """A pool child ignores SIGTERM unless its own pool sends it.

    A SIGTERM to the whole process group or cgroup (`kill -TERM -PGID`, systemd's default
    KillMode) reaches the main process, which starts a warm shutdown, and every pool child,
    whose default handler would end it in the middle of its task (WorkerLostError, an
    interrupted query). Ignored here, the child finishes its task and the warm shutdown ends
    it. SIGTERM from the pool itself (cold shutdown, revoke with terminate) still ends the
    child at once. Needs sigwaitinfo (Linux), which tells who sent the signal."""
    if not hasattr(signal, "sigwaitinfo"):
        return
    # Blocked in this thread before any other starts, so every thread of the child inherits
    # the mask and only the waiting thread below ever takes a SIGTERM. (A process that a task
    # started would inherit it too; no task starts one.)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pool = os.getppid()
    threading.Thread(target=_wait_for_sigterm, args=(pool,), name="sigterm", daemon=True).start()


def _wait_for_sigterm(pool: int) -> None:
    while True:
        sender = signal.sigwaitinfo({signal.SIGTERM}).si_pid
        if sender == pool:
            # What billiard's own handler exits with; no Python code can run in the main
            # thread while it waits on the pool's pipe, so exit from here.
            os._exit(-(256 - signal.SIGTERM))
