from __future__ import annotations

import random
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from worker.sim.objectives import load_objective, observe_binomial, rating_from_probability


def _solid(*colours: tuple[float, float, float], size: int = 12) -> torch.Tensor:
    """One image of vertical strips of the given colours (left to right)."""
    strips = [torch.tensor(c).view(3, 1, 1).expand(3, size, size // len(colours)) for c in colours]
    return torch.cat(strips, dim=2).unsqueeze(0)


def test_single_colour_share() -> None:
    blue = load_objective("color:blue")
    images = torch.cat([_solid((0, 0, 1)), _solid((0.5, 0.5, 0.5)), _solid((1, 0, 0))])
    assert blue(images).tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert blue.spec == "color:blue"
    assert "blue" in blue.describe()


def test_split_colours_follow_width() -> None:
    red_green = load_objective("color:red-green")
    right_way = _solid((1, 0, 0), (0, 1, 0))
    wrong_way = _solid((0, 1, 0), (1, 0, 0))
    assert red_green(right_way).item() == pytest.approx(1.0)
    assert red_green(wrong_way).item() == pytest.approx(0.0)
    three = load_objective("color:green-blue-red")
    assert three(_solid((0, 1, 0), (0, 0, 1), (1, 0, 0))).item() == pytest.approx(1.0)


@pytest.mark.slow
def test_filter_objective_is_a_share_in_unit_range() -> None:
    objective = load_objective("filter:conv3_1:4:0")
    images = torch.rand(5, 3, 32, 32)
    values = objective(images)
    assert values.shape == (5,)
    assert ((values > 0) & (values < 1)).all()
    # Selecting every filter of the layer gives the whole layer's norm.
    whole = load_objective(
        f"filter:conv1_1:{objective.reference.activations(images)['conv1_1'].shape[1]}:3"
    )
    assert whole(images) == pytest.approx(torch.ones(5), abs=1e-5)
    assert "conv3_1" in objective.describe()


def test_py_objective_from_module_outside_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "my_pir_objective.py"
    module.write_text(
        textwrap.dedent(
            '''
            """Test objective."""

            def brightness(images):
                """Mean brightness of the image."""
                return images.mean(dim=(1, 2, 3))
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    objective = load_objective("py:my_pir_objective:brightness")
    images = torch.stack([torch.full((3, 8, 8), 0.25), torch.full((3, 8, 8), 0.75)])
    assert objective(images).tolist() == pytest.approx([0.25, 0.75])
    assert objective.describe() == "Mean brightness of the image."
    sys.modules.pop("my_pir_objective", None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blue", "KIND:ARGS"),
        ("color:purple", "one to three"),
        ("color:red-green-blue-red", "one to three"),
        ("filter:conv9_9:3:0", "unknown layer"),
        ("filter:conv1_1:x:0", "integers"),
        ("filter:conv1_1:3", "filter:LAYER:K:SEED"),
        ("filter:conv1_1:100000:0", "K must be"),
        ("py:no_such_module_xyz:f", "no_such_module_xyz"),
        ("py:math:no_such_callable", "no_such_callable"),
        ("py:math", "py:MODULE:CALLABLE"),
        ("sound:loud", "unknown kind"),
    ],
)
def test_bad_specs_raise(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_objective(spec)


def test_observe_binomial_matches_rates() -> None:
    gen = torch.Generator().manual_seed(0)
    true_pir = torch.tensor([0.1, 0.5, 0.9]).repeat(2000)
    positives = observe_binomial(true_pir, 100, generator=gen)
    rates = (positives / 100).view(2000, 3).mean(0)
    assert rates.tolist() == pytest.approx([0.1, 0.5, 0.9], abs=0.01)
    assert positives.max() <= 100
    again = observe_binomial(true_pir, 100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(positives, again)


def test_rating_mean_rises_with_probability() -> None:
    rng = random.Random(0)
    means = [sum(rating_from_probability(p, rng) for _ in range(4000)) / 4000 for p in (0, 0.5, 1)]
    assert means[0] == 1.0
    assert means[1] == pytest.approx(3.0, abs=0.1)
    assert means[2] == 5.0
