"""Which image an impression shows. The learning side needs every image of the serving batch
seen about equally often, so each API process serves the least-served image next. Counts start
from the database when a process first sees a version, then are kept in memory: several
processes each stay even, so together they stay even too, with no row locked per request."""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app import queries


class NothingToServe(LookupError):
    """No generator version is serving, or it has no images yet."""


@dataclass
class _VersionQueue:
    version_id: int
    heap: list[tuple[int, float, int]]  # (impressions so far, random tie-break, image_id)


class BatchPicker:
    def __init__(self, *, version_cache_seconds: float = 1.0, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: _VersionQueue | None = None
        self._serving_checked_at = 0.0
        self._serving_id: int | None = None
        self._version_cache_seconds = version_cache_seconds
        self._random = random.Random(seed)

    def invalidate(self) -> None:
        """Forget the cached serving version (after a promotion or pause in this process)."""
        with self._lock:
            self._serving_checked_at = 0.0

    def _serving_version_id(self, session: Session) -> int | None:
        now = time.monotonic()
        if now - self._serving_checked_at > self._version_cache_seconds:
            version = queries.serving_version(session)
            self._serving_id = version.id if version else None
            self._serving_checked_at = now
        return self._serving_id

    def pick(self, session: Session) -> tuple[int, int]:
        """Return (version_id, image_id) for the next impression."""
        with self._lock:
            version_id = self._serving_version_id(session)
            if version_id is None:
                raise NothingToServe("no generator version is serving")
            if self._queue is None or self._queue.version_id != version_id:
                self._queue = self._load(session, version_id)
            if not self._queue.heap:
                self._queue = None
                raise NothingToServe(f"generator version {version_id} has no images")
            count, _, image_id = self._queue.heap[0]
            heapq.heapreplace(self._queue.heap, (count + 1, self._random.random(), image_id))
            return version_id, image_id

    def _load(self, session: Session, version_id: int) -> _VersionQueue:
        counts = queries.impression_counts_by_image(session, version_id)
        heap = [
            (counts.get(image_id, 0), self._random.random(), image_id)
            for image_id in queries.batch_image_ids(session, version_id)
        ]
        heapq.heapify(heap)
        return _VersionQueue(version_id=version_id, heap=heap)
