"""The beat schedule: flag bots, and check often whether a cycle is due; the check itself
decides."""

from __future__ import annotations

from typing import Any

from app.settings import Settings


def beat_schedule(settings: Settings, *, learning: bool = True) -> dict[str, dict[str, Any]]:
    """Flagging always (it needs no ML stack); the cycle check only when `learning` (the ML
    stack is installed where beat runs, as on the workers it feeds)."""
    interval = settings.scheduler_interval_seconds
    # A tick that waited longer than its interval is stale: the next one replaces it.
    options = {"expires": interval, "queue": "default"}
    schedule: dict[str, dict[str, Any]] = {
        "flag-visitors": {"task": "worker.flag_visitors", "schedule": interval, "options": options}
    }
    if learning:
        schedule["maybe-start-cycle"] = {
            "task": "worker.maybe_start_cycle",
            "schedule": interval,
            "options": options,
        }
    return schedule
