"""What a client driving the loop needs to know before it starts: which traffic counts, the
impression target, who runs jobs, and whether a scheduler is ticking."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app import rollout
from app.deps import SessionDep, SettingsDep
from app.errors import UNAVAILABLE

router = APIRouter(prefix="/v1/service", tags=["service"], responses=UNAVAILABLE)


class ServiceInfo(BaseModel):
    counts_simulated_traffic: bool = Field(
        description="simulated impressions count for learning and decisions"
    )
    learning_placement: Literal["background", "rating"]
    batch_size: int = Field(description="images per generator version")
    target_impressions_per_image: int = Field(description="when a learning cycle is due")
    jobs: Literal["embedded", "celery"] = Field(
        description="embedded: cycles run in the API process; celery: on workers"
    )
    embedded_scheduler: bool = Field(description="the API process itself ticks the scheduler")
    scheduler_last_tick_at: datetime | None = Field(
        description="the last scheduler tick (any beat or embedded scheduler); null: never"
    )
    learning_held: str | None = Field(description="why automatic cycles are held, or null")
    rate_limit_ip_per_minute: int
    rate_limit_visitor_per_minute: int


@router.get("")
def service_info(session: SessionDep, settings: SettingsDep) -> ServiceInfo:
    hold = rollout.learning_hold(session)
    return ServiceInfo(
        counts_simulated_traffic=settings.use_simulated_traffic,
        learning_placement=settings.learning_placement,
        batch_size=settings.batch_size,
        target_impressions_per_image=settings.target_impressions_per_image,
        jobs="celery" if settings.redis_url else "embedded",
        embedded_scheduler=not settings.redis_url and settings.embedded_scheduler,
        scheduler_last_tick_at=rollout.last_scheduler_tick(session),
        learning_held=hold.get("reason") if hold else None,
        rate_limit_ip_per_minute=settings.rate_limit_ip_per_minute,
        rate_limit_visitor_per_minute=settings.rate_limit_visitor_per_minute,
    )
