"""Shared tiny models for the ML tests: everything here trains in about a second."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.ml.gan import PRESETS, GanConfig
from worker.ml.pretrain import pretrain


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # Tiny models gain nothing from threads, and on a busy machine two torch threads waiting on
    # each other ran a pretraining step 7x slower than one thread did.
    torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg() -> GanConfig:
    return PRESETS["tiny"]


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GAN pretrained once per test session; returns its checkpoint path."""
    out = tmp_path_factory.mktemp("tiny-gan")
    pretrain(PRESETS["tiny"], out_dir=out, device=torch.device("cpu"), progress=False)
    return out / "gan.pt"
