"""The embedded default's scheduler: with no Redis (so no Celery beat), a thread of the API
process asks the in-process job runner every few seconds whether a cycle is due. The job
decides; the database admits one active cycle, so two API processes cannot both start one."""

from __future__ import annotations

import logging
import threading

from app.jobs import InProcessDispatcher

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    def __init__(self, jobs: InProcessDispatcher, interval_seconds: float) -> None:
        self._jobs = jobs
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pirloop-scheduler", daemon=True)
        self._pending: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            # One check at a time: while a cycle runs in the job thread, checks would only pile up.
            if self._pending is not None and not self._jobs.done(self._pending):
                continue
            try:
                self._pending = self._jobs.submit("worker.maybe_start_cycle")
            except Exception:
                log.exception("could not submit the cycle check")
