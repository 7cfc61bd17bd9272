"""Pretraining the GAN on landscapes (or a folder of images), resumable exactly."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from worker.ml.checkpoints import CheckpointError, gan_checkpoint, load_checkpoint, save_checkpoint
from worker.ml.device import flush_denormals
from worker.ml.gan import (
    Discriminator,
    GanConfig,
    Generator,
    discriminator_loss,
    feature_matching_loss,
    fool_loss,
    from_unit,
    init_weights,
    make_optimizers,
)
from worker.ml.landscapes import dataset_fingerprint, render_landscapes
from worker.ml.progress import progress_bar
from worker.ml.sampling import generate_images, save_grid

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "gan.pt"
SAMPLES_NAME = "samples.png"
SAMPLE_SEEDS = tuple(range(64))
"""Fixed seeds for sample grids, so versions can be compared by eye."""

# Fields that may differ between a checkpoint and the config resuming it.
_RESUMABLE_CHANGES = {"steps", "checkpoint_every"}


def landscape_data(cfg: GanConfig) -> tuple[torch.Tensor, str]:
    """The procedural training set for cfg and its fingerprint (cheap: hashes the recipe)."""
    source = f"landscapes:size={cfg.image_size}:seed={cfg.dataset_seed}:n={cfg.dataset_size}"
    images = render_landscapes(cfg.dataset_size, size=cfg.image_size, seed=cfg.dataset_seed)
    return images, dataset_fingerprint(source=source)


def pretrain(
    cfg: GanConfig,
    *,
    out_dir: Path,
    device: torch.device,
    resume: bool = True,
    progress: bool = True,
    data: torch.Tensor | None = None,
) -> dict[str, float]:
    """Train G and D for cfg.steps, writing out_dir/gan.pt and out_dir/samples.png.

    With resume, an existing gan.pt continues from its step with identical results to an
    uninterrupted run (models, optimisers and the batch/latent RNG are all restored).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if data is None:
        data, fingerprint = landscape_data(cfg)
    else:
        fingerprint = dataset_fingerprint(data)
    if data.dim() != 4 or tuple(data.shape[1:]) != (3, cfg.image_size, cfg.image_size):
        raise ValueError(
            f"data must be [N, 3, {cfg.image_size}, {cfg.image_size}], got {tuple(data.shape)}"
        )

    flush_denormals()
    torch.manual_seed(cfg.seed)
    generator, discriminator = Generator(cfg), Discriminator(cfg)
    init_weights(generator)
    init_weights(discriminator)
    generator.to(device)
    discriminator.to(device)
    opt_g, opt_d = make_optimizers(cfg, generator, discriminator)
    rng = torch.Generator().manual_seed(cfg.seed)
    step = 0

    if resume and ckpt_path.exists():
        step = _restore(ckpt_path, cfg, fingerprint, generator, discriminator, opt_g, opt_d, rng)
        logger.info("resuming pretraining from %s at step %d", ckpt_path, step)

    real_all = from_unit(data).to(device)
    started = time.perf_counter()
    start_step = step
    d_losses: list[float] = []
    g_losses: list[float] = []
    generator.train()
    discriminator.train()
    with progress_bar("pretrain GAN", cfg.steps, enabled=progress, completed=step) as bar:
        while step < cfg.steps:
            d_loss, g_loss = _train_step(
                cfg, generator, discriminator, opt_g, opt_d, real_all, rng, step, device
            )
            d_losses.append(d_loss)
            g_losses.append(g_loss)
            step += 1
            bar.advance(status=f"D {d_loss:.3f} G {g_loss:.3f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                metrics = _window_metrics(d_losses, g_losses)
                save_checkpoint(
                    ckpt_path,
                    gan_checkpoint(
                        cfg,
                        generator,
                        discriminator,
                        opt_g,
                        opt_d,
                        step,
                        fingerprint,
                        rng_state=rng.get_state(),
                        metrics=metrics,
                    ),
                )
    seconds = time.perf_counter() - started
    if step == start_step and not ckpt_path.exists():
        save_checkpoint(
            ckpt_path,
            gan_checkpoint(
                cfg,
                generator,
                discriminator,
                opt_g,
                opt_d,
                step,
                fingerprint,
                rng_state=rng.get_state(),
            ),
        )
    samples = generate_images(generator, SAMPLE_SEEDS, device=device)
    save_grid(samples, out_dir / SAMPLES_NAME, nrow=8)
    metrics = {
        **_window_metrics(d_losses, g_losses),
        "step": float(step),
        "steps_run": float(step - start_step),
        "seconds": seconds,
        "seconds_per_step": seconds / max(step - start_step, 1),
    }
    logger.info("pretraining reached step %d in %.1fs", step, seconds)
    return metrics


def _train_step(
    cfg: GanConfig,
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real_all: torch.Tensor,
    rng: torch.Generator,
    step: int,
    device: torch.device,
) -> tuple[float, float]:
    batch = cfg.batch_size
    # Every random draw comes from rng (on the CPU), so a resumed run repeats them exactly.
    index = torch.randint(0, real_all.shape[0], (batch,), generator=rng)
    flip = torch.rand(batch, generator=rng) < 0.5
    z = torch.randn(batch, cfg.latent_dim, generator=rng).to(device)
    horizon = cfg.noise_anneal_steps or cfg.steps
    noise_std = cfg.instance_noise * max(0.0, 1.0 - step / max(horizon, 1))
    noise = torch.randn(2, batch, 3, cfg.image_size, cfg.image_size, generator=rng) * noise_std
    noise = noise.to(device)
    real = real_all[index.to(device)]
    # Landscapes are left-right symmetric in distribution; flipping doubles the data for free.
    real = torch.where(flip.to(device).view(-1, 1, 1, 1), real.flip(3), real)

    fake = generator(z)
    opt_d.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(
        discriminator(real + noise[0]),
        discriminator(fake.detach() + noise[1]),
        real_label=cfg.real_label,
    )
    d_loss.backward()
    opt_d.step()

    opt_g.zero_grad(set_to_none=True)
    fake_features = discriminator.features(fake + noise[1])
    g_loss = fool_loss(discriminator.head(fake_features).squeeze(1))
    if cfg.feature_matching > 0:
        with torch.no_grad():
            real_features = discriminator.features(real + noise[0])
        g_loss = g_loss + cfg.feature_matching * feature_matching_loss(real_features, fake_features)
    g_loss.backward()
    opt_g.step()
    return float(d_loss.detach()), float(g_loss.detach())


def _restore(
    path: Path,
    cfg: GanConfig,
    fingerprint: str,
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    rng: torch.Generator,
) -> int:
    ckpt = load_checkpoint(path, kind="gan")
    saved = dict(ckpt["config"])
    wanted = cfg.to_dict()
    differing = sorted(
        k for k in wanted if saved.get(k) != wanted[k] and k not in _RESUMABLE_CHANGES
    )
    if differing:
        raise CheckpointError(
            f"{path} was trained with a different config ({differing}); "
            "use another out_dir or resume=False"
        )
    if ckpt.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{path} was trained on different data; use resume=False")
    generator.load_state_dict(ckpt["generator"])
    discriminator.load_state_dict(ckpt["discriminator"])
    if "opt_g" not in ckpt or "rng_state" not in ckpt:
        raise CheckpointError(f"{path} lacks optimiser or RNG state and cannot be resumed")
    opt_g.load_state_dict(ckpt["opt_g"])
    opt_d.load_state_dict(ckpt["opt_d"])
    rng.set_state(ckpt["rng_state"])
    return int(ckpt["step"])


def _window_metrics(d_losses: list[float], g_losses: list[float]) -> dict[str, float]:
    """Mean losses over the last 100 steps run (NaN when none were run)."""
    window_d, window_g = d_losses[-100:], g_losses[-100:]
    nan = float("nan")
    return {
        "d_loss": sum(window_d) / len(window_d) if window_d else nan,
        "g_loss": sum(window_g) / len(window_g) if window_g else nan,
    }
