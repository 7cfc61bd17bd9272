from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from worker.ml.landscapes import (
    dataset_fingerprint,
    load_image_folder,
    render_landscapes,
    render_landscapes_with_labels,
)
from worker.ml.sampling import image_to_png


def test_same_seed_gives_same_images() -> None:
    first = render_landscapes(40, size=32, seed=7)
    second = render_landscapes(40, size=32, seed=7)
    assert torch.equal(first, second)


def test_different_seed_gives_different_images() -> None:
    first = render_landscapes(40, size=32, seed=7)
    other = render_landscapes(40, size=32, seed=8)
    assert (first - other).abs().mean() > 0.05


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shape_and_range(size: int) -> None:
    images = render_landscapes(8, size=size, seed=0)
    assert images.shape == (8, 3, size, size)
    assert images.min() >= 0
    assert images.max() <= 1


def test_colour_objectives_have_spread_to_select_on() -> None:
    images, labels = render_landscapes_with_labels(2000, size=32, seed=0)
    blue_share = images[:, 2].sum((1, 2)) / images.sum((1, 2, 3))
    assert blue_share.std() > 0.03
    # Every time of day and scene kind occurs.
    assert set(labels.time_of_day.tolist()) == {0, 1, 2, 3}
    assert set(labels.scene.tolist()) == {0, 1, 2, 3}
    # Night is darker than day.
    brightness = images.mean((1, 2, 3))
    assert brightness[labels.time_of_day == 3].mean() < brightness[labels.time_of_day == 1].mean()


def test_unsupported_size_raises() -> None:
    with pytest.raises(ValueError, match="size"):
        render_landscapes(2, size=48, seed=0)


def test_load_image_folder_skips_corrupt_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = render_landscapes(2, size=64, seed=3)
    for index, image in enumerate(images):
        (tmp_path / f"ok{index}.png").write_bytes(image_to_png(image))
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with caplog.at_level(logging.WARNING):
        loaded = load_image_folder(tmp_path, size=32)
    assert loaded.shape == (2, 3, 32, 32)
    assert "broken.png" in caplog.text


def test_load_image_folder_empty_or_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_image_folder(tmp_path, size=32)
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="nowhere"):
        load_image_folder(missing, size=32)


def test_fingerprint_tracks_content() -> None:
    images = render_landscapes(4, size=32, seed=0)
    assert dataset_fingerprint(images) == dataset_fingerprint(images.clone())
    changed = images.clone()
    changed[0, 0, 0, 0] = 1 - changed[0, 0, 0, 0]
    assert dataset_fingerprint(images) != dataset_fingerprint(changed)
    assert dataset_fingerprint(source="a") != dataset_fingerprint(source="b")
