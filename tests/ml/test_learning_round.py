from __future__ import annotations

from pathlib import Path

import torch

from worker.ml.checkpoints import load_checkpoint, load_gan
from worker.ml.estimator import EstimatorConfig
from worker.ml.gan import Generator
from worker.ml.learning_round import (
    PHASES,
    RoundConfig,
    RoundResult,
    latent_block,
    run_learning_round,
)
from worker.ml.progress import progress_bar
from worker.ml.sampling import generate_images
from worker.ml.tuning import TuningConfig
from worker.sim.objectives import load_objective, observe_binomial

CPU = torch.device("cpu")
IMPRESSIONS = 50
ROUND = RoundConfig(
    estimator=EstimatorConfig(width=8, epochs=3),
    tuning=TuningConfig(steps=4, batch_size=8, eval_latents=16),
    real_images=64,
    estimate_images=24,
    estimate_seed_base=5_000,
)


def learning_round(
    checkpoint: Path,
    *,
    seed: int = 3,
    cfg: RoundConfig = ROUND,
    on_progress: list[tuple[str, int, int]] | None = None,
) -> RoundResult:
    """One round on the tiny GAN, from a fresh copy of it (tuning changes it in place), with
    simulated color:blue clicks on 32 logged images."""
    _, generator, discriminator = load_gan(load_checkpoint(checkpoint, kind="gan"), device=CPU)
    images = generate_images(generator, range(32), device=CPU)
    positives = observe_binomial(
        load_objective("color:blue")(images),
        IMPRESSIONS,
        generator=torch.Generator().manual_seed(0),
    )
    return run_learning_round(
        generator,
        discriminator,
        cfg,
        images=images,
        impressions=torch.full_like(positives, float(IMPRESSIONS)),
        positives=positives,
        reference_images=images[:16],
        seed=seed,
        device=CPU,
        on_progress=None if on_progress is None else lambda *report: on_progress.append(report),
    )


def test_a_round_returns_what_its_callers_record(tiny_pretrained: Path) -> None:
    result = learning_round(tiny_pretrained)
    # The cycle stores these in the new version's metrics; the experiment reports them.
    assert result.estimator_metrics["n_train"] + result.estimator_metrics["n_holdout"] == 32
    assert 0 <= result.estimator_metrics["heldout_mae"] <= 1
    assert result.tuning_metrics["steps"] == 4
    assert "predicted_pir_start" in result.tuning_metrics
    change = result.estimated_change()
    assert set(change) == {"estimated_pre_mean", "estimated_post_mean", "estimated_delta"}
    assert 0 < change["estimated_pre_mean"] < 1
    assert 0 < change["estimated_post_mean"] < 1
    assert change["estimated_delta"] == change["estimated_post_mean"] - change["estimated_pre_mean"]
    # The pre mean is the estimator's on the reference images; the post mean on the tuned
    # generator's sample, latent block `seed` of estimate_images seeds.
    assert result.tuned_images.shape == (24, 3, 16, 16)
    reference = generate_images(_fresh_generator(tiny_pretrained), range(16), device=CPU)
    assert result.estimated_pre_mean == float(result.estimator.predict(reference).mean())
    assert result.estimated_post_mean == float(result.estimator.predict(result.tuned_images).mean())
    assert latent_block(5_000, 3, 24) == range(5_072, 5_096)
    assert not any(param.requires_grad for param in result.estimator.parameters())


def test_progress_reports_every_phase_in_order_ending_at_its_total(
    tiny_pretrained: Path,
) -> None:
    reports: list[tuple[str, int, int]] = []
    learning_round(tiny_pretrained, on_progress=reports)
    assert tuple(dict.fromkeys(phase for phase, _, _ in reports)) == PHASES
    totals = {"estimator": 3, "tuning": 4, "estimating": 16 + 24}
    for phase in PHASES:
        steps = [step for name, step, _ in reports if name == phase]
        assert {total for name, _, total in reports if name == phase} == {totals[phase]}
        assert steps[0] == 0
        assert steps[-1] == totals[phase]
        assert steps == sorted(set(steps)), f"{phase} steps not strictly increasing: {steps}"


def test_a_long_loop_reports_about_every_two_percent() -> None:
    reports: list[tuple[int, int]] = []
    with progress_bar(
        "loop", 1000, enabled=False, on_step=lambda *report: reports.append(report)
    ) as bar:
        for _ in range(1000):
            bar.advance()
    assert reports[0] == (0, 1000)
    assert reports[-1] == (1000, 1000)
    assert len(reports) == 51
    assert [step for step, _ in reports] == list(range(0, 1001, 20))


def test_an_early_stop_still_ends_at_the_total() -> None:
    reports: list[tuple[int, int]] = []
    with progress_bar(
        "loop", 40, enabled=False, on_step=lambda *report: reports.append(report)
    ) as bar:
        for _ in range(7):
            bar.advance()
    assert reports == [(step, 40) for step in range(8)] + [(40, 40)]


def test_the_same_seed_gives_the_same_round(tiny_pretrained: Path) -> None:
    first, again = learning_round(tiny_pretrained), learning_round(tiny_pretrained)
    assert again.estimated_delta == first.estimated_delta
    assert torch.equal(again.tuned_images, first.tuned_images)
    # The seed picks the tuned generator's sample: another seed, other latents.
    other = learning_round(tiny_pretrained, seed=4)
    assert other.estimated_pre_mean == first.estimated_pre_mean
    assert other.estimated_post_mean != first.estimated_post_mean


def _fresh_generator(checkpoint: Path) -> Generator:
    _, generator, _ = load_gan(load_checkpoint(checkpoint, kind="gan"), device=CPU)
    return generator
