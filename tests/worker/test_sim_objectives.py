"""neg:SPEC objectives like what SPEC's people dislike."""

from __future__ import annotations

import pytest
import torch

from worker.sim.objectives import load_objective


def test_neg_is_one_minus_its_objective() -> None:
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    blue = load_objective("color:blue")
    not_blue = load_objective("neg:color:blue")
    assert torch.allclose(not_blue(images), 1 - blue(images))
    assert not_blue.spec == "neg:color:blue"
    assert not_blue.describe() == f"one minus ({blue.describe()})"
    pure_blue = torch.zeros(1, 3, 4, 4)
    pure_blue[:, 2] = 1
    assert not_blue(pure_blue).tolist() == pytest.approx([0.0])


def test_neg_of_neg_is_the_objective() -> None:
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    twice = load_objective("neg:neg:color:red-green")
    assert torch.allclose(twice(images), load_objective("color:red-green")(images))


def test_neg_of_a_bad_spec_fails_like_the_spec() -> None:
    with pytest.raises(ValueError, match="unknown kind 'colour'"):
        load_objective("neg:colour:blue")
    with pytest.raises(ValueError, match="must look like KIND:ARGS"):
        load_objective("neg:")
