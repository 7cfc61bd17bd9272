"""`pirloop pretrain --images DIR`: pretraining on a folder of one's own images, through the
real command (tiny preset, a few steps)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from worker.ml.checkpoints import load_checkpoint
from worker.ml.experiment import pretrained_checkpoint
from worker.ml.gan import get_preset
from worker.ml.landscapes import dataset_fingerprint, load_image_folder, render_landscapes
from worker.ml.sampling import image_to_png

PIRLOOP = str(Path(sys.executable).parent / "pirloop")
ENV = {**os.environ, "PIRLOOP_TORCH_THREADS": "1", "COLUMNS": "200"}


def run_pretrain(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PIRLOOP, "pretrain", "--preset", "tiny", "--steps", "4", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env=ENV,
    )


def make_folder(folder: Path) -> None:
    """Six landscapes as PNGs of another size and shape than the preset's (one in a
    subfolder, one as JPEG), a corrupt PNG and a text file."""
    (folder / "more").mkdir(parents=True)
    for index, image in enumerate(render_landscapes(6, size=64, seed=5)):
        png = Image.open(io.BytesIO(image_to_png(image))).resize((80, 64))
        if index == 4:
            png.save(folder / "more" / f"photo{index}.png")
        elif index == 5:
            png.save(folder / f"photo{index}.JPG", format="JPEG")
        else:
            png.save(folder / f"photo{index}.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    (folder / "notes.txt").write_text("not an image\n")


def test_pretrains_on_a_folder_skipping_corrupt_and_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    make_folder(folder)
    result = run_pretrain("--images", str(folder), "--out", "out", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    flat = " ".join(output.split())
    assert "corrupt.png" in flat
    assert "notes.txt" in flat
    assert "6 images from" in flat

    checkpoint = load_checkpoint(tmp_path / "out" / "gan.pt", kind="gan")
    assert checkpoint["step"] == 4
    # Trained on the folder's six images, not on the landscapes.
    images = load_image_folder(folder, size=get_preset("tiny").image_size)
    assert images.shape == (6, 3, 16, 16)
    assert checkpoint["fingerprint"] == dataset_fingerprint(images)
    assert (tmp_path / "out" / "samples.png").stat().st_size > 0

    # The service and the experiment take the checkpoint as PIRLOOP_PRESET / --preset.
    loaded, source = pretrained_checkpoint(
        str(tmp_path / "out" / "gan.pt"), device=torch.device("cpu"), progress=False
    )
    assert source == str(tmp_path / "out" / "gan.pt")
    assert loaded["fingerprint"] == checkpoint["fingerprint"]


def test_default_out_is_kept_apart_from_the_landscapes_cache(tmp_path: Path) -> None:
    folder = tmp_path / "holiday"
    make_folder(folder)
    result = run_pretrain("--images", str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "var" / "pretrained" / "tiny-holiday" / "gan.pt").is_file()
    assert not (tmp_path / "var" / "pretrained" / "tiny").exists()


@pytest.mark.parametrize("contents", ["empty", "unreadable"])
def test_a_folder_without_readable_images_is_a_one_line_error(
    tmp_path: Path, contents: str
) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    if contents == "unreadable":
        (folder / "broken.jpg").write_bytes(b"no jpeg here")
        (folder / "readme.txt").write_text("hello")
    result = run_pretrain("--images", str(folder), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert f"image folder {folder} holds no readable images" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_pretrain("--images", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Error: image folder" in result.stderr
    assert "nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_checkpoint_preset_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        pretrained_checkpoint(str(tmp_path / "nope.pt"), device=torch.device("cpu"), progress=False)
