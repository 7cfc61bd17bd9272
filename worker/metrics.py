"""Prometheus metrics of the learning side: learning cycles (duration, outcome, queue wait),
the last successful cycle's estimator and tuning figures, automatic rollout decisions, and
Celery tasks (queue wait, duration, state).

Where they show: in the embedded default the jobs run in the API process, so these appear on
its /metrics. A Celery worker serves them over HTTP on PIRLOOP_WORKER_METRICS_PORT (off by
default) from its main process, summing its pool's processes through PROMETHEUS_MULTIPROC_DIR,
which `pirloop worker` sets up (app/metrics.py says why it must be set before this module is
imported). PIRLOOP_METRICS_ENABLED=false records nothing.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from app.metrics import SENT_AT_HEADER, multiprocess_dir, process_collector, stamp_sent_at
from app.settings import Settings

log = logging.getLogger(__name__)

# Seconds to hours: a tiny cycle takes seconds, a GPU cycle on the paper preset hours.
CYCLE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)

CYCLES = Counter(
    "pirloop_cycles_total",
    "Learning cycles ended, by outcome: candidate (a new version was made), failed, repeat "
    "(a redelivered cycle that another attempt had already finished).",
    ["outcome"],
)
CYCLE_SECONDS = Histogram(
    "pirloop_cycle_duration_seconds",
    "A learning cycle's time from starting to its outcome, by outcome.",
    ["outcome"],
    buckets=CYCLE_BUCKETS,
)
CYCLE_QUEUE_WAIT = Histogram(
    "pirloop_cycle_queue_wait_seconds",
    "From a cycle being requested (its run created) to its first attempt starting.",
    buckets=WAIT_BUCKETS,
)
# livesum: a pool process that ends is marked dead below, so its cycle stops counting.
CYCLES_RUNNING = Gauge(
    "pirloop_cycles_running", "Learning cycles running now.", multiprocess_mode="livesum"
)
ROLLOUT_DECISIONS = Counter(
    "pirloop_rollout_decisions_total",
    "Automatic decisions of the scheduler's look on a candidate: promoted or rejected.",
    ["outcome"],
)
TASK_QUEUE_WAIT = Histogram(
    "pirloop_task_queue_wait_seconds",
    "Celery tasks: from being sent (or their ETA, for a retry) to starting, by task.",
    ["task"],
    buckets=WAIT_BUCKETS,
)
TASK_SECONDS = Histogram(
    "pirloop_task_duration_seconds",
    "Celery tasks: time running, by task.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)
TASKS = Counter(
    "pirloop_tasks_total",
    "Celery tasks ended, by task and state (SUCCESS, FAILURE, RETRY, ...).",
    ["task", "state"],
)


def _last(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
    # mostrecent: whichever process ran the last cycle, its figure is the one shown, and it
    # stays shown after that process ends.
    return Gauge(name, documentation, labels, multiprocess_mode="mostrecent")


ESTIMATOR_VALIDATION_LOSS = _last(
    "pirloop_estimator_validation_loss",
    "The last successful cycle's PIR estimator: held-out loss at its best epoch.",
)
ESTIMATOR_MAE = _last(
    "pirloop_estimator_heldout_mae",
    "The last successful cycle's PIR estimator: mean absolute error on held-out images.",
)
ESTIMATOR_CORRELATION = _last(
    "pirloop_estimator_heldout_correlation",
    "The last successful cycle's PIR estimator: correlation of predicted and measured PIR on "
    "held-out images (NaN when either is constant).",
)
ESTIMATOR_CALIBRATION = _last(
    "pirloop_estimator_calibration_error",
    "The last successful cycle's PIR estimator: calibration error on held-out images.",
)
ESTIMATOR_EPOCHS = _last(
    "pirloop_estimator_epochs", "The last successful cycle's PIR estimator: epochs trained."
)
TUNING_STEPS = _last("pirloop_tuning_steps", "The last successful cycle's generator tuning steps.")
TUNING_PREDICTED_PIR = _last(
    "pirloop_tuning_predicted_pir",
    "The last successful cycle: the estimator's mean predicted PIR of the generator before "
    "(point=start) and after (point=end) tuning.",
    ("point",),
)
PREDICTED_CHANGE = _last(
    "pirloop_cycle_predicted_pir_change",
    "The last successful cycle: the estimator's predicted PIR change of the candidate's "
    "batch over the parent's.",
)
TRAINING_IMAGES = _last(
    "pirloop_cycle_training_images", "The last successful cycle: logged images trained on."
)
CANDIDATE_VERSION = _last(
    "pirloop_cycle_candidate_version", "The version id the last successful cycle made."
)
LAST_SUCCESS = _last(
    "pirloop_cycle_last_success_timestamp_seconds",
    "When the last successful cycle ended (Unix time).",
)


# --- Cycles (worker/jobs/cycle.py) -------------------------------------------------------------


@contextmanager
def cycle_running(settings: Settings, requested_at: datetime | None) -> Iterator[dict[str, str]]:
    """Around one attempt of a cycle: counts it running and, when it ends, its outcome and
    duration. The caller sets outcome["outcome"]; an exception makes it "failed".
    requested_at (the run's creation in UTC, on its first attempt only) gives the queue wait."""
    outcome = {"outcome": "candidate"}
    if not settings.metrics_enabled:
        yield outcome
        return
    if requested_at is not None:
        CYCLE_QUEUE_WAIT.observe(max(0.0, (datetime.now(UTC) - requested_at).total_seconds()))
    started = time.monotonic()
    CYCLES_RUNNING.inc()
    try:
        yield outcome
    except BaseException:
        outcome["outcome"] = "failed"
        raise
    finally:
        CYCLES_RUNNING.dec()
        CYCLES.labels(outcome["outcome"]).inc()
        CYCLE_SECONDS.labels(outcome["outcome"]).observe(time.monotonic() - started)


def cycle_ended(settings: Settings, outcome: str) -> None:
    """A cycle that ended without an attempt of its own (attempts used up by killed workers)."""
    if settings.metrics_enabled:
        CYCLES.labels(outcome).inc()


def _number(value: Any) -> float:
    """A figure as a float; missing or not a number (null in the stored JSON) is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def record_cycle(settings: Settings, metrics: Mapping[str, Any], version_id: int) -> None:
    """A successful cycle's figures, from the metrics it stores with its candidate."""
    if not settings.metrics_enabled:
        return
    estimator = metrics.get("estimator", {})
    tuning = metrics.get("tuning", {})
    holdout_curve = estimator.get("holdout_loss") or []
    best_epoch = int(estimator.get("best_epoch") or len(holdout_curve))
    if holdout_curve and 1 <= best_epoch <= len(holdout_curve):
        ESTIMATOR_VALIDATION_LOSS.set(_number(holdout_curve[best_epoch - 1]))
    ESTIMATOR_MAE.set(_number(estimator.get("heldout_mae")))
    ESTIMATOR_CORRELATION.set(_number(estimator.get("heldout_corr")))
    ESTIMATOR_CALIBRATION.set(_number(estimator.get("calibration_error")))
    ESTIMATOR_EPOCHS.set(_number(estimator.get("epochs_run")))
    TUNING_STEPS.set(_number(tuning.get("steps")))
    TUNING_PREDICTED_PIR.labels("start").set(_number(tuning.get("predicted_pir_start")))
    TUNING_PREDICTED_PIR.labels("end").set(_number(tuning.get("predicted_pir_end")))
    PREDICTED_CHANGE.set(_number(metrics.get("estimated_delta")))
    TRAINING_IMAGES.set(_number(metrics.get("training_images")))
    CANDIDATE_VERSION.set(version_id)
    LAST_SUCCESS.set(time.time())


def record_decision(settings: Settings, outcome: str) -> None:
    """An automatic promotion or rejection of a candidate."""
    if settings.metrics_enabled and outcome in ("promote", "reject"):
        ROLLOUT_DECISIONS.labels("promoted" if outcome == "promote" else "rejected").inc()


# --- Celery (worker/celery_app.py) ---------------------------------------------------------------


def _task_started(task: Any = None, **_: Any) -> None:
    request = task.request
    request._pirloop_started = time.monotonic()
    headers = request.headers or {}
    sent_at = headers.get(SENT_AT_HEADER, getattr(request, SENT_AT_HEADER, None))
    if sent_at is None:
        return  # sent by a process that does not stamp (an older API): no wait to measure
    due = float(sent_at)
    if request.eta:  # a retry's countdown is not time spent waiting for a worker
        eta = datetime.fromisoformat(request.eta) if isinstance(request.eta, str) else request.eta
        due = max(due, eta.timestamp())
    TASK_QUEUE_WAIT.labels(task.name).observe(max(0.0, time.time() - due))


def _task_ended(task: Any = None, state: str | None = None, **_: Any) -> None:
    started = getattr(task.request, "_pirloop_started", None)
    if started is not None:
        TASK_SECONDS.labels(task.name).observe(time.monotonic() - started)
    TASKS.labels(task.name, state or "UNKNOWN").inc()


def _process_ended(**_: Any) -> None:
    """A pool process that exits: its live gauges (cycles running) stop counting."""
    path = multiprocess_dir()
    if path is not None:
        prometheus_multiprocess.mark_process_dead(os.getpid(), path)


def serve_worker_metrics(settings: Settings) -> WSGIServer | None:
    """The HTTP exporter of a Celery worker's main process, when a port is configured: a
    daemon thread answering GET /metrics; returns its server (None: none started)."""
    if settings.worker_metrics_port is None:
        return None
    if multiprocess_dir() is None:
        log.warning(
            "PROMETHEUS_MULTIPROC_DIR was not set before prometheus_client was imported: the "
            "metrics on port %s are this process's alone, not its pool's (start the worker "
            "with `pirloop worker`, or set the variable)",
            settings.worker_metrics_port,
        )
    try:
        server, _ = start_http_server(
            settings.worker_metrics_port,
            addr=settings.worker_metrics_host,
            registry=process_collector(),
        )
    except OSError:
        # The worker's tasks matter more than its metrics: say so, and keep working.
        log.exception("worker metrics: could not listen on port %s", settings.worker_metrics_port)
        return None
    log.info(
        "worker metrics at http://%s:%s/metrics",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )
    return server


def connect_celery(settings: Settings) -> None:
    """Record Celery's tasks, stamp the ones this process sends, serve the exporter when the
    worker starts (main process, before the pool forks)."""
    if not settings.metrics_enabled:
        return
    from celery.signals import (
        before_task_publish,
        task_postrun,
        task_prerun,
        worker_init,
        worker_process_shutdown,
    )

    before_task_publish.connect(stamp_sent_at, weak=False, dispatch_uid="pirloop-sent-at")
    task_prerun.connect(_task_started, weak=False, dispatch_uid="pirloop-task-started")
    task_postrun.connect(_task_ended, weak=False, dispatch_uid="pirloop-task-ended")
    worker_process_shutdown.connect(_process_ended, weak=False, dispatch_uid="pirloop-dead")

    def start_exporter(**_: Any) -> None:
        serve_worker_metrics(settings)

    worker_init.connect(start_exporter, weak=False, dispatch_uid="pirloop-exporter")
