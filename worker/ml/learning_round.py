"""One learning round: an estimator fitted to logged images, the generator tuned against it, and
the estimator's predicted change. The production cycle (worker.jobs.cycle), the offline
experiment (worker.ml.experiment) and the benchmark (bench.learning_loop) all run this one
function, so the benchmark times what production runs and the three cannot drift apart.

Like every ML module it knows nothing of HTTP, SQL or Celery: tensors and configs in, models
and metrics out; progress goes to an optional callback that callers may write anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from worker.ml.estimator import EstimatorConfig, PirEstimator, train_estimator
from worker.ml.gan import Discriminator, Generator
from worker.ml.landscapes import render_landscapes
from worker.ml.progress import StepCallback
from worker.ml.sampling import generate_images
from worker.ml.tuning import TuningConfig, tune_generator

REAL_IMAGES = 2000
"""Real landscapes the discriminator keeps training on while the generator is tuned."""
ESTIMATE_SEED_BASE = 10**12
"""First latent seed of the tuned generator's sample that the predicted change is taken on,
far above the seeds of every served batch."""
PHASES = ("estimator", "tuning", "estimating")
"""The phases a round reports progress for, in order."""

RoundProgress = Callable[[str, int, int], None]
"""Called with (phase, step, total). Each phase in PHASES reports step 0 first, then steps about
every 2% of its total (worker.ml.progress.REPORT_FRACTION), and ends with (total, total); the
estimator's total is its epoch budget, also when it stops early."""


@dataclass(frozen=True)
class RoundConfig:
    """What one learning round trains and how it estimates the change it made."""

    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    """The PIR estimator, including its seed (callers vary it per round)."""
    tuning: TuningConfig = field(default_factory=TuningConfig)
    """Generator tuning, including its seed (callers vary it per round)."""
    real_images: int = REAL_IMAGES
    """Real landscapes rendered for the discriminator during tuning."""
    estimate_images: int | None = None
    """Images drawn from the tuned generator for the predicted change; None: as many as the
    reference images."""
    estimate_seed_base: int = ESTIMATE_SEED_BASE
    """The tuned generator's sample for a round with seed s is latent block s of
    estimate_images seeds from here (latent_block), so no two rounds share latents."""


@dataclass
class RoundResult:
    """A round's estimator, its metrics, and its prediction of the change tuning made."""

    estimator: PirEstimator
    """The estimator tuning optimised against, frozen."""
    estimator_metrics: dict[str, Any]
    tuning_metrics: dict[str, Any]
    tuned_images: torch.Tensor
    """[N, 3, H, W] in [0, 1], on the CPU: the tuned generator's sample the post mean is on."""
    estimated_pre_mean: float
    """The estimator's mean PIR on the reference images (what was served before)."""
    estimated_post_mean: float
    """Its mean PIR on tuned_images."""

    @property
    def estimated_delta(self) -> float:
        return self.estimated_post_mean - self.estimated_pre_mean

    def estimated_change(self) -> dict[str, float]:
        """The predicted change as the cycle records it (and the dashboard shows it)."""
        return {
            "estimated_pre_mean": self.estimated_pre_mean,
            "estimated_post_mean": self.estimated_post_mean,
            "estimated_delta": self.estimated_delta,
        }


def latent_block(base: int, index: int, size: int) -> range:
    """Seeds of block index of size consecutive latent seeds starting at base."""
    first = base + index * size
    return range(first, first + size)


def run_learning_round(
    generator: Generator,
    discriminator: Discriminator,
    cfg: RoundConfig,
    *,
    images: torch.Tensor,
    impressions: torch.Tensor,
    positives: torch.Tensor,
    reference_images: torch.Tensor,
    seed: int,
    device: torch.device,
    progress: bool = False,
    on_progress: RoundProgress | None = None,
) -> RoundResult:
    """Fit an estimator to images [N, 3, H, W] in [0, 1] with their impressions and positives
    [N], tune generator and discriminator in place against it, and predict the change: the
    estimator's mean on reference_images (the batch served before) against its mean on a fresh
    sample of the tuned generator (latent block seed, see RoundConfig.estimate_seed_base).

    progress shows rich progress bars (the CLI); on_progress hears each phase's progress.
    """
    estimator, estimator_metrics = train_estimator(
        images,
        impressions,
        positives,
        cfg.estimator,
        device=device,
        progress=progress,
        on_step=_phase(on_progress, "estimator"),
        discriminator=discriminator,
    )
    real = render_landscapes(
        cfg.real_images, size=generator.cfg.image_size, seed=generator.cfg.dataset_seed
    )
    tuning_metrics = tune_generator(
        generator,
        discriminator,
        estimator,
        real,
        cfg.tuning,
        device=device,
        progress=progress,
        on_step=_phase(on_progress, "tuning"),
    )
    del real

    count = len(reference_images) if cfg.estimate_images is None else cfg.estimate_images
    report = _phase(on_progress, "estimating") or _ignore
    total = len(reference_images) + count
    report(0, total)
    pre = float(estimator.predict(reference_images).mean())
    report(len(reference_images), total)
    tuned = generate_images(
        generator, latent_block(cfg.estimate_seed_base, seed, count), device=device
    )
    post = float(estimator.predict(tuned).mean())
    report(total, total)
    return RoundResult(
        estimator=estimator,
        estimator_metrics=estimator_metrics,
        tuning_metrics=tuning_metrics,
        tuned_images=tuned,
        estimated_pre_mean=pre,
        estimated_post_mean=post,
    )


def _phase(on_progress: RoundProgress | None, phase: str) -> StepCallback | None:
    if on_progress is None:
        return None

    def report(step: int, total: int) -> None:
        on_progress(phase, step, total)

    return report


def _ignore(step: int, total: int) -> None:
    return None
