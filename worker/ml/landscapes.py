"""Procedural landscape images: the "real data" the GAN is pretrained on.

The paper pretrained on photographs from image searches; shipping photographs is not an option,
so we paint landscapes with a few vectorised layers (sky, sun or moon, clouds, mountains with
snow, sea or plain, near ground with vegetation) under four times of day. The point is variety
in colour and layout, so that colour objectives have spread to select on, and scene labels that
the reference network for the `filter:` objectives can be trained on.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SUPPORTED_SIZES = (16, 32, 64, 128)
TIMES_OF_DAY = ("dawn", "day", "dusk", "night")
SCENES = ("mountains", "coast", "hills", "snow")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}

# Rendering in chunks bounds peak memory: each chunk holds a handful of [n, 3, H, W] layers.
_CHUNK = 1024

# Per time of day: sky at the top, sky at the horizon, sun/moon, clouds, light on the land.
_SKY_TOP = torch.tensor(
    [[0.38, 0.45, 0.78], [0.22, 0.48, 0.92], [0.25, 0.14, 0.42], [0.02, 0.03, 0.10]]
)
_SKY_HORIZON = torch.tensor(
    [[1.00, 0.72, 0.55], [0.72, 0.86, 1.00], [1.00, 0.45, 0.20], [0.10, 0.13, 0.28]]
)
_SUN = torch.tensor(
    [[1.00, 0.88, 0.55], [1.00, 1.00, 0.86], [1.00, 0.55, 0.25], [0.92, 0.92, 0.85]]
)
_CLOUD = torch.tensor(
    [[1.00, 0.80, 0.78], [0.96, 0.96, 0.98], [0.85, 0.45, 0.40], [0.22, 0.22, 0.28]]
)
_LIGHT = torch.tensor([0.85, 1.00, 0.72, 0.28])
_TIME_PROBS = torch.tensor([0.2, 0.4, 0.2, 0.2])

# Ground palettes: lush green, dry grass, autumn, heath; snow scenes use white.
_VEGETATION = torch.tensor(
    [[0.20, 0.50, 0.15], [0.58, 0.52, 0.25], [0.62, 0.34, 0.12], [0.35, 0.40, 0.22]]
)
_ROCK = torch.tensor([[0.42, 0.44, 0.52], [0.50, 0.42, 0.36], [0.30, 0.32, 0.38]])
_WATER = torch.tensor([0.10, 0.32, 0.52])
_SNOW = torch.tensor([0.93, 0.94, 0.99])


@dataclass(frozen=True)
class LandscapeLabels:
    """What each rendered image shows; indices into TIMES_OF_DAY and SCENES."""

    time_of_day: torch.Tensor
    scene: torch.Tensor


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _col(values: torch.Tensor) -> torch.Tensor:
    """[n] -> [n, 1, 1] so per-image parameters broadcast over an image."""
    return values.view(-1, 1, 1)


def _rgb(values: torch.Tensor) -> torch.Tensor:
    """[n, 3] -> [n, 3, 1, 1]."""
    return values.view(-1, 3, 1, 1)


def _jitter(gen: torch.Generator, colours: torch.Tensor, amount: float) -> torch.Tensor:
    return (colours + amount * (2 * torch.rand(colours.shape, generator=gen) - 1)).clamp(0, 1)


def _ridge(gen: torch.Generator, n: int, x: torch.Tensor, octaves: int) -> torch.Tensor:
    """A random 1-D profile in about [-1, 1] along x, [n, 1, W]: a few sines of rising frequency."""
    freqs = torch.arange(1, octaves + 1, dtype=torch.float32) * 1.3
    freqs = freqs * _uniform(gen, n * octaves, 0.7, 1.4).view(n, octaves)
    phases = _uniform(gen, n * octaves, 0, 2 * math.pi).view(n, octaves)
    amps = 1.0 / torch.arange(1, octaves + 1, dtype=torch.float32) ** 1.2
    waves = torch.sin(2 * math.pi * freqs[..., None] * x.view(1, 1, -1) + phases[..., None])
    profile = (amps.view(1, -1, 1) * waves).sum(1) / amps.sum()
    return profile.unsqueeze(1)


def _soft_below(y: torch.Tensor, line: torch.Tensor, softness: float) -> torch.Tensor:
    """1 where a pixel lies below (greater y than) the line, with an anti-aliased edge."""
    return torch.sigmoid((y - line) / softness)


def _over(base: torch.Tensor, colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return base * (1 - alpha.unsqueeze(1)) + colour * alpha.unsqueeze(1)


def _render_chunk(
    n: int, size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    soft = 0.6 / size
    ys = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y = ys.view(1, size, 1)
    x = ys.view(1, 1, size)

    tod = torch.multinomial(_TIME_PROBS, n, replacement=True, generator=gen)
    scene = torch.randint(0, len(SCENES), (n,), generator=gen)
    horizon = _col(_uniform(gen, n, 0.42, 0.72))
    light = _rgb(_LIGHT[tod].unsqueeze(1).expand(n, 3) * _uniform(gen, n, 0.85, 1.1).view(n, 1))

    # Sky: gradient from zenith to horizon with a random curve, colours jittered per image.
    top = _rgb(_jitter(gen, _SKY_TOP[tod], 0.09))
    bottom = _rgb(_jitter(gen, _SKY_HORIZON[tod], 0.09))
    gamma = _col(_uniform(gen, n, 0.6, 2.0)).unsqueeze(1)
    t = (y / horizon).clamp(0, 1).unsqueeze(1) ** gamma
    img = top * (1 - t) + bottom * t

    # Stars at night only: sparse bright pixels in the upper sky.
    stars = (torch.rand(n, size, size, generator=gen) > 0.985).float()
    stars = stars * (tod == 3).float().view(n, 1, 1) * (y < horizon * 0.8).float()
    img = _over(img, torch.ones(1, 3, 1, 1), stars * 0.8)

    # Sun (moon at night): low near dawn and dusk, high by day, sometimes hidden.
    sun_x = _col(_uniform(gen, n, 0.1, 0.9))
    high = (tod == 1) | (tod == 3)
    sun_y = torch.where(
        high, _uniform(gen, n, 0.08, 0.3), horizon.view(n) - _uniform(gen, n, 0.02, 0.18)
    )
    sun_r = _col(_uniform(gen, n, 0.04, 0.09))
    shown = _col((torch.rand(n, generator=gen) < 0.8).float())
    dist = torch.sqrt((x - sun_x) ** 2 + (y - _col(sun_y)) ** 2)
    sun_colour = _rgb(_SUN[tod])
    glow = torch.exp(-(dist**2) / (2 * (3 * sun_r) ** 2)) * 0.45 * shown * (y < horizon).float()
    img = img + sun_colour * glow.unsqueeze(1) * 0.6
    img = _over(img, sun_colour, torch.sigmoid((sun_r - dist) / soft) * shown)

    # Clouds: anisotropic blobs, from clear to overcast.
    cover = _col(_uniform(gen, n, -0.3, 1.0).clamp(min=0))
    density = torch.zeros(n, size, size)
    for _ in range(5):
        cx = _col(_uniform(gen, n, -0.1, 1.1))
        cy = _col(_uniform(gen, n, 0.05, 0.4)) * horizon / 0.6
        sx = _col(_uniform(gen, n, 0.08, 0.25))
        sy = _col(_uniform(gen, n, 0.02, 0.06))
        density = density + torch.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)
    cloud_alpha = (density * cover).clamp(0, 0.92)
    img = _over(img, _rgb(_jitter(gen, _CLOUD[tod], 0.05)), cloud_alpha)

    # Far range: tall mountains for mountain/snow scenes, low ridges otherwise.
    mountainous = (scene == 0) | (scene == 3)
    height = torch.where(mountainous, _uniform(gen, n, 0.15, 0.38), _uniform(gen, n, 0.0, 0.1))
    profile = _ridge(gen, n, x.view(-1), octaves=6)
    far_line = horizon - _col(height) * (0.55 + 0.45 * profile)
    rock = _jitter(gen, _ROCK[torch.randint(0, len(_ROCK), (n,), generator=gen)], 0.06)
    # Aerial perspective: distant rock takes on the colour of the sky near the horizon.
    haze = _uniform(gen, n, 0.15, 0.5).view(n, 1)
    rock = rock * (1 - haze) + bottom.view(n, 3) * haze
    shade = 1 - 0.25 * (x - sun_x).abs().unsqueeze(1)
    img = _over(img, _rgb(rock) * light * shade, _soft_below(y, far_line, soft))

    # Snow caps: always on snow scenes, sometimes on mountains.
    snowy = (scene == 3) | ((scene == 0) & (torch.rand(n, generator=gen) < 0.4))
    snow_line = horizon - _col(height) * _col(_uniform(gen, n, 0.45, 0.85))
    snow_alpha = _soft_below(y, far_line, soft) * (1 - _soft_below(y, snow_line, soft * 3))
    img = _over(img, _rgb(_SNOW).expand(n, 3, 1, 1) * light, snow_alpha * _col(snowy.float()))

    # Below the horizon: sea on coasts (and some lakes), a plain otherwise.
    watery = (scene == 1) | ((scene == 2) & (torch.rand(n, generator=gen) < 0.3))
    veg = _jitter(gen, _VEGETATION[torch.randint(0, len(_VEGETATION), (n,), generator=gen)], 0.07)
    veg = torch.where((scene == 3).view(n, 1), _SNOW.expand(n, 3) * 0.95, veg)
    water = _jitter(gen, _WATER.expand(n, 3), 0.08) * 0.6 + bottom.view(n, 3) * 0.4
    depth = ((y - horizon) / (1 - horizon)).clamp(0, 1).unsqueeze(1)
    water_img = _rgb(water) * (1 - 0.45 * depth)
    reflection = torch.exp(-((x - sun_x) ** 2) / (2 * (sun_r * 0.8) ** 2)) * shown
    water_img = water_img + sun_colour * (reflection * 0.5).unsqueeze(1) * (1 - depth)
    plain_img = _rgb(veg * 0.8 + bottom.view(n, 3) * 0.2) * (0.8 + 0.2 * depth)
    below = torch.where(_col(watery).unsqueeze(1), water_img, plain_img) * light
    img = _over(img, below, _soft_below(y, horizon, soft))

    # Near ground: rolling hills, or on coasts land filling one side down to the shore.
    near_profile = _ridge(gen, n, x.view(-1), octaves=4)
    near_base = horizon + _col(_uniform(gen, n, 0.04, 0.2)) * (1 - horizon)
    near_line = near_base + 0.06 * near_profile
    side = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    shore_x = _col(_uniform(gen, n, 0.25, 0.75))
    slope = _col(_uniform(gen, n, 0.4, 1.6))
    coast_line = horizon + 0.02 + slope * (_col(side) * (x - shore_x)).clamp(min=0)
    coast_line = coast_line + 0.02 * near_profile
    near_line = torch.where(_col(scene == 1), coast_line, near_line)
    texture = F.interpolate(
        torch.rand(n, 1, max(size // 4, 2), max(size // 4, 2), generator=gen),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    )
    near_depth = ((y - near_line) / (1 - near_line).clamp(min=0.05)).clamp(0, 1).unsqueeze(1)
    # Snow is smoother than grass and scrub.
    roughness = _col(torch.where(scene == 3, 0.12, 0.4)).unsqueeze(1)
    ground = _rgb(veg) * (1 - roughness / 2 + roughness * texture) * (1 - 0.35 * near_depth)
    img = _over(img, ground * light, _soft_below(y, near_line, soft))

    return img.clamp(0, 1), tod, scene


def render_landscapes_with_labels(
    n: int, *, size: int, seed: int
) -> tuple[torch.Tensor, LandscapeLabels]:
    """Render n landscapes [n, 3, size, size] in [0, 1] with their time-of-day and scene labels."""
    if size not in SUPPORTED_SIZES:
        raise ValueError(f"size must be one of {SUPPORTED_SIZES}, got {size}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    gen = torch.Generator().manual_seed(seed)
    images, tods, scenes = [], [], []
    for start in range(0, n, _CHUNK):
        img, tod, scene = _render_chunk(min(_CHUNK, n - start), size, gen)
        images.append(img)
        tods.append(tod)
        scenes.append(scene)
    if not images:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, 3, size, size), LandscapeLabels(empty, empty)
    return torch.cat(images), LandscapeLabels(torch.cat(tods), torch.cat(scenes))


def render_landscapes(n: int, *, size: int, seed: int) -> torch.Tensor:
    """Render n landscapes [n, 3, size, size] in [0, 1]; the same seed gives the same tensor."""
    images, _ = render_landscapes_with_labels(n, size=size, seed=seed)
    return images


class ImageFolderError(ValueError):
    """A folder of training images that is missing or holds no readable image."""


def load_image_folder(path: str | Path, *, size: int) -> torch.Tensor:
    """Load every image under path (recursively), centre-cropped square and resized to size.

    Files that are not images (by suffix: IMAGE_SUFFIXES) and images that cannot be read are
    skipped with a warning, so one bad upload does not stop pretraining; a folder with no
    readable image at all is an ImageFolderError.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(path)
    if not folder.is_dir():
        raise ImageFolderError(f"image folder {folder} does not exist or is not a directory")
    found = sorted(p for p in folder.rglob("*") if p.is_file())
    files = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        shown = ", ".join(str(p.relative_to(folder)) for p in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        logger.warning(
            "skipping %d file(s) that are not images (not %s): %s%s",
            len(others),
            "/".join(sorted(IMAGE_SUFFIXES)),
            shown,
            more,
        )
    tensors = []
    for file in files:
        try:
            with Image.open(file) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            logger.warning("skipping unreadable image %s: %s", file, exc)
            continue
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        # Pillow's resize filters the whole source area (it is antialiased when reducing), so
        # large photographs shrink without aliasing.
        image = image.crop((left, top, left + side, top + side)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        tensors.append(data.view(size, size, 3).permute(2, 0, 1).float() / 255)
    if not tensors:
        skipped = len(files) + len(others)
        detail = f" ({skipped} file(s) skipped)" if skipped else " (it is empty)"
        raise ImageFolderError(
            f"image folder {folder} holds no readable images{detail}; "
            f"give a folder of {', '.join(sorted(IMAGE_SUFFIXES))} files"
        )
    return torch.stack(tensors)


def dataset_fingerprint(images: torch.Tensor | None = None, *, source: str | None = None) -> str:
    """A short hash identifying the training data, stored in checkpoints.

    Hashing the pixels (quantised to bytes) catches any change in the data; `source` lets a
    caller fold in a description such as "landscapes:size=32:seed=0:n=20000".
    """
    digest = hashlib.sha256()
    if source is not None:
        digest.update(source.encode())
    if images is not None:
        quantised = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        digest.update(str(tuple(quantised.shape)).encode())
        digest.update(quantised.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
