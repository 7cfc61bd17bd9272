"""Pretrain several GAN variants side by side and compare their samples and realism.

    .venv/bin/python -m bench.pretrain_sweep --variants m128 m160 m192 [--device cuda] \\
        [--out var/sweep] [--steps-scale 1.0]

Each variant is a 64 px GanConfig with a step count set so that it pretrains in about 90
minutes on this project's 2-core CPU machine (seconds per step measured there; see
VARIANTS). The variants run in parallel processes (on a GPU they share it); each writes
OUT/NAME/gan.pt, samples.png and a weights-only ship.pt (no optimiser state, for
worker/ml/assets), and the sweep writes OUT/sweep.json with each variant's steps, seconds and
KID against held-out real landscapes (worker.ml.realism) on 1000 samples, lowest first.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from worker.ml.gan import GanConfig

CPU_BUDGET_SECONDS = 90 * 60
"""The issue's pretraining budget on 2 CPU cores."""

# (config, seconds per pretraining step measured on the 2-core machine, 2026-12-04, with
# other work running: /tmp/steptime.py-style timing of pretrain._train_step at batch 64).
VARIANTS: dict[str, tuple[GanConfig, float]] = {
    "m128": (GanConfig(image_size=64, g_channels=128, d_channels=32, min_channels=16), 0.554),
    "m160": (GanConfig(image_size=64, g_channels=160, d_channels=40, min_channels=20), 0.85),
    "m192": (GanConfig(image_size=64, g_channels=192, d_channels=48, min_channels=24), 1.258),
}


def budget_config(name: str, steps_scale: float = 1.0) -> GanConfig:
    """The variant with as many steps as fit in CPU_BUDGET_SECONDS on 2 cores (rounded down
    to a multiple of 100, at least 100), times steps_scale."""
    cfg, seconds_per_step = VARIANTS[name]
    steps = max(100, int(CPU_BUDGET_SECONDS / seconds_per_step * steps_scale) // 100 * 100)
    return replace(cfg, steps=steps, checkpoint_every=max(steps // 4, 100))


def pretrain_variant(name: str, out: str, device: str, steps_scale: float) -> dict[str, Any]:
    import torch

    from worker.ml.checkpoints import load_checkpoint, save_checkpoint
    from worker.ml.pretrain import CHECKPOINT_NAME, pretrain
    from worker.ml.realism import realism
    from worker.ml.sampling import generate_images

    torch.set_num_threads(4)
    cfg = budget_config(name, steps_scale)
    out_dir = Path(out) / name
    started = time.perf_counter()
    metrics = pretrain(cfg, out_dir=out_dir, device=torch.device(device), progress=False)
    seconds = time.perf_counter() - started
    ckpt = load_checkpoint(out_dir / CHECKPOINT_NAME, kind="gan")
    for key in ("opt_g", "opt_d"):
        ckpt.pop(key, None)
    save_checkpoint(out_dir / "ship.pt", ckpt)

    from worker.ml.checkpoints import load_gan

    _, generator, _ = load_gan(ckpt, device=torch.device(device))
    samples = generate_images(generator, range(10_000, 11_000), device=torch.device(device))
    kid = realism(samples)
    return {
        "variant": name,
        "config": cfg.to_dict(),
        "steps": cfg.steps,
        "seconds": seconds,
        "seconds_per_step": metrics["seconds_per_step"],
        "cpu_seconds_per_step_2_cores": VARIANTS[name][1],
        **kid.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="var/sweep")
    parser.add_argument("--steps-scale", type=float, default=1.0)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(args.variants), mp_context=context) as pool:
        futures = [
            pool.submit(pretrain_variant, name, args.out, args.device, args.steps_scale)
            for name in args.variants
        ]
        rows = [f.result() for f in futures]
    rows.sort(key=lambda r: r["kid"])
    for r in rows:
        print(
            f"{r['variant']}: {r['steps']} steps in {r['seconds']:.0f} s "
            f"({1000 * r['seconds_per_step']:.1f} ms/step), KID×10³ {1000 * r['kid']:.1f} ± "
            f"{1000 * r['kid_se']:.1f}",
            flush=True,
        )
    summary = {"rows": rows, "device": args.device, "seconds": time.perf_counter() - started}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sweep.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
