from __future__ import annotations

from app.image_cache import CachedImage, ImageCache


def test_cache_keeps_recent_images_within_its_byte_budget() -> None:
    cache = ImageCache(max_bytes=30)
    for image_id in range(3):
        cache.put(image_id, CachedImage(content=b"x" * 10, content_hash=str(image_id)))
    assert cache.get(0) is not None  # 0 is now the most recently used
    cache.put(3, CachedImage(content=b"y" * 10, content_hash="3"))
    assert cache.get(1) is None  # the least recently used went first
    assert [cache.get(i) is not None for i in (0, 2, 3)] == [True, True, True]
