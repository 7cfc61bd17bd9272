"""Tuning the generator towards higher estimated PIR while the discriminator keeps it realistic.

L_G = L_fool + w * L_PIR, with L_PIR = -E_z[R(G(z))] and R the frozen estimator (paper, sec. 2).
The discriminator keeps training on real images, so images stay near the data. The paper saw
partial collapse of the generator's diversity; we add two safeguards, both against a frozen copy
of the pretrained generator on the same latents:
  * anchor: mean squared pixel distance to the pretrained image of the same z, so each latent
    keeps its own composition while colours shift;
  * diversity: a hinge penalty when the batch's mean pairwise distance (diversity.py) falls
    below the pretrained batch's.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from worker.ml.device import flush_denormals
from worker.ml.diversity import mean_pairwise_distance, pooled_features
from worker.ml.estimator import PirEstimator
from worker.ml.gan import (
    Discriminator,
    Generator,
    discriminator_loss,
    fool_loss,
    from_unit,
    to_unit,
)
from worker.ml.progress import StepCallback, progress_bar

logger = logging.getLogger(__name__)


PIR_UNITS = ("pir", "batch-std")


@dataclass(frozen=True)
class TuningConfig:
    """Hyper-parameters of one tuning run (paper: w=1000, lr=1e-6, 50,000 steps)."""

    steps: int = 400
    lr: float = 2e-4
    """Adam learning rate for the generator."""
    d_lr: float = 5e-5
    """RMSProp learning rate for the discriminator, which keeps training on real images."""
    pir_weight: float = 0.75
    """w in L_G = L_fool + w * L_PIR, in pir_units. 0.75 batch standard deviations equals the
    earlier w = 15 in PIR units for a single-colour objective (spread ≈ 0.05)."""
    pir_units: str = "batch-std"
    """"pir": L_PIR is minus the mean predicted PIR. "batch-std": the same divided by the
    spread (standard deviation) of the predictions over the generator's images at the start,
    so an objective that varies little across images pushes the generator as hard as one
    that varies a lot; pir_weight then counts in those units."""
    anchor_weight: float = 5.0
    """Weight of the squared pixel distance (images in [0, 1]) to the pretrained generator."""
    diversity_weight: float = 10.0
    """Weight of the hinge on the batch's diversity dropping below the pretrained batch's."""
    realism_weight: float = 5.0
    """Weight of the squared MMD between the batch's and real images' reference-network
    features (the kernel of the realism measure, worker.ml.realism): keeps tuning from buying
    PIR with realism. Without it KID rose beyond its noise in 61 of 63 runs of the paper table
    (mean +59×10⁻³); at 5 it fell in every run measured with PIR gains kept, at 15 and above
    the gains shrank (docs/RESULTS.md, "Realism"). 0 leaves it out (and costs nothing)."""
    real_label: float = 0.9
    """One-sided label smoothing, as in pretraining."""
    batch_size: int = 64
    temperature: float | None = None
    """Estimator softmax temperature during tuning; None uses the estimator's own."""
    eval_latents: int = 256
    """Fixed latents on which the mean predicted PIR is tracked."""
    log_every: int = 10
    """Steps between entries of the loss curves."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pir_units not in PIR_UNITS:
            raise ValueError(f"pir_units must be one of {PIR_UNITS}, got {self.pir_units!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RealismGuard:
    """The realism measure's MMD² between each generated batch and a fixed pool of real
    images, differentiable in the generated images. The pool's features are computed once:
    against a pool of REAL_POOL images the estimate is less noisy than against one batch."""

    REAL_POOL = 512

    def __init__(self, real_images: torch.Tensor, device: torch.device) -> None:
        from worker.ml.realism import differentiable_features
        from worker.ml.reference_net import Reference, load_reference

        # A copy on the tuning device: the shared one stays where the objectives expect it.
        shared = load_reference()
        self.reference = Reference(copy.deepcopy(shared.network).to(device), shared.description)
        with torch.no_grad():
            self.real_features = differentiable_features(
                real_images[: self.REAL_POOL], self.reference
            )

    def loss(self, fake: torch.Tensor) -> torch.Tensor:
        from worker.ml.realism import differentiable_features, mmd2

        return mmd2(differentiable_features(fake, self.reference), self.real_features)


def tune_generator(
    generator: Generator,
    discriminator: Discriminator,
    estimator: PirEstimator,
    real_images: torch.Tensor,
    cfg: TuningConfig,
    *,
    device: torch.device,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Tune generator (and discriminator) in place; return loss curves and predicted PIRs.
    on_step hears (step, cfg.steps) now and then (worker.ml.progress.StepCallback)."""
    flush_denormals()
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    generator.to(device).train()
    discriminator.to(device).train()
    estimator.to(device).eval()
    for param in estimator.parameters():
        param.requires_grad_(False)
    anchor = copy.deepcopy(generator).eval()
    for param in anchor.parameters():
        param.requires_grad_(False)

    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.RMSprop(discriminator.parameters(), lr=cfg.d_lr)
    real_all = from_unit(real_images).to(device)
    eval_z = torch.randn(cfg.eval_latents, generator.latent_dim, generator=rng).to(device)
    start_pir, start_spread = _prediction_stats(generator, estimator, eval_z, cfg.temperature)
    pir_unit = max(start_spread, 1e-4) if cfg.pir_units == "batch-std" else 1.0

    realism_guard = RealismGuard(real_images, device) if cfg.realism_weight > 0 else None
    curves: dict[str, list[float]] = {
        k: [] for k in ("fool", "pir", "anchor", "diversity", "realism", "d")
    }
    started = time.perf_counter()
    with progress_bar("tune generator", cfg.steps, enabled=progress, on_step=on_step) as bar:
        for step in range(cfg.steps):
            index = torch.randint(0, real_all.shape[0], (cfg.batch_size,), generator=rng)
            z = torch.randn(cfg.batch_size, generator.latent_dim, generator=rng).to(device)
            real = real_all[index.to(device)]

            fake = generator(z)
            opt_d.zero_grad(set_to_none=True)
            d_loss = discriminator_loss(
                discriminator(real), discriminator(fake.detach()), real_label=cfg.real_label
            )
            d_loss.backward()
            opt_d.step()

            opt_g.zero_grad(set_to_none=True)
            images = to_unit(fake)
            l_fool = fool_loss(discriminator(fake))
            l_pir = -estimator.expected_pir(images, temperature=cfg.temperature).mean()
            loss = l_fool + cfg.pir_weight * l_pir / pir_unit
            l_anchor = torch.zeros((), device=device)
            l_div = torch.zeros((), device=device)
            if cfg.anchor_weight > 0 or cfg.diversity_weight > 0:
                with torch.no_grad():
                    anchor_images = to_unit(anchor(z))
                if cfg.anchor_weight > 0:
                    l_anchor = (images - anchor_images).pow(2).mean()
                    loss = loss + cfg.anchor_weight * l_anchor
                if cfg.diversity_weight > 0:
                    with torch.no_grad():
                        target = mean_pairwise_distance(pooled_features(anchor_images))
                    current = mean_pairwise_distance(pooled_features(images))
                    l_div = torch.relu(1 - current / target)
                    loss = loss + cfg.diversity_weight * l_div
            l_real = torch.zeros((), device=device)
            if realism_guard is not None:
                l_real = realism_guard.loss(images)
                loss = loss + cfg.realism_weight * l_real
            loss.backward()
            opt_g.step()

            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                curves["fool"].append(float(l_fool.detach()))
                curves["pir"].append(float(-l_pir.detach()))
                curves["anchor"].append(float(l_anchor.detach()))
                curves["diversity"].append(float(l_div.detach()))
                curves["realism"].append(float(l_real.detach()))
                curves["d"].append(float(d_loss.detach()))
            bar.advance(status=f"R {float(-l_pir.detach()):.3f} fool {float(l_fool.detach()):.2f}")

    end_pir, _ = _prediction_stats(generator, estimator, eval_z, cfg.temperature)
    seconds = time.perf_counter() - started
    logger.info("tuning: predicted PIR %.4f -> %.4f in %.1fs", start_pir, end_pir, seconds)
    return {
        "steps": cfg.steps,
        "seconds": seconds,
        "predicted_pir_start": start_pir,
        "predicted_pir_end": end_pir,
        "predicted_pir_gain": end_pir - start_pir,
        "predicted_pir_spread": start_spread,
        "loss_fool": curves["fool"],
        "predicted_pir": curves["pir"],
        "loss_anchor": curves["anchor"],
        "loss_diversity": curves["diversity"],
        "loss_realism": curves["realism"],
        "loss_d": curves["d"],
        "config": cfg.to_dict(),
    }


@torch.no_grad()
def _prediction_stats(
    generator: Generator, estimator: PirEstimator, z: torch.Tensor, temperature: float | None
) -> tuple[float, float]:
    """Mean and standard deviation of the predicted PIR of the generator's images for z."""
    was_training = generator.training
    generator.eval()
    try:
        images = to_unit(generator(z)).clamp(0, 1)
        predicted = estimator.expected_pir(images, temperature=temperature)
        return float(predicted.mean()), float(predicted.std())
    finally:
        generator.train(was_training)
