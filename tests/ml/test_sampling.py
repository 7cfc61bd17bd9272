from __future__ import annotations

from pathlib import Path

import torch

from worker.ml.checkpoints import load_checkpoint, load_gan
from worker.ml.sampling import (
    generate_images,
    image_to_png,
    latents_for_seeds,
    png_to_image,
    save_grid,
)

CPU = torch.device("cpu")


def test_latent_depends_only_on_its_seed() -> None:
    a = latents_for_seeds([5, 6, 7], 16)
    b = latents_for_seeds([7, 5], 16)
    assert torch.equal(a[0], b[1])
    assert torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    assert a.shape == (3, 16)


def test_generate_images_shape_range_and_determinism(tiny_pretrained: Path) -> None:
    cfg, generator, _ = load_gan(load_checkpoint(tiny_pretrained), device=CPU)
    images = generate_images(generator, [1, 2, 3], device=CPU, batch_size=2)
    assert images.shape == (3, 3, cfg.image_size, cfg.image_size)
    assert images.min() >= 0
    assert images.max() <= 1
    again = generate_images(generator, [3], device=CPU)
    assert torch.allclose(images[2], again[0], atol=1e-6)


def test_png_round_trip_and_grid(tmp_path: Path) -> None:
    image = torch.rand(3, 16, 16)
    restored = png_to_image(image_to_png(image))
    assert restored.shape == (3, 16, 16)
    assert (restored - image).abs().max() <= 0.5 / 255 + 1e-6
    path = save_grid(torch.rand(6, 3, 16, 16), tmp_path / "grid.png", nrow=3)
    grid = png_to_image(path.read_bytes())
    assert grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)


def test_a_wider_latent_scale_gives_more_varied_images(tiny_pretrained: Path) -> None:
    _, generator, _ = load_gan(load_checkpoint(tiny_pretrained), device=CPU)
    seeds = range(64)
    typical = generate_images(generator, seeds, device=CPU)
    wide = generate_images(generator, seeds, device=CPU, latent_scale=3.0)
    assert wide.shape == typical.shape
    assert not torch.equal(wide, typical)
    # Spread across the batch: per-pixel standard deviation over images.
    assert wide.std(0).mean() > typical.std(0).mean()
