"""The realism measure: KID with a jackknife standard error, and tuning's realism guard."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from worker.ml import realism as realism_module
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


def _brute_mmd2(x: list[list[float]], y: list[list[float]]) -> float:
    """The unbiased MMD² written out pair by pair, with the cubic kernel."""

    def k(a: list[float], b: list[float]) -> float:
        return (sum(p * q for p, q in zip(a, b, strict=True)) / len(a) + 1) ** 3

    def within(s: list[list[float]]) -> float:
        pairs = list(itertools.permutations(range(len(s)), 2))
        return sum(k(s[i], s[j]) for i, j in pairs) / len(pairs)

    cross = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return within(x) + within(y) - 2 * cross


def _brute_jackknife(replicates: list[float]) -> float:
    groups = len(replicates)
    mean = sum(replicates) / groups
    return math.sqrt((groups - 1) / groups * sum((t - mean) ** 2 for t in replicates))


def _without_group(rows: list[list[float]], g: int, groups: int) -> list[list[float]]:
    return [row for i, row in enumerate(rows) if i % groups != g]


def test_kid_and_its_standard_error_match_a_brute_force_jackknife() -> None:
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(2)).double()
    y = (torch.randn(8, 3, generator=torch.Generator().manual_seed(3)) + 0.4).double()
    xs, ys = x.tolist(), y.tolist()
    for groups in (2, 4):  # 4 = the most that leaves MIN_GROUP of 8 images in each group
        result = kernel_distance(x, y, groups=groups)
        replicates = [
            _brute_mmd2(_without_group(xs, g, groups), _without_group(ys, g, groups))
            for g in range(groups)
        ]
        assert result.value == pytest.approx(_brute_mmd2(xs, ys), rel=1e-12)
        assert result.standard_error == pytest.approx(_brute_jackknife(replicates), rel=1e-9)


def test_the_change_and_its_standard_error_match_a_brute_force_paired_jackknife(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = torch.Generator().manual_seed(4)
    before, after, real = (torch.randn(12, 3, generator=generator) + s for s in (0.0, 0.5, 0.1))
    # Features are the inputs themselves, so the brute force needs no reference network.
    monkeypatch.setattr(realism_module, "reference_features", lambda images: images)
    monkeypatch.setattr(realism_module, "_real_features", lambda count, size: real[:count])
    result = realism_change(before, after)
    b, a, r = before.double().tolist(), after.double().tolist(), real.double().tolist()
    groups = 6  # 12 images a side, MIN_GROUP of them a group, capped at GROUPS = 10

    def change(b: list[list[float]], a: list[list[float]], r: list[list[float]]) -> float:
        return _brute_mmd2(a, r) - _brute_mmd2(b, r)

    replicates = [
        change(*(_without_group(rows, g, groups) for rows in (b, a, r))) for g in range(groups)
    ]
    assert result.change == pytest.approx(change(b, a, r), rel=1e-12)
    assert result.change_se == pytest.approx(_brute_jackknife(replicates), rel=1e-9)
    assert result.before.value == pytest.approx(_brute_mmd2(b, r), rel=1e-12)
    assert result.after.value == pytest.approx(_brute_mmd2(a, r), rel=1e-12)


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
