"""The offline loop with simulated people: generate, observe, estimate, tune, measure.

One round: the current generator draws K images from fresh seeds; their true PIRs come from an
objective; positives are drawn binomially with M impressions each; an estimator is trained on
every batch observed so far; the generator is tuned against it; K fresh images from the tuned
generator are scored by the same objective; Welch's t-test (app.stats) compares the two sets.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from app.stats import compare
from worker.ml.checkpoints import load_checkpoint, load_gan
from worker.ml.device import pick_device
from worker.ml.diversity import diversity_score
from worker.ml.estimator import EstimatorConfig, PirEstimator, train_estimator
from worker.ml.gan import get_preset
from worker.ml.landscapes import load_image_folder
from worker.ml.learning_round import REAL_IMAGES, RoundConfig, latent_block, run_learning_round
from worker.ml.pretrain import CHECKPOINT_NAME, pretrain
from worker.ml.realism import realism_change
from worker.ml.sampling import generate_images, save_grid
from worker.ml.tuning import TuningConfig
from worker.sim.objectives import load_objective, observe_binomial

logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).parent / "assets"
PRETRAINED_CACHE = Path("var") / "pretrained"
FEW_IMAGES = 500
"""Below this many images of one's own, pretraining warns that the GAN will copy them."""
GRID_SEEDS = tuple(range(900_000, 900_032))
"""Latents shown in the before/after grid (disjoint from every round's seeds)."""
TUNING_REPORTED = (
    "seconds",
    "predicted_pir_start",
    "predicted_pir_end",
    "predicted_pir",
    "predicted_pir_spread",
)
"""What of tuning's metrics each round's result keeps (the loss curves stay out)."""


