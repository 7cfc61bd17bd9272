from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.ml.checkpoints import (
    CheckpointError,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    gan_checkpoint,
    load_checkpoint,
    load_gan,
    save_checkpoint,
)
from worker.ml.gan import Discriminator, GanConfig, Generator, make_optimizers
from worker.ml.pretrain import pretrain

CPU = torch.device("cpu")


def _gan_ckpt(cfg: GanConfig) -> tuple[dict, Generator]:
    torch.manual_seed(0)
    generator, discriminator = Generator(cfg), Discriminator(cfg)
    opt_g, opt_d = make_optimizers(cfg, generator, discriminator)
    return gan_checkpoint(cfg, generator, discriminator, opt_g, opt_d, 5, "abc"), generator


def test_bytes_round_trip(tiny_cfg: GanConfig) -> None:
    ckpt, generator = _gan_ckpt(tiny_cfg)
    restored = checkpoint_from_bytes(checkpoint_to_bytes(ckpt))
    assert restored["step"] == 5
    assert restored["fingerprint"] == "abc"
    cfg, loaded_g, _ = load_gan(restored, device=CPU)
    assert cfg == tiny_cfg
    z = torch.randn(2, cfg.latent_dim)
    generator.eval()
    loaded_g.eval()
    assert torch.equal(generator(z), loaded_g(z))


def test_file_round_trip(tmp_path: Path, tiny_cfg: GanConfig) -> None:
    ckpt, _ = _gan_ckpt(tiny_cfg)
    path = save_checkpoint(tmp_path / "sub" / "gan.pt", ckpt)
    loaded = load_checkpoint(path, kind="gan")
    for key, value in ckpt["generator"].items():
        assert torch.equal(loaded["generator"][key], value)


def test_corrupt_bytes_raise() -> None:
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint_from_bytes(b"\x00garbage" * 10)


def test_truncated_checkpoint_raises(tiny_cfg: GanConfig) -> None:
    data = checkpoint_to_bytes(_gan_ckpt(tiny_cfg)[0])
    with pytest.raises(CheckpointError):
        checkpoint_from_bytes(data[: len(data) // 2])


def test_wrong_format_or_kind_raises(tmp_path: Path, tiny_cfg: GanConfig) -> None:
    ckpt, _ = _gan_ckpt(tiny_cfg)
    with pytest.raises(CheckpointError, match="format_version"):
        checkpoint_from_bytes(_bumped(ckpt))
    with pytest.raises(CheckpointError, match="expected 'estimator'"):
        checkpoint_from_bytes(checkpoint_to_bytes(ckpt), kind="estimator")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    not_a_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_dict)
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_checkpoint(not_a_dict)


def _bumped(ckpt: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({**ckpt, "format_version": 99}, buffer)
    return buffer.getvalue()


def test_pretraining_resumes_exactly(tmp_path: Path, tiny_cfg: GanConfig) -> None:
    cfg = tiny_cfg.with_overrides(
        steps=30, checkpoint_every=15, dataset_size=256, noise_anneal_steps=30
    )
    straight = tmp_path / "straight"
    pretrain(cfg, out_dir=straight, device=CPU, progress=False)
    split = tmp_path / "split"
    pretrain(cfg.with_overrides(steps=15), out_dir=split, device=CPU, progress=False)
    metrics = pretrain(cfg, out_dir=split, device=CPU, progress=False)
    assert metrics["steps_run"] == 15
    a = load_checkpoint(straight / "gan.pt")
    b = load_checkpoint(split / "gan.pt")
    assert a["step"] == b["step"] == 30
    for key, value in a["generator"].items():
        assert torch.equal(b["generator"][key], value), key
    assert (split / "samples.png").stat().st_size > 0


def test_resume_refuses_other_config(tmp_path: Path, tiny_cfg: GanConfig) -> None:
    cfg = tiny_cfg.with_overrides(steps=2, dataset_size=64)
    pretrain(cfg, out_dir=tmp_path, device=CPU, progress=False)
    with pytest.raises(CheckpointError, match="different config"):
        pretrain(cfg.with_overrides(latent_dim=8), out_dir=tmp_path, device=CPU, progress=False)
