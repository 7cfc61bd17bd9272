"""Display sizes: a served image resampled to the width it is shown at.

Generators draw 32 or 64 px images. A browser stretching one over a 1280 px hero or a 512 px
rating prompt interpolates it poorly (blocky or smeared); resampling once on the server with a
Lanczos filter looks right. The stored original (what the estimator learns from, what
`GET /v1/images/{id}` returns without a width) never changes.

Widths come from a small fixed set, so each image has at most len(DISPLAY_WIDTHS) variants in
any cache. The embed script (app/static/embed.js) and the rating page (app/static/rate.js)
carry the same list and pick the smallest width at least as wide as the image is shown.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFilter

DISPLAY_WIDTHS = (128, 256, 512, 1024, 1280, 1920)
"""Allowed values of ?w=: thumbnails, a rating prompt at 1x and 2x, heroes up to 1920 px."""

DISPLAY_MEDIA_TYPE = "image/webp"
# Resized images have no detail finer than the original's pixels, so lossy WebP at quality 90
# is indistinguishable from the lossless pixels (PSNR about 49 dB on cpu-medium images) and a
# tenth of PNG's size: 46 KB instead of 560 KB at 1920 px. method=2 encodes twice as fast as
# the default for the same size within a few per cent.
_WEBP = {"quality": 90, "method": 2}


def allowed_widths_text() -> str:
    return ", ".join(str(width) for width in DISPLAY_WIDTHS)


def check_width(value: object) -> object:
    """?w= as one of DISPLAY_WIDTHS; anything else (another number, a non-number) fails with
    a message that names the allowed values. A pydantic before-validator: its ValueError
    becomes a 422."""
    if value is None:
        return None
    try:
        width = int(str(value))
    except ValueError:
        width = None
    if width not in DISPLAY_WIDTHS:
        raise ValueError(f"w must be one of {allowed_widths_text()} (got {value!r})")
    return width


def display_etag(content_hash: str, width: int | None) -> str:
    """The quoted ETag of an image at a display width (None: the original)."""
    return f'"{content_hash}"' if width is None else f'"{content_hash}-w{width}"'


def resample(png: bytes, width: int) -> bytes:
    """The image in png resampled to width px wide (height in proportion), as WebP.

    Lanczos (a windowed sinc, three lobes) is the sharpest of Pillow's interpolating filters
    without the stair-steps of nearest-neighbour or the softness of bilinear. When upscaling, a
    light unsharp mask at the scale of one source pixel restores some edge contrast that the
    interpolation spreads out; it cannot invent detail, and a stronger one makes halos.
    """
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    height = max(1, round(image.height * width / image.width))
    scale = width / image.width
    resized = image.resize((width, height), Image.Resampling.LANCZOS)
    if scale > 1.5:
        resized = resized.filter(
            ImageFilter.UnsharpMask(radius=min(scale / 2, 16), percent=40, threshold=2)
        )
    out = io.BytesIO()
    resized.save(out, format="WEBP", **_WEBP)
    return out.getvalue()
