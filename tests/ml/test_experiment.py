from __future__ import annotations

import json
from pathlib import Path

from worker.ml.estimator import EstimatorConfig
from worker.ml.experiment import ExperimentConfig, run_experiment
from worker.ml.tuning import TuningConfig


def test_tiny_experiment_writes_json_and_grid(tmp_path: Path, tiny_pretrained: Path) -> None:
    cfg = ExperimentConfig(
        objective="color:blue",
        preset="tiny",
        checkpoint=str(tiny_pretrained),
        images=48,
        impressions=50,
        rounds=2,
        device="cpu",
        real_images=128,
        json_path=str(tmp_path / "result.json"),
        grid_path=str(tmp_path / "grid.png"),
        estimator=EstimatorConfig(width=8, epochs=2),
        tuning=TuningConfig(steps=3, batch_size=8, eval_latents=16),
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