@dataclass
class ExperimentConfig:
    """An offline experiment with a simulated objective."""

    objective: str = "color:blue"
    """Objective spec for worker.sim.objectives.load_objective."""
    preset: str = "cpu-small"
    """GAN preset; its pretrained checkpoint is the shipped asset or a cached pretraining."""
    images: int = 1000
    """K: images per round, both before and after tuning."""
    impressions: int = 200
    """M: impressions per image, from which positives are drawn."""
    rounds: int = 1
    """R: observe-estimate-tune rounds; round k+1's estimator sees all batches so far."""
    seed: int = 0
    device: str | None = None
    """Torch device name; None picks CUDA when available."""
    steps: int | None = None
    """Tuning steps per round; None keeps tuning.steps."""
    real_images: int = REAL_IMAGES
    """Real landscapes the discriminator keeps training on during tuning (the cycle's number
    unless overridden)."""
    checkpoint: str | None = None
    """Pretrained GAN checkpoint file; None resolves the preset's."""
    independent_estimate: bool = True
    """Also predict the change with a second estimator, trained on the same observations from
    another initialisation and split, that tuning never optimised against. The tuned-against
    estimator's prediction is biased upwards on the tuned images (tuning seeks out its errors);
    an independent one is not, but shrinks towards no change as much as it failed to learn.
    Both are reported."""
    explore_scale: float = 1.0
    """Latent scale of the batch shown to (simulated) people. Above 1 the batch varies more,
    so objectives that barely vary across typical images give the estimator something to
    learn from; before/after are still measured on typical images (scale 1)."""
    json_path: str | None = None
    grid_path: str | None = None
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pretrained_checkpoint(
    preset: str, *, device: torch.device, progress: bool = True
) -> tuple[dict[str, Any], str]:
    """The preset's pretrained GAN checkpoint and where it came from.

    Order: the shipped worker/ml/assets/PRESET.pt, then var/pretrained/PRESET/gan.pt, and
    otherwise pretraining now and caching it there. A preset ending in .pt names a checkpoint
    file instead, such as one `pirloop pretrain --images DIR` wrote.
    """
    if preset.endswith(".pt"):
        path = Path(preset)
        if not path.is_file():
            raise FileNotFoundError(f"generator checkpoint {path} does not exist")
        return load_checkpoint(path, kind="gan"), str(path)
    shipped = ASSETS_DIR / f"{preset}.pt"
    if shipped.is_file():
        return load_checkpoint(shipped, kind="gan"), str(shipped)
    cached = PRETRAINED_CACHE / preset / CHECKPOINT_NAME
    cfg = get_preset(preset)
    if not cached.is_file() or int(load_checkpoint(cached, kind="gan")["step"]) < cfg.steps:
        logger.info("no shipped checkpoint for %s; pretraining into %s", preset, cached.parent)
        pretrain(cfg, out_dir=cached.parent, device=device, resume=True, progress=progress)
    return load_checkpoint(cached, kind="gan"), str(cached)


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run cfg.rounds rounds; write the JSON and grid when paths are given; return the results."""
    if cfg.rounds < 1 or cfg.images < 2 or cfg.impressions < 1:
        raise ValueError(
            f"an experiment needs rounds >= 1, images >= 2 and impressions >= 1, got "
            f"{cfg.rounds}, {cfg.images} and {cfg.impressions}"
        )
    started = time.perf_counter()
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    objective = load_objective(cfg.objective)
    if cfg.checkpoint is not None:
        ckpt, source = load_checkpoint(cfg.checkpoint, kind="gan"), cfg.checkpoint
    else:
        ckpt, source = pretrained_checkpoint(cfg.preset, device=device, progress=progress)
    _, generator, discriminator = load_gan(ckpt, device=device)
    tuning_cfg = cfg.tuning if cfg.steps is None else replace(cfg.tuning, steps=cfg.steps)
    # Latents in blocks of cfg.images: round r shows block 2r and measures the tuned generator
    # on block 2r + 1. They never repeat across rounds, runs with other seeds, or the grid.
    seed_base = 1_000_000 + cfg.seed * 100_000_000
    observer = torch.Generator().manual_seed(cfg.seed)
    grid_before = generate_images(generator, GRID_SEEDS, device=device)

    first_pre: tuple[torch.Tensor, torch.Tensor] | None = None  # images, true PIR
    seen_images: list[torch.Tensor] = []
    seen_positives: list[torch.Tensor] = []
    rounds: list[dict[str, Any]] = []
    for round_index in range(cfg.rounds):
        round_started = time.perf_counter()
        pre_seeds = latent_block(seed_base, 2 * round_index, cfg.images)
        pre_images = generate_images(generator, pre_seeds, device=device)
        pre_true = objective(pre_images)
        pre_positives = observe_binomial(pre_true, cfg.impressions, generator=observer)
        if first_pre is None:
            first_pre = (pre_images, pre_true)
        if cfg.explore_scale == 1.0:
            shown_images, shown_positives = pre_images, pre_positives
        else:
            # The same latents, widened: shown and observed instead of the typical batch.
            shown_images = generate_images(
                generator, pre_seeds, device=device, latent_scale=cfg.explore_scale
            )
            shown_positives = observe_binomial(
                objective(shown_images), cfg.impressions, generator=observer
            )
        seen_images.append(shown_images)
        seen_positives.append(shown_positives)
        all_images = torch.cat(seen_images)
        all_positives = torch.cat(seen_positives)
        impressions = torch.full_like(all_positives, float(cfg.impressions))

        # The cycle's learning round, on every batch so far; its estimator's view of the tuned
        # generator is the "after" batch, block 2r + 1.
        round_cfg = RoundConfig(
            estimator=replace(cfg.estimator, seed=cfg.estimator.seed + round_index),
            tuning=replace(tuning_cfg, seed=tuning_cfg.seed + 1000 * cfg.seed + round_index),
            real_images=cfg.real_images,
            estimate_images=cfg.images,
            estimate_seed_base=seed_base,
        )
        learnt = run_learning_round(
            generator,
            discriminator,
            round_cfg,
            images=all_images,
            impressions=impressions,
            positives=all_positives,
            reference_images=pre_images,
            seed=2 * round_index + 1,
            device=device,
            progress=progress,
        )
        estimator = learnt.estimator
        # The judge learns from the same observations as the round's estimator; only its seed
        # differs.
        judge = (
            train_estimator(
                all_images,
                impressions,
                all_positives,
                replace(cfg.estimator, seed=cfg.estimator.seed + 7919 + round_index),
                device=device,
                progress=progress,
                discriminator=discriminator,
            )[0]
            if cfg.independent_estimate
            else None
        )
        post_images = learnt.tuned_images
        post_true = objective(post_images)
        post_positives = observe_binomial(post_true, cfg.impressions, generator=observer)

        measured = _measure(pre_images, pre_true, post_images, post_true, estimator, judge=judge)
        observed = compare(
            (pre_positives / cfg.impressions).tolist(), (post_positives / cfg.impressions).tolist()
        )
        result: dict[str, Any] = {
            "round": round_index + 1,
            **measured,
            "observed_delta": observed.delta,
            "observed_p_value": observed.p_value,
            "estimator": {k: v for k, v in learnt.estimator_metrics.items() if k != "holdout_loss"},
            "tuning": {k: v for k, v in learnt.tuning_metrics.items() if k in TUNING_REPORTED},
            "seconds": time.perf_counter() - round_started,
        }
        logger.info(
            "round %d: PIR %.4f -> %.4f (p=%.2g, d=%.2f), estimated delta %.4f, diversity %.3f",
            round_index + 1, result["pre_mean"], result["post_mean"], result["p_value"],
            result["effect_size"], result["estimated_delta"], result["diversity_ratio"],
        )  # fmt: skip
        rounds.append(result)

    assert first_pre is not None  # rounds >= 1, checked on entry
    results: dict[str, Any] = {
        "objective": cfg.objective,
        "objective_description": objective.describe(),
        "preset": cfg.preset,
        "pretrained_checkpoint": source,
        "images": cfg.images,
        "impressions": cfg.impressions,
        "steps": tuning_cfg.steps,
        "rounds": rounds,
        # The original generator against the last one, on their own fresh seeds; the
        # estimate is the last estimator's, which has seen every batch.
        "overall": (
            measured
            if cfg.rounds == 1
            else _measure(*first_pre, post_images, post_true, estimator, judge=judge)
        ),
        "seed": cfg.seed,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "config": cfg.to_dict(),
        "seconds": time.perf_counter() - started,
    }
    if cfg.grid_path:
        grid_after = generate_images(generator, GRID_SEEDS, device=device)
        # Top four rows before tuning, bottom four after, on the same latents.
        save_grid(torch.cat([grid_before, grid_after]), cfg.grid_path, nrow=8)
        results["grid_path"] = cfg.grid_path
    if cfg.json_path:
        path = Path(cfg.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=float))
    return results


def _measure(
    pre_images: torch.Tensor,
    pre_true: torch.Tensor,
    post_images: torch.Tensor,
    post_true: torch.Tensor,
    estimator: PirEstimator,
    *,
    judge: PirEstimator | None,
) -> dict[str, Any]:
    """The true change from the "before" images to the "after" ones, what the tuned-against
    estimator (and the independent judge, when there is one) predicted for it, diversity, and
    realism (KID against held-out real landscapes, worker.ml.realism)."""
    comparison = compare(pre_true.tolist(), post_true.tolist())

    def ratio(estimated: float | None) -> float | None:
        if estimated is None:
            return None
        return estimated / comparison.delta if comparison.delta != 0 else float("nan")

    estimated_pre, estimated_post = estimator.predict(pre_images), estimator.predict(post_images)
    estimated = float(estimated_post.mean() - estimated_pre.mean())
    independent = judged_pre = None
    if judge is not None:
        judged_pre = judge.predict(pre_images)
        independent = float(judge.predict(post_images).mean() - judged_pre.mean())
    diversity_pre, diversity_post = diversity_score(pre_images), diversity_score(post_images)
    realism = realism_change(pre_images, post_images)
    return {
        "pre_mean": comparison.before.mean,
        "post_mean": comparison.after.mean,
        "delta": comparison.delta,
        "effect_size": comparison.effect_size,
        "p_value": comparison.p_value,
        "significant": comparison.significant,
        "estimated_pre_mean": float(estimated_pre.mean()),
        "estimated_post_mean": float(estimated_post.mean()),
        "estimated_delta": estimated,
        "estimated_to_true_ratio": ratio(estimated),
        "independent_estimated_delta": independent,
        "independent_to_true_ratio": ratio(independent),
        "estimator_corr_true": _pearson(estimated_pre, pre_true),
        "independent_estimator_corr_true": (
            _pearson(judged_pre, pre_true) if judged_pre is not None else None
        ),
        "diversity_pre": diversity_pre,
        "diversity_post": diversity_post,
        "diversity_ratio": diversity_post / max(diversity_pre, 1e-12),
        **realism.to_dict(),
        "comparison": comparison.as_dict(),
    }


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def pretrain_command(
    *,
    preset: str = "cpu-small",
    out: str | Path | None = None,
    images: str | Path | None = None,
    device: str | None = None,
    resume: bool = True,
    steps_override: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """`pirloop pretrain`: pretrain a preset on the built-in landscapes, or on the images in a
    folder, into out (default var/pretrained/PRESET, or var/pretrained/PRESET-FOLDER)."""
    from rich.console import Console
    from rich.markup import escape

    cfg = get_preset(preset)
    if steps_override is not None:
        cfg = cfg.with_overrides(steps=steps_override)
    data = None
    if images is not None:
        # Read before anything is written: an empty folder fails fast (ImageFolderError).
        data = load_image_folder(images, size=cfg.image_size)
        logger.info("pretraining on %d images from %s", len(data), images)
        if len(data) < FEW_IMAGES:
            logger.warning(
                "%d images is few for a GAN (thousands are usual): expect it to copy them",
                len(data),
            )
    if out is not None:
        out_dir = Path(out)
    elif images is not None:
        # Never the landscapes' cache, which pretrained_checkpoint reads for the preset.
        out_dir = PRETRAINED_CACHE / f"{preset}-{Path(images).resolve().name}"
    else:
        out_dir = PRETRAINED_CACHE / preset
    metrics = pretrain(
        cfg,
        out_dir=out_dir,
        device=pick_device(device),
        resume=resume,
        progress=progress,
        data=data,
    )
    source = "the landscapes" if data is None else escape(f"{len(data)} images from {images}")
    Console().print(
        f"[bold]pretrained[/bold] {preset} on {source} to step {int(metrics['step'])} "
        f"({metrics['steps_run']:.0f} steps in {metrics['seconds']:.0f}s; "
        f"D loss {metrics['d_loss']:.3f}, G loss {metrics['g_loss']:.3f})\n"
        f"checkpoint {out_dir / CHECKPOINT_NAME}, samples {out_dir / 'samples.png'}"
    )
    return metrics


def experiment_command(
    *,
    objective: str = "color:blue",
    preset: str = "cpu-small",
    images: int = 1000,
    impressions: int = 200,
    rounds: int = 1,
    seed: int = 0,
    device: str | None = None,
    steps: int | None = None,
    json_path: str | None = None,
    grid_path: str | None = None,
    estimator_width: int | None = None,
    explore_scale: float = 1.0,
    progress: bool = True,
) -> dict[str, Any]:
    """`pirloop experiment`: run the offline loop and print one line per round."""
    from rich.console import Console
    from rich.table import Table

    cfg = ExperimentConfig(
        objective=objective,
        preset=preset,
        images=images,
        impressions=impressions,
        rounds=rounds,
        seed=seed,
        device=device,
        steps=steps,
        json_path=json_path,
        grid_path=grid_path,
        explore_scale=explore_scale,
    )
    if estimator_width is not None:
        cfg = replace(cfg, estimator=replace(cfg.estimator, width=estimator_width))
    results = run_experiment(cfg, progress=progress)
    table = Table(title=f"{objective}: {images} images x {impressions} impressions")
    for column in (
        "round",
        "PIR before",
        "PIR after",
        "delta",
        "est. delta",
        "d",
        "p",
        "diversity",
    ):
        table.add_column(column, justify="right")
    for row in results["rounds"]:
        table.add_row(
            str(row["round"]),
            f"{row['pre_mean']:.4f}",
            f"{row['post_mean']:.4f}",
            f"{row['delta']:+.4f}",
            f"{row['estimated_delta']:+.4f}",
            f"{row['effect_size']:.2f}",
            f"{row['p_value']:.2g}",
            f"{row['diversity_ratio']:.2f}x",
        )
    console = Console()
    console.print(table)
    if rounds > 1:
        overall = results["overall"]
        console.print(
            f"all {rounds} rounds: PIR {overall['pre_mean']:.4f} -> {overall['post_mean']:.4f} "
            f"({overall['delta']:+.4f}, d={overall['effect_size']:.2f}, "
            f"p={overall['p_value']:.2g}), estimated {overall['estimated_delta']:+.4f}"
        )
    console.print(
        f"{results['steps']} tuning steps per round, {results['seconds']:.0f}s on "
        f"{results['device']}"
    )
    return results
