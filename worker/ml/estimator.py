"""The PIR estimator: a CNN predicting an image's positive interaction rate as a softmax over bins.

As in the paper, predicting a distribution over K bins trains better than regressing a scalar.
Unlike the paper we train on soft targets: the Beta posterior of each image's PIR given its
positives out of impressions, spread over the bins. Trained this way, the softmax expectation at
temperature 1 estimates the posterior mean, so estimates are calibrated; the paper lowered the
temperature at use time and found its estimates consistently below the true gains.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch import nn

from worker.ml.checkpoints import FORMAT_VERSION, CheckpointError
from worker.ml.device import flush_denormals
from worker.ml.gan import Discriminator, GanConfig
from worker.ml.progress import StepCallback, progress_bar

logger = logging.getLogger(__name__)

BACKBONES = ("small-cnn", "discriminator", "resnet18", "inception_v3")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EstimatorConfig:
    """How the PIR estimator is built and trained."""

    backbone: str = "small-cnn"
    """"small-cnn" (trained from scratch), "discriminator" (the GAN discriminator's trunk,
    fine-tuned), or the torchvision "resnet18" / "inception_v3" (ImageNet-style backbones)."""
    weights_path: str | None = None
    """Local state-dict file for the torchvision backbones; never downloaded. None: random init."""
    bins: int = 20
    """K, the number of equal-width PIR bins over [0, 1]."""
    temperature: float = 1.0
    """Softmax temperature at use time. 1.0 is calibrated with the soft targets (measured in the
    calibration table); values below 1 sharpen towards the modal bin, as in the paper."""
    soft_targets: bool = True
    """Train on each image's Beta(positives+1, negatives+1) mass per bin; False: one-hot bin of
    the observed PIR."""
    width: int = 32
    """Channels of the small CNN's first layer (doubled twice)."""
    epochs: int = 40
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    holdout_fraction: float = 0.2
    """Share of images held out for early stopping and the reported metrics."""
    patience: int = 8
    """Epochs without held-out improvement before stopping early."""
    calibration_bins: int = 10
    """Equal-count groups of held-out predictions in the calibration table."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose from {BACKBONES}")
        if self.bins < 2:
            raise ValueError(f"bins must be at least 2, got {self.bins}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EstimatorConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class _SmallCnn(nn.Module):
    """Three strided conv stages and a 4x4 spatial summary, so left/right layouts stay visible."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width * 2, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width * 2, width * 4, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.out_dim = width * 4 * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)


class _DiscriminatorTrunk(nn.Module):
    def __init__(self, discriminator: Discriminator) -> None:
        super().__init__()
        self.trunk = copy.deepcopy(discriminator.trunk)
        self.out_dim = discriminator.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x * 2 - 1).flatten(1)


