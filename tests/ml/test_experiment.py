from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.ml.estimator import EstimatorConfig
from worker.ml.experiment import ExperimentConfig, run_experiment
from worker.ml.tuning import TuningConfig


def tiny_experiment(checkpoint: Path, **overrides: Any) -> ExperimentConfig:
    """color:blue on the tiny GAN with models small enough for a test."""
    base: dict[str, Any] = {
        "objective": "color:blue",
        "preset": "tiny",
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "images": 48,
        "impressions": 50,
        "real_images": 128,
        "estimator": EstimatorConfig(width=8, epochs=2),
        "tuning": TuningConfig(steps=3, batch_size=8, eval_latents=16),
    }
    return ExperimentConfig(**{**base, **overrides})


def test_tiny_experiment_writes_json_and_grid(tmp_path: Path, tiny_pretrained: Path) -> None:
    cfg = tiny_experiment(
        tiny_pretrained,
        rounds=2,
        json_path=str(tmp_path / "result.json"),
        grid_path=str(tmp_path / "grid.png"),
    )
    results = run_experiment(cfg, progress=False)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["objective"] == "color:blue"
    assert saved["images"] == 48
    assert saved["impressions"] == 50
    assert saved["steps"] == 3
    assert len(saved["rounds"]) == 2
    first, second = results["rounds"]
    for row in (first, second):
        assert 0 <= row["p_value"] <= 1
        assert 0 < row["pre_mean"] < 1
        assert row["diversity_pre"] > 0
        assert row["delta"] == row["post_mean"] - row["pre_mean"]
    # Round two's estimator is trained on both rounds' batches.
    assert first["estimator"]["n_train"] + first["estimator"]["n_holdout"] == 48
    assert second["estimator"]["n_train"] + second["estimator"]["n_holdout"] == 96
    assert (tmp_path / "grid.png").stat().st_size > 0
    # Overall: the original generator's batch against the last round's, on the same scale.
    overall = results["overall"]
    assert overall["pre_mean"] == first["pre_mean"]
    assert overall["post_mean"] == second["post_mean"]
    assert overall["delta"] == overall["post_mean"] - overall["pre_mean"]
    assert 0 <= overall["p_value"] <= 1
    assert overall["estimated_to_true_ratio"] == overall["estimated_delta"] / overall["delta"]
    # A second estimator that tuning never saw gives its own prediction of the change.
    assert isinstance(second["independent_estimated_delta"], float)
    assert second["independent_estimated_delta"] != second["estimated_delta"]
    assert overall["independent_to_true_ratio"] == pytest.approx(
        overall["independent_estimated_delta"] / overall["delta"]
    )


def test_experiment_refuses_an_empty_budget(tiny_pretrained: Path) -> None:
    for bad in ({"rounds": 0}, {"images": 1}, {"impressions": 0}):
        cfg = tiny_experiment(tiny_pretrained, **bad)
        with pytest.raises(ValueError, match="an experiment needs rounds >= 1"):
            run_experiment(cfg, progress=False)


def test_an_exploring_batch_is_shown_but_before_and_after_stay_typical(
    tiny_pretrained: Path,
) -> None:
    def run(scale: float) -> dict[str, Any]:
        cfg = tiny_experiment(
            tiny_pretrained, images=32, explore_scale=scale, independent_estimate=False
        )
        return run_experiment(cfg, progress=False)

    typical, exploring = run(1.0), run(3.0)
    assert typical["rounds"][0]["independent_estimated_delta"] is None
    # The "before" batch is drawn at scale 1 either way: the same images, the same true PIR.
    assert exploring["rounds"][0]["pre_mean"] == typical["rounds"][0]["pre_mean"]
    # What the estimator learnt from differs: the exploring batch's observed clicks.
    assert (
        exploring["rounds"][0]["estimator"]["heldout_mean_observed"]
        != typical["rounds"][0]["estimator"]["heldout_mean_observed"]
    )
