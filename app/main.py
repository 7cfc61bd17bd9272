"""The FastAPI application: `create_app()` builds it; nothing connects at import time."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.admin_auth import make_admin_throttle
from app.artifacts import artifact_store
from app.bootstrap import ml_available
from app.database import engine_from_settings, make_session_factory
from app.errors import BodySizeLimit, document_errors, install_error_handlers
from app.image_cache import ImageCache
from app.image_fast_path import CachedImageAnswers
from app.ingest import Ingest
from app.jobs import InProcessDispatcher, make_dispatcher
from app.metrics import (
    CountingAdminThrottle,
    CountingRateLimiter,
    RequestMetrics,
    observe_commit_group,
    stamp_published_tasks,
)
from app.pages import STATIC_DIR
from app.pages import admin as admin_pages
from app.pages import docs as docs_pages
from app.pages import public as public_pages
from app.ratelimit import ClientRateLimit, make_rate_limiter
from app.routers import (
    admin,
    embed,
    health,
    images,
    impressions,
    interactions,
    metrics,
    rollouts,
    service,
    versions,
)
from app.scheduler import FLAGGING, LEARNING, EmbeddedScheduler
from app.security import SecurityHeaders
from app.serving import BatchPicker
from app.settings import Settings, get_settings
from app.write_fast_path import PublicWriteAnswers
from app.writer import Gathering, make_writer

log = logging.getLogger(__name__)


def operation_id(route: APIRoute) -> str:
    """The route function's name: short, stable operationIds, which OpenAPI links name and
    generated clients use as function names."""
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    measured = settings.metrics_enabled

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = engine_from_settings(settings)
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        app.state.picker = BatchPicker(settings, sessions=app.state.session_factory)
        writer = make_writer(
            app.state.session_factory,
            database_pooler=settings.database_pooler,
            on_commit=observe_commit_group if measured else None,
            gathering=Gathering(
                target=settings.writer_group_target,
                linger_seconds=settings.writer_linger_ms / 1000,
            ),
        )
        writer.start()
        app.state.ingest = Ingest(writer, app.state.picker)
        app.state.image_cache = ImageCache()
        app.state.display_cache = ImageCache()  # the display sizes (?w=)
        app.state.jobs = make_dispatcher(settings)
        app.state.artifacts = artifact_store(settings, engine)
        app.state.scheduler = scheduler = None
        if isinstance(app.state.jobs, InProcessDispatcher) and settings.embedded_scheduler:
            learning = ml_available()
            if not learning:
                log.warning("no ML stack installed: serving and flagging bots, no learning cycles")
            app.state.scheduler = scheduler = EmbeddedScheduler(
                app.state.jobs,
                settings.scheduler_interval_seconds,
                tasks=LEARNING if learning else FLAGGING,
            )
            scheduler.start()
        # Everything built so far lives as long as the process: move it out of the cyclic
        # collector's reach, so the full collections that request garbage triggers stop
        # walking the whole app (they were tail-latency pauses under load).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            app.state.jobs.shutdown()
            await writer.stop()  # the writes already queued are committed and answered
            engine.dispose()

    app = FastAPI(
        title="pirloop",
        version="0.1.0",
        summary="Improve an image generator from people's interactions with its images.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # Served by app/pages/docs.py instead: FastAPI's pages load from a CDN, inline.
        docs_url=None,
        redoc_url=None,
        # pirloop's telemetry is its Prometheus metrics (app/metrics.py). FastAPI's native
        # OpenTelemetry, on by default, asked three global providers on every request whether
        # anyone listened: 3% of an impression's time (bench/profile_hot_path.py --gil).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    document_errors(app)
    # Innermost: cached images and the two busiest POSTs answered before routing, inside
    # every other middleware.
    app.add_middleware(CachedImageAnswers)
    app.add_middleware(PublicWriteAnswers)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        path_limits={interactions.BATCH_PATH: settings.max_batch_body_bytes},
    )
    app.state.rate_limiter = make_rate_limiter(settings.redis_url)
    app.state.admin_throttle = make_admin_throttle(settings.redis_url)
    if measured:  # PIRLOOP_METRICS_ENABLED: refusals counted by limit (app/metrics.py)
        app.state.rate_limiter = CountingRateLimiter(app.state.rate_limiter)
        app.state.admin_throttle = CountingAdminThrottle(app.state.admin_throttle)
    app.add_middleware(
        ClientRateLimit,
        limiter=app.state.rate_limiter,
        per_minute=settings.rate_limit_ip_per_minute,
    )
    app.add_middleware(SecurityHeaders, page_policies=docs_pages.PAGE_POLICIES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type"],
            allow_credentials=False,
        )
    for router in (health.router, impressions.router, interactions.router, images.router):
        app.include_router(router)
    app.include_router(versions.router)
    app.include_router(rollouts.router)
    app.include_router(service.router)
    app.include_router(embed.router)
    app.include_router(admin.router)
    if measured:
        app.include_router(metrics.router)
    app.include_router(public_pages.router)
    app.include_router(admin_pages.router)
    app.include_router(docs_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(docs_pages.ASSETS_PATH, StaticFiles(directory=docs_pages.ASSETS_DIR), name="docs")
    if measured:  # outermost, so that what the other middleware refuses is counted too
        app.add_middleware(RequestMetrics)
        if settings.redis_url:
            stamp_published_tasks()
    return app
