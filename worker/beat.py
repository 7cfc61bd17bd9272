"""The beat schedule: check often whether a cycle is due; the check itself decides."""

from __future__ import annotations

from typing import Any

from app.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    interval = settings.scheduler_interval_seconds
    return {
        "maybe-start-cycle": {
            "task": "worker.maybe_start_cycle",
            "schedule": interval,
            # A check that waited longer than its interval is stale: the next one replaces it.
            "options": {"expires": interval, "queue": "default"},
        }
    }
