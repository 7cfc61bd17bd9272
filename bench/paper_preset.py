"""The `paper` preset (64 px, the paper's widths) through one full offline experiment, timed.

    python -m bench.paper_preset --device cuda --pretrain-seconds 240 [--objective color:blue]

The preset has no shipped checkpoint and its 30,000 pretraining steps take longer than a
device lease allows, so the benchmark pretrains it for a time budget (the step count reached
is reported), then runs the experiment `pirloop experiment --preset paper` runs (1000 images,
100 impressions each, one round, the default 400 tuning steps) from that checkpoint. Writes
bench/results/paper_preset.json (the experiment's JSON plus pretraining's figures) and the
before/after grid as paper_preset.png.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import RESULTS, machine
from worker.ml.checkpoints import load_checkpoint
from worker.ml.experiment import ExperimentConfig, run_experiment
from worker.ml.gan import get_preset
from worker.ml.pretrain import CHECKPOINT_NAME, landscape_data, pretrain

DATASET_SIZE = 20_000
"""The preset asks for 100,000 landscapes; rendering them takes minutes of the lease on the
CPU, and 20,000 is what cpu-small trains on."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pretrain-seconds", type=float, default=240)
    parser.add_argument("--objective", default="color:blue")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--impressions", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="tuning steps (default 400)")
    parser.add_argument("--probe-steps", type=int, default=100)
    parser.add_argument("--out", default="var/paper_preset")
    args = parser.parse_args()
    device = torch.device(args.device)
    out = Path(args.out)
    preset = replace(get_preset("paper"), dataset_size=DATASET_SIZE)

    # A short probe measures the step time; the run then resumes (exactly) to the step count
    # that fills the budget. The instance-noise schedule is fixed to the preset's 30,000 steps
    # so that it does not depend on where the budget cut the run.
    probe = replace(preset, steps=args.probe_steps, noise_anneal_steps=preset.steps)
    data, _ = landscape_data(probe)  # rendered once for both calls
    started = time.perf_counter()
    first = pretrain(probe, out_dir=out, device=device, resume=False, progress=False, data=data)
    remaining = args.pretrain_seconds - (time.perf_counter() - started)
    steps = args.probe_steps + max(0, int(remaining / first["seconds_per_step"]))
    second = pretrain(
        replace(probe, steps=steps), out_dir=out, device=device, progress=False, data=data
    )
    del data
    seconds_per_step = (second if second["steps_run"] else first)["seconds_per_step"]
    pretrain_seconds = time.perf_counter() - started
    print(
        f"pretrained {steps} of the preset's {preset.steps} steps in {pretrain_seconds:.0f} s "
        f"({1000 * seconds_per_step:.1f} ms/step)",
        flush=True,
    )

    RESULTS.mkdir(parents=True, exist_ok=True)
    result = run_experiment(
        ExperimentConfig(
            objective=args.objective,
            preset="paper",
            images=args.images,
            impressions=args.impressions,
            device=args.device,
            steps=args.steps,
            checkpoint=str(out / CHECKPOINT_NAME),
            grid_path=str(RESULTS / "paper_preset.png"),
        ),
        progress=False,
    )
    overall = result["overall"]
    print(
        f"experiment in {result['seconds']:.0f} s: PIR {overall['pre_mean']:.4f} -> "
        f"{overall['post_mean']:.4f} (p={overall['p_value']:.2g}), estimated change "
        f"{overall['estimated_delta']:+.4f}, diversity x{overall['diversity_ratio']:.2f}, "
        f"KID×10³ {1000 * overall['realism_pre']:.1f} -> {1000 * overall['realism_post']:.1f}",
        flush=True,
    )
    ckpt = load_checkpoint(out / CHECKPOINT_NAME, kind="gan")
    report = {
        "machine": machine(),
        "device": args.device,
        "pretraining": {
            "steps": int(ckpt["step"]),
            "preset_steps": preset.steps,
            "seconds": pretrain_seconds,
            "seconds_per_step": seconds_per_step,
            "dataset_size": DATASET_SIZE,
        },
        "experiment": result,
    }
    (RESULTS / "paper_preset.json").write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
