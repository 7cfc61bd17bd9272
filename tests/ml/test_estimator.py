from __future__ import annotations

import pytest
import torch

from worker.ml.checkpoints import checkpoint_from_bytes, checkpoint_to_bytes
from worker.ml.estimator import (
    EstimatorConfig,
    PirEstimator,
    bin_targets,
    estimator_checkpoint,
    load_estimator,
    train_estimator,
)
from worker.ml.gan import PRESETS, Discriminator
from worker.ml.landscapes import render_landscapes
from worker.sim.objectives import load_objective, observe_binomial

CPU = torch.device("cpu")


@pytest.mark.parametrize("backbone", ["small-cnn", "discriminator"])
def test_estimator_output_shapes(backbone: str) -> None:
    cfg = EstimatorConfig(backbone=backbone, bins=7, width=8)
    estimator = PirEstimator(cfg, discriminator=Discriminator(PRESETS["tiny"]))
    images = torch.rand(4, 3, 16, 16)
    assert estimator(images).shape == (4, 7)
    predictions = estimator.predict(images)
    assert predictions.shape == (4,)
    assert ((predictions > 0) & (predictions < 1)).all()


def test_soft_targets_are_distributions_centred_on_the_rate() -> None:
    targets = bin_targets(torch.tensor([100.0, 10.0]), torch.tensor([30.0, 7.5]), 10, soft=True)
    assert targets.sum(1).tolist() == pytest.approx([1.0, 1.0])
    centres = (torch.arange(10) + 0.5) / 10
    assert float(targets[0] @ centres) == pytest.approx(31 / 102, abs=0.01)
    # Fewer impressions: a wider target.
    assert targets[1].max() < targets[0].max()


@pytest.mark.slow
def test_estimator_recovers_blue_share() -> None:
    images = render_landscapes(1200, size=16, seed=11)
    true_pir = load_objective("color:blue")(images)
    impressions = torch.full((1200,), 200.0)
    positives = observe_binomial(true_pir, 200, generator=torch.Generator().manual_seed(0))
    cfg = EstimatorConfig(width=16, epochs=25, patience=25, batch_size=64, seed=0)
    estimator, metrics = train_estimator(
        images, impressions, positives, cfg, device=CPU, progress=False
    )
    fresh = render_landscapes(400, size=16, seed=12)
    fresh_true = load_objective("color:blue")(fresh)
    predicted = estimator.predict(fresh)
    corr = torch.corrcoef(torch.stack([predicted, fresh_true]))[0, 1]
    assert corr > 0.9
    # Calibrated: the mean estimate is close to the mean truth and the table reports it.
    assert abs(float(predicted.mean() - fresh_true.mean())) < 0.015
    assert metrics["heldout_corr"] > 0.7
    assert metrics["heldout_mae"] < 0.05
    assert len(metrics["calibration"]) == cfg.calibration_bins
    assert sum(row["count"] for row in metrics["calibration"]) == metrics["n_holdout"]
    assert metrics["calibration_error"] < 0.02
    assert len(metrics["train_loss"]) == metrics["epochs_run"]
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]

    restored = load_estimator(
        checkpoint_from_bytes(checkpoint_to_bytes(estimator_checkpoint(estimator))), device=CPU
    )
    assert torch.allclose(restored.predict(fresh), predicted)


def test_training_rejects_images_without_impressions() -> None:
    with pytest.raises(ValueError, match="impression"):
        train_estimator(
            torch.rand(4, 3, 16, 16),
            torch.tensor([1.0, 0.0, 1.0, 1.0]),
            torch.zeros(4),
            EstimatorConfig(),
            device=CPU,
            progress=False,
        )
