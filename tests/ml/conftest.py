"""Shared tiny models for the ML tests: everything here trains in about a second."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.ml.gan import PRESETS, GanConfig
from worker.ml.pretrain import pretrain


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # The test machine shares two cores with other suites; more threads only add contention.
    torch.set_num_threads(min(torch.get_num_threads(), 2))


@pytest.fixture
def tiny_cfg() -> GanConfig:
    return PRESETS["tiny"]


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GAN pretrained once per test session; returns its checkpoint path."""
    out = tmp_path_factory.mktemp("tiny-gan")
    pretrain(PRESETS["tiny"], out_dir=out, device=torch.device("cpu"), progress=False)
    return out / "gan.pt"
