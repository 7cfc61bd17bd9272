"""Asking the worker for work, by task name. The service never imports the worker: with
PIRLOOP_REDIS_URL set it sends the task to Celery; without, the embedded default resolves the
same name to the same job function and runs it in a background thread of this process."""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from app.settings import Settings

log = logging.getLogger(__name__)

# Task name -> "module:function" of the plain job function behind it (worker/tasks.py wraps
# the same functions as Celery tasks under the same names).
TASK_TARGETS: dict[str, str] = {
    "worker.generate_batch": "worker.jobs.batches:generate_batch",
    "worker.run_cycle": "worker.jobs.cycle:run_cycle",
    "worker.maybe_start_cycle": "worker.jobs.cycle:maybe_start_cycle",
    # Needs no ML stack: it runs on serve-only deployments too.
    "worker.flag_visitors": "worker.jobs.abuse:flag_visitors",
}
# Model work goes to the "ml" queue (GPU workers, concurrency 1); the rest to "default".
TASK_QUEUES: dict[str, str] = {
    "worker.generate_batch": "ml",
    "worker.run_cycle": "ml",
    "worker.maybe_start_cycle": "default",
    "worker.flag_visitors": "default",
}


class UnknownTask(KeyError):
    pass


def resolve_task(name: str) -> Callable[..., Any]:
    try:
        module_name, function_name = TASK_TARGETS[name].split(":")
    except KeyError as exc:
        raise UnknownTask(name) from exc
    function: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    return function


class JobDispatcher(Protocol):
    def submit(self, name: str, **kwargs: Any) -> str: ...

    def shutdown(self) -> None: ...


class InProcessDispatcher:
    """One background thread: jobs run one at a time, like a concurrency-1 ML worker."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pirloop-job")
        self._futures: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def submit(self, name: str, **kwargs: Any) -> str:
        function = resolve_task(name)
        job_id = uuid.uuid4().hex
        future = self._executor.submit(self._run, name, function, kwargs)
        with self._lock:
            self._futures[job_id] = future
        return job_id

    @staticmethod
    def _run(name: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        try:
            return function(**kwargs)
        except Exception:
            # The job records its own failure in training_runs; this keeps the thread alive.
            log.exception("in-process job %s failed", name)
            return None

    def done(self, job_id: str) -> bool:
        with self._lock:
            return self._futures[job_id].done()

    def wait(self, job_id: str, timeout: float | None = None) -> Any:
        with self._lock:
            future = self._futures[job_id]
        return future.result(timeout=timeout)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class CeleryDispatcher:
    def __init__(self, redis_url: str) -> None:
        from celery import Celery

        self._celery = Celery("pirloop-api", broker=redis_url, backend=redis_url)

    def submit(self, name: str, **kwargs: Any) -> str:
        if name not in TASK_TARGETS:
            raise UnknownTask(name)
        result = self._celery.send_task(name, kwargs=kwargs, queue=TASK_QUEUES[name])
        return str(result.id)

    def shutdown(self) -> None:
        self._celery.close()


def make_dispatcher(settings: Settings) -> JobDispatcher:
    if settings.redis_url:
        return CeleryDispatcher(settings.redis_url)
    return InProcessDispatcher()
