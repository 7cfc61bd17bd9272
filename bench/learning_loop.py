"""Learning-loop benchmark: wall time of one cycle (the production learning round of
worker.ml.learning_round: estimator training on a logged batch, generator tuning, the predicted
change; then a new batch of images drawn and PNG-encoded) per preset and device, and images
generated per second.

    .venv/bin/python bench/learning_loop.py [--preset cpu-small] [--images 1000] [--device auto]

The anchor, measured in the same run: the same tuning step count the paper used (50,000),
extrapolated from this run's seconds per step; the ratio says how much of the paper's tuning
budget one of our cycles costs. Writes bench/results/learning_loop_<preset>_<device>.json.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bench.common import write_result
from worker.ml.checkpoints import load_gan
from worker.ml.device import pick_device
from worker.ml.experiment import pretrained_checkpoint
from worker.ml.learning_round import RoundConfig, run_learning_round
from worker.ml.sampling import generate_images, image_to_png
from worker.sim.objectives import load_objective, observe_binomial

PAPER_TUNING_STEPS = 50_000

PHASE_LABELS = {
    "estimator": "train estimator",
    "tuning": "tune generator",
    "estimating": "estimate the change",
}
"""Timings keys of the learning round's phases (the first two as in earlier results)."""


class PhaseClock:
    """A learning round's progress callback that times each phase from its first report to its
    last (step == total)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, phase: str, step: int, total: int) -> None:
        now = time.perf_counter()
        self._started.setdefault(phase, now)
        if step == total:
            self.seconds[phase] = now - self._started[phase]


@contextmanager
def timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[label] = time.perf_counter() - started
    print(f"{label:28} {timings[label]:8.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--impressions", type=int, default=50)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    timings: dict[str, float] = {}
    ckpt, _ = pretrained_checkpoint(args.preset, device=device, progress=False)
    _, generator, discriminator = load_gan(ckpt, device=device)
    seeds = range(1, args.images + 1)

    with timed("generate (tensor only)", timings):
        images = generate_images(generator, seeds, device=device)
    with timed("encode PNG", timings):
        pngs = [image_to_png(image) for image in images]
    objective = load_objective("color:blue")
    positives = observe_binomial(
        objective(images), args.impressions, generator=torch.Generator().manual_seed(0)
    )
    impressions = torch.full_like(positives, float(args.impressions))
    round_cfg = RoundConfig()  # the cycle's defaults
    phases = PhaseClock()
    with timed("learning round", timings):
        learnt = run_learning_round(
            generator,
            discriminator,
            round_cfg,
            images=images,
            impressions=impressions,
            positives=positives,
            reference_images=images,
            seed=1,
            device=device,
            on_progress=phases,
        )
    for phase, label in PHASE_LABELS.items():
        timings[label] = phases.seconds[phase]
        print(f"  {label:26} {timings[label]:8.1f} s")
    with timed("new batch (generate + PNG)", timings):
        fresh = generate_images(generator, range(10**6, 10**6 + args.images), device=device)
        fresh_pngs = [image_to_png(image) for image in fresh]

    cycle = timings["learning round"] + timings["new batch (generate + PNG)"]
    per_step = timings["tune generator"] / round_cfg.tuning.steps
    paper_tuning = per_step * PAPER_TUNING_STEPS
    result = {
        "preset": args.preset,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "images": args.images,
        "tuning_steps": round_cfg.tuning.steps,
        "estimated_delta": learnt.estimated_delta,
        "timings_seconds": timings,
        "cycle_seconds": cycle,
        "images_per_second_tensor": args.images / timings["generate (tensor only)"],
        "images_per_second_png": args.images / timings["new batch (generate + PNG)"],
        "png_bytes_mean": sum(map(len, pngs + fresh_pngs)) / (2 * args.images),
        "seconds_per_tuning_step": per_step,
        "paper_50k_steps_seconds_extrapolated": paper_tuning,
        "ratio_cycle_to_paper_tuning": cycle / paper_tuning,
    }
    print(f"one cycle: {cycle:.1f} s; {result['images_per_second_png']:.0f} images/s with PNG")
    print(
        f"the paper's 50,000 tuning steps at this speed: {paper_tuning:.0f} s; "
        f"one cycle costs {result['ratio_cycle_to_paper_tuning']:.3f}x that"
    )
    print(f"wrote {write_result(f'learning_loop_{args.preset}_{device.type}', result)}")


if __name__ == "__main__":
    main()
