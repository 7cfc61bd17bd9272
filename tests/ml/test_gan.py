from __future__ import annotations

import pytest
import torch

from worker.ml.gan import PRESETS, Discriminator, GanConfig, Generator, get_preset


@pytest.mark.parametrize("name", ["tiny", "cpu-small", "paper"])
def test_generator_and_discriminator_shapes(name: str) -> None:
    cfg = PRESETS[name]
    generator, discriminator = Generator(cfg), Discriminator(cfg)
    z = torch.randn(3, cfg.latent_dim)
    images = generator(z)
    assert images.shape == (3, 3, cfg.image_size, cfg.image_size)
    assert images.abs().max() <= 1
    assert discriminator(images).shape == (3,)
    assert discriminator.features(images).shape == (3, discriminator.feature_dim)


def test_presets_sizes() -> None:
    assert PRESETS["tiny"].image_size in (16, 32)
    assert PRESETS["cpu-small"].image_size == 32
    assert PRESETS["paper"].image_size == 64


def test_bad_image_size_raises() -> None:
    with pytest.raises(ValueError, match="power of two"):
        GanConfig(image_size=24)


def test_unknown_preset_raises() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


def test_config_round_trips_through_dict() -> None:
    cfg = PRESETS["cpu-small"].with_overrides(steps=7)
    assert GanConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GanConfig fields"):
        GanConfig.from_dict({**cfg.to_dict(), "colour": 1})
