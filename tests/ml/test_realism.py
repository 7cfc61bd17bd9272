"""The realism measure: KID with a jackknife standard error, and tuning's realism guard."""

from __future__ import annotations

import torch

from worker.ml.landscapes import render_landscapes
from worker.ml.realism import (
    kernel_distance,
    mmd2,
    realism,
    realism_change,
    reference_features,
)
from worker.ml.tuning import RealismGuard


def test_two_samples_of_real_landscapes_are_about_zero_apart() -> None:
    a = render_landscapes(300, size=32, seed=11)
    result = realism(a)
    # Unbiased: the expectation is 0; 3 standard errors leave room for chance.
    assert abs(result.value) < 3 * result.standard_error
    assert result.standard_error > 0
    assert (result.images, result.real_images) == (300, 300)


def test_identical_sets_give_about_zero() -> None:
    images = render_landscapes(200, size=32, seed=3)
    features = reference_features(images)
    same = kernel_distance(features, features.clone())
    # The same points on both sides are not two independent samples: the unbiased estimate
    # is then -O(1/n) (the cross term keeps the diagonal the within terms leave out); small
    # beside any real difference.
    assert -0.02 < same.value <= 0
    unreal = kernel_distance(reference_features(1 - images), features)
    assert unreal.value > 10 * abs(same.value)


def test_a_different_distribution_is_far_beyond_its_standard_error() -> None:
    real = render_landscapes(300, size=32, seed=5)
    # Landscapes with their colours inverted: the same layouts, unreal palettes.
    unreal = 1 - real
    result = realism(unreal)
    assert result.value > 10 * result.standard_error
    # And clearly worse than real images by the paired change, too.
    change = realism_change(real, unreal)
    assert change.change > 5 * change.change_se
    assert change.after.value > change.before.value


def test_kid_is_the_same_number_as_the_differentiable_mmd() -> None:
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    assert abs(kernel_distance(x, y).value - float(mmd2(x.double(), y.double()))) < 1e-9


def test_the_guard_pulls_unreal_images_towards_real_ones() -> None:
    real = render_landscapes(128, size=32, seed=7)
    guard = RealismGuard(real, torch.device("cpu"))
    fake = (1 - render_landscapes(32, size=32, seed=8)).requires_grad_(True)
    before = guard.loss(fake)
    before.backward()
    assert fake.grad is not None
    assert float(fake.grad.abs().sum()) > 0
    with torch.no_grad():
        stepped = (fake - 50 * fake.grad).clamp(0, 1)
    assert float(guard.loss(stepped)) < float(before.detach())
