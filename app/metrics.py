"""Prometheus metrics of the API process: requests per route template, the writer's group
commits, rate-limit refusals, and (read at scrape time) the arms being served.

Several processes, one scrape. `pirloop serve --workers N` runs N uvicorn processes and a
Celery worker forks a pool; each keeps its own counts. prometheus_client's multiprocess mode
has every process write its samples to files under PROMETHEUS_MULTIPROC_DIR and a scrape
adds them up. The variable must be set before a process imports prometheus_client, so the
`pirloop serve` and `pirloop worker` commands set it (to a directory of their own, removed at
exit, unless the operator set one) before anything imports this module; a process started
without it keeps its counts in memory and its scrape shows its own alone.

Labels stay bounded: a request is counted under its route's template ("/v1/images/{image_id}")
or "<unmatched>", never its raw path, and under a known method or "other".

PIRLOOP_METRICS_ENABLED=false collects nothing: the app installs none of these hooks (see
app/main.py) and has no /metrics.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.routing import Mount, Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import rollout
from app.admin_auth import AdminThrottle
from app.models import Rollout, utcnow
from app.ratelimit import RateLimiter
from app.settings import Settings

log = logging.getLogger(__name__)
# No *_created series: multiprocess mode has none, so neither has a single process.
disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What a scrape answers: the classic text format, which every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The limits that refuse with 429, by the prefix of their limiter key (app/ratelimit.py).
LIMITS = {"ip": "ip", "visitor": "visitor"}

REQUESTS = Counter(
    "pirloop_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "pirloop_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMIT_GROUP_SIZE = Histogram(
    "pirloop_writer_commit_group_size",
    "Writes (impressions, interactions) per group commit: one transaction of the writer.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
COMMIT_SECONDS = Histogram(
    "pirloop_writer_commit_duration_seconds",
    "Time to apply and commit one group commit of the writer.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
RATE_LIMIT_REFUSALS = Counter(
    "pirloop_rate_limit_refusals_total",
    "Requests refused with 429, by limit: ip (per client address), visitor (impressions per "
    "visitor), admin (an address over PIRLOOP_ADMIN_FAILURES_PER_MINUTE).",
    ["limit"],
)
ADMIN_FAILURES = Counter(
    "pirloop_admin_credential_failures_total",
    "Admin credentials missing or wrong (each counts toward the admin throttle).",
)


# --- Which registry a scrape reads -----------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The directory this process writes its samples to, or None when it counts in memory:
    also None when the variable was set only after prometheus_client was imported (the
    values are then in memory, and a scrape of the directory would miss them)."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or values.ValueClass is values.MutexValue:
        return None
    return path


def process_collector() -> Collector:
    """Every process's samples (multiprocess mode), else this process's registry."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


class _Chain:
    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def exposition(*extra: Collector) -> bytes:
    """The text a scrape answers: every process's metrics, then the extra collectors."""
    return generate_latest(_Chain(process_collector(), *extra))


# --- Requests ----------------------------------------------------------------------------------


def fallback_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """(path pattern, template) of every documented route and every top-level route or mount,
    for the requests the router never saw. The documented paths are the templates the
    OpenAPI schema promises; FastAPI's own nesting of included routers is not public."""
    templates: list[tuple[re.Pattern[str], str]] = []
    for route in getattr(app, "routes", []):
        pattern, template = getattr(route, "path_regex", None), getattr(route, "path_format", None)
        if isinstance(route, Route | Mount) and pattern is not None and template is not None:
            templates.append((pattern, template))
    openapi = getattr(app, "openapi", None)
    for template in openapi()["paths"] if openapi is not None else ():
        templates.append((compile_path(template)[0], template))
    return templates


class RequestMetrics:
    """Counts every HTTP request and times it, by method, route template and status. Plain
    ASGI (not BaseHTTPMiddleware, which costs a task per request), added outermost so that
    what other middleware refuses is counted too.

    The template: the router leaves the route it chose in the scope. A request answered
    before routing (a 429 from the rate-limit middleware, a 413) or by a mount is matched
    here on the path it arrived with, and one that matches nothing is UNMATCHED: a raw path
    would give every scanned URL a series of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._fallback: list[tuple[re.Pattern[str], str]] | None = None
        # The labelled children, looked up once: labels() takes a lock and builds a key.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before answering
        path = scope["path"]  # before a mount rewrites it

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in METHODS else "other"
            self._observe(method, self.route_template(scope, path), status, seconds)

    def route_template(self, scope: Scope, path: str) -> str:
        template = getattr(scope.get("route"), "path", None)
        if isinstance(template, str):
            return template
        if self._fallback is None:
            self._fallback = fallback_templates(scope.get("app"))
        for pattern, template in self._fallback:
            if pattern.match(path):
                return template
        return UNMATCHED

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = REQUESTS.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._timers[(method, route)] = REQUEST_SECONDS.labels(method, route)
        timer.observe(seconds)


# --- Writer, limits --------------------------------------------------------------------------


def observe_commit_group(writes: int, seconds: float) -> None:
    """app/writer.py's hook: one group commit of `writes` items took `seconds`."""
    COMMIT_GROUP_SIZE.observe(writes)
    COMMIT_SECONDS.observe(seconds)


