from __future__ import annotations

import pytest
import torch
from torch import nn

from worker.ml.gan import PRESETS, Discriminator, Generator, init_weights, to_unit
from worker.ml.landscapes import render_landscapes
from worker.ml.tuning import TuningConfig, tune_generator

CPU = torch.device("cpu")


class BlueShare(nn.Module):
    """A toy estimator with a known reward: the image's blue share (times scale, plus offset)."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def expected_pir(
        self, images: torch.Tensor, *, temperature: float | None = None
    ) -> torch.Tensor:
        share = images[:, 2].sum((1, 2)) / images.sum((1, 2, 3)).clamp(min=1e-6)
        return self.offset + self.scale * share


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
    cfg = TuningConfig(
        steps=30, lr=2e-3, pir_weight=20.0, pir_units="pir", batch_size=16, eval_latents=64
    )
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
    base = TuningConfig(steps=20, lr=2e-3, pir_units="pir", batch_size=16, eval_latents=64)
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


def _tuned(reward: BlueShare, units: str) -> tuple[Generator, dict]:
    generator, discriminator = _tiny_gan()
    real = render_landscapes(64, size=16, seed=0)
    cfg = TuningConfig(
        steps=10, lr=2e-3, pir_weight=1.0, pir_units=units, batch_size=16, eval_latents=64
    )
    metrics = tune_generator(
        generator, discriminator, reward, real, cfg, device=CPU, progress=False
    )  # type: ignore[arg-type]
    return generator, metrics


def test_batch_std_units_push_a_flat_objective_as_hard_as_a_steep_one() -> None:
    # The same ranking of images with a tenth of the spread. In batch-std units the generator
    # takes the same steps, so the flat reward gains a tenth of what the steep one gains. (A
    # randomly initialised tiny generator's images barely differ in blue share, hence the
    # scales: the spreads must stay above the floor that tuning puts under the unit.)
    _, steep = _tuned(BlueShare(scale=50), "batch-std")
    _, flat = _tuned(BlueShare(scale=5, offset=0.3), "batch-std")
    assert flat["predicted_pir_spread"] == pytest.approx(
        0.1 * steep["predicted_pir_spread"], rel=1e-3
    )
    assert flat["predicted_pir_gain"] == pytest.approx(0.1 * steep["predicted_pir_gain"], rel=0.05)


def test_unknown_pir_units_are_refused() -> None:
    generator, discriminator = _tiny_gan()
    with pytest.raises(ValueError, match="pir_units must be one of"):
        tune_generator(
            generator,
            discriminator,
            BlueShare(),  # type: ignore[arg-type]
            render_landscapes(16, size=16, seed=0),
            TuningConfig(steps=1, pir_units="percent", batch_size=4, eval_latents=8),
            device=CPU,
            progress=False,
        )
