"""A VGG16-shaped reference network whose filters define the simulated `filter:` objectives.

The paper computed objectives from VGG16 filters trained on ImageNet, a network and task
unrelated to its estimator's. We cannot download ImageNet weights, so by default we train a
narrow VGG16 (the same 13 convolutions in 5 stages, at 1/3 of the width, with batch norm so it
trains from scratch in about 4 minutes on one CPU thread) to classify our landscapes' time of
day and scene kind: a different task from the estimator's. It is cached under
worker/ml/assets (shipped) or, when missing, trained and cached under var/reference/.
Setting PIRLOOP_VGG16_WEIGHTS to a local torchvision VGG16 state dict uses real ImageNet VGG16
instead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worker.ml.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from worker.ml.landscapes import SCENES, TIMES_OF_DAY, render_landscapes_with_labels

logger = logging.getLogger(__name__)

VGG16_ENV = "PIRLOOP_VGG16_WEIGHTS"
ASSET_PATH = Path(__file__).parent / "assets" / "reference-vgg16.pt"
CACHE_PATH = Path("var") / "reference" / "reference-vgg16.pt"
# VGG16's layout: channels per conv, "M" for max-pooling.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_layer_names() -> list[str]:
    """conv1_1 ... conv5_3, the names `filter:` specs use."""
    names, stage, index = [], 1, 1
    for item in VGG16_LAYOUT:
        if item == "M":
            stage, index = stage + 1, 1
        else:
            names.append(f"conv{stage}_{index}")
            index += 1
    return names


@dataclass(frozen=True)
class ReferenceConfig:
    """The self-trained reference network and its training run."""

    width_divisor: int = 3
    """VGG16's channel counts are divided by this (3: 21 ... 170 channels). Not narrower: the
    paper's filter objectives take K = 20 filters of a layer, also in conv1 (64 // 3 = 21)."""
    image_size: int = 32
    train_images: int = 8000
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 1234
    """Different from every GAN dataset seed, so the reference sees other landscapes."""


class Vgg16Features(nn.Module):
    """VGG16's convolutional stack returning every conv layer's post-ReLU activations by name."""

    def __init__(self, width_divisor: int = 1, *, batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = int(item) // width_divisor
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=False))
            channels = out
        self.features = nn.Sequential(*layers)
        self.out_channels = channels

    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        names = iter(vgg16_layer_names())
        out: dict[str, torch.Tensor] = {}
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                out[next(names)] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class LandscapeVgg(nn.Module):
    """Narrow VGG16 (batch norm) classifying time of day x scene kind (16 classes)."""

    def __init__(self, cfg: ReferenceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.body = Vgg16Features(cfg.width_divisor, batchnorm=True)
        self.classifier = nn.Linear(self.body.out_channels, len(TIMES_OF_DAY) * len(SCENES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x * 2 - 1)
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1))

    def activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body.activations(images * 2 - 1)


class TorchvisionVgg(nn.Module):
    """ImageNet VGG16 from a local state-dict file, fed 64 px ImageNet-normalised input."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, path: Path) -> None:
        super().__init__()
        from torchvision import models

        net = models.vgg16(weights=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.features = net.features
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # 64 px keeps conv5 at a 4x4 map from our small images without the cost of 224 px.
        x = F.interpolate(images, size=64, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        names = iter(vgg16_layer_names())
        out: dict[str, torch.Tensor] = {}
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                out[next(names)] = x
        return out


@dataclass(frozen=True)
class Reference:
    """A loaded reference network and a description of where it came from."""

    network: nn.Module
    description: str

    def activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.network.activations(images)  # type: ignore[operator]


_loaded: dict[str, Reference] = {}


def load_reference(*, train_if_missing: bool = True) -> Reference:
    """The reference network `filter:` objectives use (cached per process)."""
    env_path = os.environ.get(VGG16_ENV)
    key = f"env:{env_path}" if env_path else "landscape-vgg"
    if key in _loaded:
        return _loaded[key]
    if env_path:
        path = Path(env_path)
        if not path.is_file():
            raise ValueError(f"{VGG16_ENV}={env_path} does not name a file")
        reference = Reference(TorchvisionVgg(path).eval(), f"torchvision VGG16 from {path}")
    else:
        reference = _landscape_reference(train_if_missing=train_if_missing)
    for param in reference.network.parameters():
        param.requires_grad_(False)
    _loaded[key] = reference
    return reference


def _landscape_reference(*, train_if_missing: bool) -> Reference:
    for path in (ASSET_PATH, CACHE_PATH):
        if path.is_file():
            ckpt = load_checkpoint(path, kind="reference")
            network = LandscapeVgg(ReferenceConfig(**ckpt["config"]))
            network.load_state_dict(ckpt["network"])
            accuracy = ckpt.get("metrics", {}).get("accuracy", float("nan"))
            return Reference(
                network.eval(),
                f"VGG16-shaped landscape classifier (width 1/{network.cfg.width_divisor}, "
                f"accuracy {accuracy:.2f}) from {path}",
            )
    if not train_if_missing:
        raise CheckpointError(f"no reference network at {ASSET_PATH} or {CACHE_PATH}")
    logger.info("training the reference network (cached at %s)", CACHE_PATH)
    network, metrics = train_reference(ReferenceConfig())
    save_checkpoint(CACHE_PATH, reference_checkpoint(network, metrics))
    return _landscape_reference(train_if_missing=False)


def train_reference(cfg: ReferenceConfig) -> tuple[LandscapeVgg, dict[str, float]]:
    """Train the landscape classifier on labels from the renderer; returns held-out accuracy."""
    torch.manual_seed(cfg.seed)
    holdout = cfg.train_images // 10
    images, labels = render_landscapes_with_labels(
        cfg.train_images + holdout, size=cfg.image_size, seed=cfg.seed
    )
    classes = labels.time_of_day * len(SCENES) + labels.scene
    network = LandscapeVgg(cfg)
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    order = torch.Generator().manual_seed(cfg.seed)
    x_train, y_train = images[:-holdout], classes[:-holdout]
    for _ in range(cfg.epochs):
        network.train()
        perm = torch.randperm(len(x_train), generator=order)
        for start in range(0, len(perm), cfg.batch_size):
            batch = perm[start : start + cfg.batch_size]
            loss = F.cross_entropy(network(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    network.eval()
    with torch.no_grad():
        accuracy = (network(images[-holdout:]).argmax(1) == classes[-holdout:]).float().mean()
    return network, {"accuracy": float(accuracy)}


def reference_checkpoint(network: LandscapeVgg, metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kind": "reference",
        "config": asdict(network.cfg),
        "step": network.cfg.epochs,
        "network": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "metrics": metrics,
    }