def limit_name(key: str) -> str:
    return LIMITS.get(key.split(":", 1)[0], "other")


class CountingRateLimiter:
    """A rate limiter that counts its refusals by limit (the prefix of the key). Every 429
    of the public endpoints comes from the app's one limiter: the address limit in the
    middleware and the batch route, the visitor limit in the impression routes."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def hit(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        return self._counted(key, self.limiter.hit(key, per_minute, cost))

    async def hit_async(self, key: str, per_minute: int, cost: int = 1) -> float | None:
        return self._counted(key, await self.limiter.hit_async(key, per_minute, cost))

    @staticmethod
    def _counted(key: str, wait: float | None) -> float | None:
        if wait is not None:
            RATE_LIMIT_REFUSALS.labels(limit_name(key)).inc()
        return wait


class CountingAdminThrottle:
    """The admin throttle, counting what it refuses and the failures it is told of."""

    def __init__(self, throttle: AdminThrottle) -> None:
        self.throttle = throttle

    def retry_after(self, address: str, limit: int) -> float | None:
        wait = self.throttle.retry_after(address, limit)
        if wait is not None:
            RATE_LIMIT_REFUSALS.labels("admin").inc()
        return wait

    def count_failure(self, address: str) -> None:
        ADMIN_FAILURES.inc()
        self.throttle.count_failure(address)


# --- Celery: when a task was sent -------------------------------------------------------------

SENT_AT_HEADER = "pirloop_sent_at"


def stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Celery's before_task_publish: the time a task is sent (each retry anew), in a header
    the worker reads to time the task's wait in the queue (worker/metrics.py)."""
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


def stamp_published_tasks() -> None:
    """Stamp every task this process sends (the API sends cycles started by an operator)."""
    from celery.signals import before_task_publish

    before_task_publish.connect(stamp_sent_at, weak=False, dispatch_uid="pirloop-sent-at")


# --- Serving, read at scrape time --------------------------------------------------------------


class ServingCollector:
    """The arms served now and the rollouts by status, read from the database when scraped:
    every API process serves the same plan, whichever one answers the scrape. A database that
    does not answer leaves these out and sets pirloop_database_up to 0; the rest of the scrape
    still answers."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            plan = rollout.serving_plan(self.session, self.settings)
            rollouts = self.session.execute(
                select(Rollout.status, Rollout.manual, func.count()).group_by(
                    Rollout.status, Rollout.manual
                )
            ).all()
        except SQLAlchemyError:
            log.warning("metrics: the database did not answer; serving metrics left out")
            self.session.rollback()
            yield _single("pirloop_database_up", "Whether the scrape could read the database.", 0)
            return
        yield _single("pirloop_database_up", "Whether the scrape could read the database.", 1)
        roles = {plan.champion_id: "champion", plan.candidate_id: "candidate"}
        if plan.holdout is not None:
            roles.setdefault(plan.holdout[0], "holdout")
        share = GaugeMetricFamily(
            "pirloop_serving_arm_share",
            "Share of impressions each served version gets now, by version and role "
            "(champion, candidate, holdout). No sample: nothing is served (paused).",
            labels=["version", "role"],
        )
        version = GaugeMetricFamily(
            "pirloop_serving_version",
            "The version id served in each role now.",
            labels=["role"],
        )
        for version_id, arm_share in plan.arms_at(utcnow()):
            role = roles.get(version_id, "holdout")
            share.add_metric([str(version_id), role], arm_share)
            version.add_metric([role], version_id)
        yield share
        yield version
        by_status = GaugeMetricFamily(
            "pirloop_rollouts",
            "Rollouts in the database by status (running, promoted, rejected, cancelled) and "
            "whether an operator decided them.",
            labels=["status", "manual"],
        )
        for status, manual, count in rollouts:
            by_status.add_metric([str(status), "true" if manual else "false"], count)
        yield by_status


def _single(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
