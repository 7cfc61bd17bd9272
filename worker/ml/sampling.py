"""Images from a generator by integer seed, and PNG encoding for serving and grids.

Each served image is identified by (generator version, seed): the latent is a function of the
seed alone, so the database stores an integer instead of a vector and any image can be redrawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from worker.ml.gan import Generator, to_unit


def latents_for_seeds(seeds: Sequence[int], latent_dim: int) -> torch.Tensor:
    """[len(seeds), latent_dim] standard normal latents; row i depends only on seeds[i]."""
    rows = [
        torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(seed)))
        for seed in seeds
    ]
    if not rows:
        return torch.zeros(0, latent_dim)
    return torch.stack(rows)


@torch.no_grad()
def generate_images(
    generator: Generator,
    seeds: Sequence[int],
    *,
    device: torch.device,
    batch_size: int = 256,
    latent_scale: float = 1.0,
) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] on the CPU for the given seeds (generator in eval mode).

    latent_scale > 1 draws latents from a wider normal: more varied, less typical images (see
    ExperimentConfig.explore_scale for why a served batch may want that).
    """
    was_training = generator.training
    generator.eval()
    try:
        latents = latents_for_seeds(seeds, generator.latent_dim) * latent_scale
        chunks = [
            to_unit(generator(latents[start : start + batch_size].to(device))).clamp(0, 1).cpu()
            for start in range(0, len(latents), batch_size)
        ]
    finally:
        generator.train(was_training)
    size = generator.cfg.image_size
    return torch.cat(chunks) if chunks else torch.zeros(0, 3, size, size)


def image_to_png(image: torch.Tensor) -> bytes:
    """[3, H, W] in [0, 1] -> PNG bytes."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    array = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def png_to_image(data: bytes) -> torch.Tensor:
    """PNG (or any PIL-readable) bytes -> [3, H, W] float in [0, 1]."""
    with Image.open(io.BytesIO(data)) as opened:
        array = np.asarray(opened.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, *, padding: int = 2) -> Path:
    """Write images [N, 3, H, W] in [0, 1] as one PNG grid."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.detach().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    target.write_bytes(image_to_png(grid))
    return target
