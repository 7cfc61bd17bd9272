from __future__ import annotations

import torch
from torch import nn

from worker.ml.gan import PRESETS, Discriminator, Generator, init_weights, to_unit
from worker.ml.landscapes import render_landscapes
from worker.ml.tuning import TuningConfig, tune_generator

CPU = torch.device("cpu")


class BlueShare(nn.Module):
    """A toy estimator with a known reward: the image's blue share."""

    def expected_pir(
        self, images: torch.Tensor, *, temperature: float | None = None
    ) -> torch.Tensor:
        return images[:, 2].sum((1, 2)) / images.sum((1, 2, 3)).clamp(min=1e-6)


def _tiny_gan() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    generator, discriminator = Generator(cfg), Discriminator(cfg)
    init_weights(generator)
    init_weights(discriminator)
    return generator, discriminator


def test_pir_gradient_step_raises_reward() -> None:
    generator, _ = _tiny_gan()
    reward = BlueShare()
    z = torch.randn(32, generator.latent_dim)
    before = reward.expected_pir(to_unit(generator(z))).mean()
    loss = -before  # L_PIR
    loss.backward()
    with torch.no_grad():
        for param in generator.parameters():
            if param.grad is not None:
                param -= 0.05 * param.grad
        after = reward.expected_pir(to_unit(generator(z))).mean()
    assert after > before


def test_tuning_raises_predicted_pir_and_keeps_estimator_frozen() -> None:
    generator, discriminator = _tiny_gan()
    reward = BlueShare()
    real = render_landscapes(128, size=16, seed=0)
    cfg = TuningConfig(steps=30, lr=2e-3, pir_weight=20.0, batch_size=16, eval_latents=64)
    metrics = tune_generator(
        generator,
        discriminator,
        reward,
        real,
        cfg,
        device=CPU,
        progress=False,  # type: ignore[arg-type]
    )
    assert metrics["predicted_pir_end"] > metrics["predicted_pir_start"] + 0.02
    assert len(metrics["loss_fool"]) == len(metrics["predicted_pir"]) > 1


def test_zero_weight_leaves_reward_roughly_unchanged() -> None:
    generator, discriminator = _tiny_gan()
    boosted, _ = _tiny_gan()
    real = render_landscapes(128, size=16, seed=0)
    base = TuningConfig(steps=20, lr=2e-3, batch_size=16, eval_latents=64)
    plain = tune_generator(
        generator,
        discriminator,
        BlueShare(),
        real,  # type: ignore[arg-type]
        TuningConfig(**{**base.to_dict(), "pir_weight": 0.0}),
        device=CPU,
        progress=False,
    )
    pushed = tune_generator(
        boosted,
        Discriminator(PRESETS["tiny"]),
        BlueShare(),
        real,  # type: ignore[arg-type]
        TuningConfig(**{**base.to_dict(), "pir_weight": 50.0}),
        device=CPU,
        progress=False,
    )
    assert pushed["predicted_pir_gain"] > plain["predicted_pir_gain"] + 0.02
