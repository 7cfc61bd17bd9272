"""Which image an impression shows.

First the arm: the champion, a rollout's candidate, the holdout (app/rollout.py), chosen at
random with the arms' shares for every impression. Random per impression, not round robin or
by time or by process, so the arm is independent of drift and of which API process answered,
and any number of processes together keep the configured split.

Then the image within the arm: the learning side needs every image of a batch seen about
equally often, so the least-served image goes next. Counts start from the database when a
process first serves a version, then are kept in memory: several processes each stay even,
so together they stay even too, with no row locked per request.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from app import queries, rollout
from app.errors import PirloopError
from app.models import utcnow
from app.rollout import ServingPlan
from app.settings import Settings


class NothingToServe(PirloopError):
    """No generator version is serving, or it has no images yet."""

    status_code = 503


@dataclass
class _ImageQueue:
    heap: list[tuple[int, float, int]] = field(default_factory=list)  # (served, tie, image)


class BatchPicker:
    def __init__(
        self,
        settings: Settings,
        *,
        sessions: sessionmaker[Session] | None = None,
        arms_cache_seconds: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self._settings = settings
        # Where `pick()` without a session reads the plan and a version's images from.
        self._sessions = sessions
        self._lock = threading.Lock()
        self._queues: dict[int, _ImageQueue] = {}
        self._plan = ServingPlan()
        # None: never read. (A 0.0 start read as "fresh" while time.monotonic(), which counts
        # from boot, was below the cache period: a just-booted host served nothing.)
        self._arms_checked_at: float | None = None
        self._arms_cache_seconds = arms_cache_seconds
        self._random = random.Random(seed)

    def invalidate(self) -> None:
        """Forget the cached arms (after a promotion, pause or decision in this process)."""
        with self._lock:
            self._arms_checked_at = None

    def needs_reading(self) -> bool:
        """Whether `pick()` would read the database now: the cached plan is stale, or a
        version it serves has its images not loaded yet."""
        checked = self._arms_checked_at
        if checked is None or time.monotonic() - checked > self._arms_cache_seconds:
            return True
        return any(version_id not in self._queues for version_id, _ in self._plan.arms_at(utcnow()))

    def refresh(self) -> None:
        """Read now what `pick()` would read, through a Session of its own, so that the next
        picks read nothing: PostgresWriter calls it in a worker thread, off the event loop."""
        if self._sessions is None:
            raise RuntimeError("BatchPicker.refresh() needs a session factory")
        with self._sessions() as session, self._lock:
            for version_id, _ in self._current_arms(lambda: session):
                if version_id not in self._queues:
                    self._queues[version_id] = self._load(session, version_id)

    def _current_arms(self, reader: Callable[[], Session]) -> list[tuple[int, float]]:
        now = time.monotonic()
        checked = self._arms_checked_at
        if checked is None or now - checked > self._arms_cache_seconds:
            self._plan = rollout.serving_plan(reader(), self._settings)
            self._arms_checked_at = now
            served = {version_id for version_id, _ in self._plan.arms_at(utcnow())}
            for version_id in list(self._queues):
                if version_id not in served:
                    del self._queues[version_id]
        # The plan is cached, its shares are not: the ramp ends at its instant in every process.
        return self._plan.arms_at(utcnow())

    def _choose_arm(self, arms: list[tuple[int, float]]) -> int:
        draw = self._random.random() * sum(share for _, share in arms)
        for version_id, share in arms:
            draw -= share
            if draw < 0:
                return version_id
        return arms[-1][0]

    def pick(self, session: Session | None = None) -> tuple[int, int]:
        """Return (version_id, image_id) for the next impression. Reads through `session`, or
        without one through a Session of its own, opened only when the cached plan is stale
        or a version's images are not loaded yet (about once a second): the group commit
        picks for every impression, and a Session for each group was a tenth of its time."""
        opened: Session | None = None

        def reader() -> Session:
            nonlocal opened
            if session is not None:
                return session
            if opened is None:
                if self._sessions is None:
                    raise RuntimeError("BatchPicker.pick() needs a session or a session factory")
                opened = self._sessions()
            return opened

        try:
            with self._lock:
                arms = self._current_arms(reader)
                if not arms:
                    raise NothingToServe("no generator version is serving")
                version_id = self._choose_arm(arms)
                queue = self._queues.get(version_id)
                if queue is None:
                    queue = self._queues[version_id] = self._load(reader(), version_id)
                if not queue.heap:
                    del self._queues[version_id]
                    raise NothingToServe(f"generator version {version_id} has no images")
                count, _, image_id = queue.heap[0]
                heapq.heapreplace(queue.heap, (count + 1, self._random.random(), image_id))
                return version_id, image_id
        finally:
            if opened is not None:
                opened.close()

    def _load(self, session: Session, version_id: int) -> _ImageQueue:
        counts = queries.impression_counts_by_image(session, version_id)
        heap = [
            (counts.get(image_id, 0), self._random.random(), image_id)
            for image_id in queries.batch_image_ids(session, version_id)
        ]
        heapq.heapify(heap)
        return _ImageQueue(heap)