class _TorchvisionTrunk(nn.Module):
    """resnet18 / inception_v3 without their classifier, fed ImageNet-normalised resized input."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, name: str, weights_path: str | None) -> None:
        super().__init__()
        from torchvision import models

        net: nn.Module
        if name == "resnet18":
            net, self.input_size = models.resnet18(weights=None), 224
        else:
            net = models.inception_v3(weights=None, aux_logits=False, init_weights=False)
            self.input_size = 299
        if weights_path is not None:
            path = Path(weights_path)
            if not path.is_file():
                raise ValueError(f"backbone weights file {path} does not exist")
            state = torch.load(path, map_location="cpu", weights_only=True)
            # ImageNet checkpoints carry the classifier (and inception's aux head); we drop both.
            state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
            missing, _ = net.load_state_dict(state, strict=False)
            if [k for k in missing if not k.startswith("fc.")]:
                raise ValueError(f"{path} does not hold {name} weights (missing {missing[:3]})")
        classifier = net.fc
        assert isinstance(classifier, nn.Linear)
        self.out_dim = classifier.in_features
        net.fc = nn.Identity()
        self.net = net
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


class PirEstimator(nn.Module):
    """images [N, 3, H, W] in [0, 1] -> logits over cfg.bins PIR bins."""

    bin_centres: torch.Tensor

    def __init__(self, cfg: EstimatorConfig, *, discriminator: Discriminator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        trunk: nn.Module
        if cfg.backbone == "small-cnn":
            trunk = _SmallCnn(cfg.width)
        elif cfg.backbone == "discriminator":
            if discriminator is None:
                raise ValueError("the 'discriminator' backbone needs a discriminator to copy")
            trunk = _DiscriminatorTrunk(discriminator)
            # Kept so a checkpoint can rebuild the trunk's shape without the GAN at hand.
            self.gan_config: dict[str, Any] | None = discriminator.cfg.to_dict()
        else:
            trunk = _TorchvisionTrunk(cfg.backbone, cfg.weights_path)
        self.trunk = trunk
        out_dim = int(trunk.out_dim)
        self.head = nn.Sequential(
            nn.Linear(out_dim, 128), nn.LeakyReLU(0.2), nn.Linear(128, cfg.bins)
        )
        edges = torch.linspace(0, 1, cfg.bins + 1)
        self.register_buffer("bin_centres", (edges[:-1] + edges[1:]) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def expected_pir(self, x: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        """Differentiable bin-centre expectation [N] (what tuning maximises)."""
        temp = self.cfg.temperature if temperature is None else temperature
        probs = F.softmax(self(x) / temp, dim=1)
        return probs @ self.bin_centres

    @torch.no_grad()
    def predict(
        self, x: torch.Tensor, *, temperature: float | None = None, batch_size: int = 512
    ) -> torch.Tensor:
        """Estimated PIR [N] for images in [0, 1], in eval mode, on the CPU."""
        was_training = self.training
        self.eval()
        device = self.bin_centres.device
        try:
            out = [
                self.expected_pir(x[i : i + batch_size].to(device), temperature=temperature).cpu()
                for i in range(0, len(x), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)


def bin_targets(
    impressions: torch.Tensor, positives: torch.Tensor, bins: int, *, soft: bool
) -> torch.Tensor:
    """[N, bins] target distributions from (possibly fractional) positives out of impressions."""
    n = impressions.double().clamp(min=0).numpy()
    s = np.clip(positives.double().numpy(), 0, n)
    edges = np.linspace(0, 1, bins + 1)
    if soft:
        cdf = scipy_stats.beta.cdf(edges[None, :], s[:, None] + 1, (n - s)[:, None] + 1)
        mass = np.diff(cdf, axis=1)
    else:
        rate = np.where(n > 0, s / np.maximum(n, 1e-9), 0.5)
        index = np.minimum((rate * bins).astype(int), bins - 1)
        mass = np.eye(bins)[index]
    mass = mass / mass.sum(1, keepdims=True)
    return torch.from_numpy(mass).float()


def train_estimator(
    images: torch.Tensor,
    impressions: torch.Tensor,
    positives: torch.Tensor,
    cfg: EstimatorConfig,
    *,
    device: torch.device,
    progress: bool = True,
    on_step: StepCallback | None = None,
    discriminator: Discriminator | None = None,
) -> tuple[PirEstimator, dict[str, Any]]:
    """Fit an estimator on images with their impressions and positives; return it and metrics.

    The held-out split drives early stopping (the best epoch's weights are kept) and all the
    reported metrics: MAE and correlation against observed PIR, and a calibration table.
    on_step hears (epoch, cfg.epochs) now and then (worker.ml.progress.StepCallback).
    """
    n = images.shape[0]
    if impressions.shape != (n,) or positives.shape != (n,):
        raise ValueError("impressions and positives must be vectors with one entry per image")
    if (impressions <= 0).any():
        raise ValueError("every image needs at least one impression")
    flush_denormals()
    torch.manual_seed(cfg.seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_holdout = max(1, round(n * cfg.holdout_fraction))
    hold_idx, train_idx = order[:n_holdout], order[n_holdout:]
    if len(train_idx) == 0:
        raise ValueError(f"{n} images are too few to hold out {cfg.holdout_fraction:.0%}")
    targets = bin_targets(impressions, positives, cfg.bins, soft=cfg.soft_targets)
    observed = (positives.double() / impressions.double()).float()

    estimator = PirEstimator(cfg, discriminator=discriminator).to(device)
    optimizer = torch.optim.AdamW(estimator.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    x_train, t_train = images[train_idx].to(device), targets[train_idx].to(device)
    x_hold, t_hold = images[hold_idx].to(device), targets[hold_idx].to(device)
    shuffle = torch.Generator().manual_seed(cfg.seed + 1)

    train_curve: list[float] = []
    holdout_curve: list[float] = []
    best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
    with progress_bar("train estimator", cfg.epochs, enabled=progress, on_step=on_step) as bar:
        for epoch in range(cfg.epochs):
            estimator.train()
            perm = torch.randperm(len(train_idx), generator=shuffle).to(device)
            total = 0.0
            for start in range(0, len(perm), cfg.batch_size):
                batch = perm[start : start + cfg.batch_size]
                loss = _soft_cross_entropy(estimator(x_train[batch]), t_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            scheduler.step()
            train_curve.append(total / len(perm))
            holdout_loss = _evaluate_loss(estimator, x_hold, t_hold, cfg.batch_size)
            holdout_curve.append(holdout_loss)
            bar.advance(status=f"train {train_curve[-1]:.3f} holdout {holdout_loss:.3f}")
            if holdout_loss < best_loss - 1e-4:
                best_loss, best_epoch, stale = holdout_loss, epoch, 0
                best_state = copy.deepcopy(estimator.state_dict())
            else:
                stale += 1
                if stale >= cfg.patience:
                    logger.info("estimator stopped early after epoch %d", epoch + 1)
                    break
    if best_state is not None:
        estimator.load_state_dict(best_state)
    estimator.eval()
    for param in estimator.parameters():
        param.requires_grad_(False)

    predicted = estimator.predict(images[hold_idx])
    held_observed = observed[hold_idx]
    metrics: dict[str, Any] = {
        "n_train": len(train_idx),
        "n_holdout": n_holdout,
        "epochs_run": len(train_curve),
        "best_epoch": best_epoch + 1,
        "train_loss": train_curve,
        "holdout_loss": holdout_curve,
        "heldout_mae": float((predicted - held_observed).abs().mean()),
        "heldout_corr": _pearson(predicted, held_observed),
        "heldout_mean_predicted": float(predicted.mean()),
        "heldout_mean_observed": float(held_observed.mean()),
        "temperature": cfg.temperature,
        **calibration_report(predicted, held_observed, groups=cfg.calibration_bins),
    }
    logger.info(
        "estimator: held-out MAE %.4f, corr %.3f, calibration error %.4f",
        metrics["heldout_mae"],
        metrics["heldout_corr"],
        metrics["calibration_error"],
    )
    return estimator, metrics


def calibration_report(
    predicted: torch.Tensor, observed: torch.Tensor, *, groups: int = 10
) -> dict[str, Any]:
    """Calibration table over equal-count groups of predictions, and its weighted mean error.

    Equal-count groups suit PIRs that sit in a narrow range, where equal-width bins would leave
    most bins empty. Observed values are noisy per image, but their group mean is not.
    """
    order = torch.argsort(predicted)
    table: list[dict[str, float]] = []
    weighted_error = 0.0
    for chunk in torch.tensor_split(order, min(groups, len(order))):
        if len(chunk) == 0:
            continue
        pred, obs = predicted[chunk], observed[chunk]
        row = {
            "bin_low": float(pred.min()),
            "bin_high": float(pred.max()),
            "predicted_mean": float(pred.mean()),
            "observed_mean": float(obs.mean()),
            "count": len(chunk),
        }
        table.append(row)
        weighted_error += abs(row["predicted_mean"] - row["observed_mean"]) * len(chunk)
    return {"calibration": table, "calibration_error": weighted_error / max(len(order), 1)}


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


@torch.no_grad()
def _evaluate_loss(
    estimator: PirEstimator, x: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> float:
    estimator.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        logits = estimator(x[start : start + batch_size])
        total += float(_soft_cross_entropy(logits, targets[start : start + batch_size])) * len(
            logits
        )
    return total / len(x)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def estimator_checkpoint(
    estimator: PirEstimator,
    *,
    metrics: dict[str, Any] | None = None,
    fingerprint: str = "",
    step: int = 0,
) -> dict[str, Any]:
    """An "estimator" checkpoint; a discriminator backbone's GanConfig is stored to rebuild it."""
    gan_config = None
    if isinstance(estimator.trunk, _DiscriminatorTrunk):
        gan_config = _discriminator_config(estimator)
    scalars = {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float | str)}
    return {
        "format_version": FORMAT_VERSION,
        "kind": "estimator",
        "config": estimator.cfg.to_dict(),
        "step": step,
        "estimator": {k: v.detach().cpu().clone() for k, v in estimator.state_dict().items()},
        "gan_config": gan_config,
        "fingerprint": fingerprint,
        "metrics": scalars,
    }


def load_estimator(ckpt: dict[str, Any], *, device: torch.device) -> PirEstimator:
    if ckpt.get("kind") != "estimator":
        raise CheckpointError(f"expected an 'estimator' checkpoint, got {ckpt.get('kind')!r}")
    try:
        cfg = EstimatorConfig.from_dict(dict(ckpt["config"]))
        # Weights come from the checkpoint, so the original backbone file is not needed again.
        cfg = EstimatorConfig.from_dict({**cfg.to_dict(), "weights_path": None})
        discriminator = None
        if cfg.backbone == "discriminator":
            discriminator = Discriminator(GanConfig.from_dict(dict(ckpt["gan_config"])))
        estimator = PirEstimator(cfg, discriminator=discriminator)
        estimator.load_state_dict(ckpt["estimator"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"estimator checkpoint does not match the model: {exc}") from exc
    estimator.to(device).eval()
    for param in estimator.parameters():
        param.requires_grad_(False)
    return estimator


def _discriminator_config(estimator: PirEstimator) -> dict[str, Any]:
    cfg = getattr(estimator, "gan_config", None)
    if cfg is None:
        raise ValueError("a discriminator-backed estimator must carry its gan_config")
    return dict(cfg)
