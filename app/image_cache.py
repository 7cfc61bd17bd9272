"""Served images never change, so each API process keeps the most requested ones in memory
and answers them without a database round trip. The originals are keyed by image id, their
display sizes (app/image_sizes.py) by (image id, width) in a cache of their own, so large
resampled images never push out the originals."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedImage:
    content: bytes  # the encoded image
    content_hash: str  # the original's, for display sizes too
    media_type: str = "image/png"  # originals are PNG; display sizes WebP


class ImageCache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._items: OrderedDict[Hashable, CachedImage] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> CachedImage | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: Hashable, item: CachedImage) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = item
            self._bytes += len(item.content)
            while self._bytes > self._max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted.content)
