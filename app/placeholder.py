"""Images for a service installed without the ML stack (the slim API image): smooth colour
fields from a seed, stored and served exactly like a generator's batch."""

from __future__ import annotations

import hashlib
import io
import random

import numpy as np
from PIL import Image as PILImage


def placeholder_png(seed: int, size: int = 32) -> bytes:
    rng = random.Random(seed)
    top = np.array([rng.random() for _ in range(3)])
    bottom = np.array([rng.random() for _ in range(3)])
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((size, size, 3))
    buffer = io.BytesIO()
    PILImage.fromarray((pixels * 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def placeholder_batch(count: int, *, first_seed: int, size: int = 32) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for index in range(count):
        png = placeholder_png(first_seed + index, size)
        rows.append(
            {
                "batch_index": index,
                "latent_seed": first_seed + index,
                "png": png,
                "content_hash": hashlib.sha256(png).hexdigest(),
                "width": size,
                "height": size,
            }
        )
    return rows
