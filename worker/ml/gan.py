"""The GAN: generator and discriminator after Lampinen et al. (2017), with their configs.

The paper's generator maps z ~ N(0, I) through a fully connected layer to a small spatial map and
then repeatedly upsamples, pads, convolves and applies a leaky ReLU while stepping the channel
depth down. Its discriminator is a stack of strided convolutions with a real/fake logit on top.
Training loops live in pretrain.py and tuning.py; this module only holds the models and losses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GanConfig:
    """Architecture and pretraining hyper-parameters of one GAN."""

    image_size: int = 32
    """Side of the square images, a power of two times `start_size`."""
    latent_dim: int = 64
    """Size of the latent vector z ~ N(0, I)."""
    start_size: int = 4
    """Side of the spatial map the generator's linear layer produces."""
    g_channels: int = 64
    """Channels of the generator's first map; each upsampling block halves them."""
    d_channels: int = 32
    """Channels of the discriminator's first convolution; each later one doubles them."""
    min_channels: int = 16
    """Floor for the generator's channel depth at high resolutions."""
    g_batchnorm: bool = True
    """Batch norm in the generator's blocks (DCGAN's main stabiliser; off in the paper)."""
    steps: int = 2000
    """Pretraining steps (one discriminator and one generator update each)."""
    batch_size: int = 64
    lr_g: float = 2e-4
    """Adam learning rate for the generator."""
    lr_d: float = 1e-4
    """RMSProp learning rate for the discriminator."""
    adam_beta1: float = 0.5
    real_label: float = 0.9
    """One-sided label smoothing: the target for real images (fakes stay at 0)."""
    feature_matching: float = 1.0
    """Weight of feature matching (mean discriminator features of real vs fake) in L_G."""
    instance_noise: float = 0.05
    """Std of Gaussian noise added to the discriminator's inputs, annealed linearly to 0."""
    noise_anneal_steps: int | None = None
    """Steps over which the instance noise anneals; None: over `steps`. Fixing it keeps the
    schedule unchanged when a run is extended with more steps."""
    dataset_size: int = 20000
    """How many procedural landscapes to render as training data."""
    dataset_seed: int = 0
    seed: int = 0
    """Seed for weight initialisation, batch order and latent draws."""
    checkpoint_every: int = 500
    """Steps between checkpoints during pretraining (a final one is always written)."""

    def __post_init__(self) -> None:
        ratio = self.image_size / self.start_size
        if ratio < 2 or ratio != 2 ** round(math.log2(ratio)):
            raise ValueError(
                f"image_size {self.image_size} must be start_size {self.start_size} "
                "times a power of two (at least 2)"
            )

    @property
    def n_blocks(self) -> int:
        return round(math.log2(self.image_size // self.start_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GanConfig fields: {sorted(unknown)}")
        return cls(**data)

    def with_overrides(self, **changes: Any) -> GanConfig:
        return replace(self, **changes)


PRESETS: dict[str, GanConfig] = {
    # Runs the whole path in a couple of seconds for tests; images are blobs.
    "tiny": GanConfig(
        image_size=16,
        latent_dim=16,
        g_channels=32,
        d_channels=16,
        min_channels=8,
        steps=40,
        batch_size=32,
        lr_g=1e-3,
        lr_d=5e-4,
        dataset_size=512,
        checkpoint_every=20,
    ),
    # Recognisable 32 px landscapes after a few minutes on two CPU cores.
    "cpu-small": GanConfig(),
    # 64 px landscapes a site can show: the best samples of a pretraining sweep sized to about
    # 90 minutes on two CPU cores (bench/pretrain_sweep.py; docs/ml-notes.md). The shipped
    # weights were trained on a lent GPU for the same steps: `pirloop pretrain --preset
    # cpu-medium` repeats it on a CPU.
    "cpu-medium": GanConfig(
        image_size=64,
        g_channels=160,
        d_channels=40,
        min_channels=20,
        steps=6300,
        checkpoint_every=1575,
    ),
    # Larger images and models for a GPU.
    "paper": GanConfig(
        image_size=64,
        latent_dim=128,
        g_channels=512,
        d_channels=64,
        min_channels=32,
        steps=30000,
        batch_size=128,
        dataset_size=100000,
        checkpoint_every=2000,
    ),
}


def get_preset(name: str) -> GanConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None


class Generator(nn.Module):
    """z [N, latent_dim] -> images [N, 3, S, S] in [-1, 1]."""

    def __init__(self, cfg: GanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.fc = nn.Linear(cfg.latent_dim, cfg.g_channels * cfg.start_size**2)
        blocks: list[nn.Module] = []
        channels = cfg.g_channels
        for _ in range(cfg.n_blocks):
            out = max(channels // 2, cfg.min_channels)
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReflectionPad2d(1),
                nn.Conv2d(channels, out, 3, bias=not cfg.g_batchnorm),
            ]
            if cfg.g_batchnorm:
                blocks.append(nn.BatchNorm2d(out))
            blocks.append(nn.LeakyReLU(0.2))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, 3, 3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        h = F.leaky_relu(self.fc(z), 0.2).view(-1, cfg.g_channels, cfg.start_size, cfg.start_size)
        return torch.tanh(self.to_rgb(self.blocks(h)))


class Discriminator(nn.Module):
    """images [N, 3, S, S] in [-1, 1] -> real/fake logits [N]."""

    def __init__(self, cfg: GanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        channels, size = 3, cfg.image_size
        out = cfg.d_channels
        while size > 4:
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels, size = out, size // 2
            out = channels * 2
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = channels * size * size
        self.head = nn.Linear(self.feature_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional trunk's activations, flattened [N, feature_dim]."""
        return self.trunk(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def make_optimizers(
    cfg: GanConfig,
    generator: Generator,
    discriminator: Discriminator,
    *,
    lr_g: float | None = None,
    lr_d: float | None = None,
) -> tuple[torch.optim.Adam, torch.optim.RMSprop]:
    """Adam for the generator and RMSProp for the discriminator, as in the paper."""
    opt_g = torch.optim.Adam(
        generator.parameters(), lr=lr_g or cfg.lr_g, betas=(cfg.adam_beta1, 0.999)
    )
    opt_d = torch.optim.RMSprop(discriminator.parameters(), lr=lr_d or cfg.lr_d)
    return opt_g, opt_d


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, *, real_label: float
) -> torch.Tensor:
    """Binary cross-entropy with one-sided label smoothing (only real targets are softened)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def fool_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -log D(G(z)): strong gradients while D wins."""
    return F.softplus(-fake_logits).mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Squared distance between mean discriminator features of real and generated batches."""
    return (real_features.mean(0) - fake_features.mean(0)).pow(2).mean()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Generator range [-1, 1] -> image range [0, 1]."""
    return (images + 1) / 2


def from_unit(images: torch.Tensor) -> torch.Tensor:
    """Image range [0, 1] -> generator range [-1, 1]."""
    return images * 2 - 1
