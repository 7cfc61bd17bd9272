"""The embedded default's scheduler: with no Redis (so no Celery beat), a thread of the API
process submits the periodic jobs to the in-process job runner every few seconds: flagging
bots always, then (with the ML stack installed) the check whether a cycle is due. The jobs
decide; the database admits one active cycle, so two API processes cannot both start one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from app.jobs import InProcessDispatcher

log = logging.getLogger(__name__)

# Flagging first: the runner has one thread, so the cycle check after it counts no impression
# of a bot that the rules already catch.
FLAGGING = ("worker.flag_visitors",)
LEARNING = ("worker.flag_visitors", "worker.maybe_start_cycle")


class EmbeddedScheduler:
    def __init__(
        self, jobs: InProcessDispatcher, interval_seconds: float, tasks: Sequence[str] = LEARNING
    ) -> None:
        self._jobs = jobs
        self._interval = interval_seconds
        self.tasks = tuple(tasks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pirloop-scheduler", daemon=True)
        self._pending: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            # One tick at a time: while a cycle runs in the job thread, ticks would only pile up.
            if not all(self._jobs.done(job_id) for job_id in self._pending):
                continue
            self._pending = []
            for task in self.tasks:
                try:
                    self._pending.append(self._jobs.submit(task))
                except Exception:
                    log.exception("could not submit %s", task)
