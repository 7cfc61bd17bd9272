"""Served images never change, so each API process keeps the most requested ones in memory
and answers them without a database round trip."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedImage:
    png: bytes
    content_hash: str


class ImageCache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._items: OrderedDict[int, CachedImage] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def get(self, image_id: int) -> CachedImage | None:
        with self._lock:
            item = self._items.get(image_id)
            if item is not None:
                self._items.move_to_end(image_id)
            return item

    def put(self, image_id: int, item: CachedImage) -> None:
        with self._lock:
            if image_id in self._items:
                return
            self._items[image_id] = item
            self._bytes += len(item.png)
            while self._bytes > self._max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted.png)
