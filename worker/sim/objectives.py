"""Simulated objectives: the "true" PIR of an image, standing in for people in offline runs.

Specs (all return a PIR in [0, 1] per image):
  color:red | color:green | color:blue
      the targeted colour's share of the image's total value (sum over pixels of that channel
      over the sum of all channels), as the paper's colour objectives.
  color:red-green, color:green-blue-red, ... (two or three colours)
      the image is split along its width into equal vertical strips; each strip scores its own
      colour's share within the strip, and the PIR is the mean over strips.
  filter:LAYER:K:SEED
      in the VGG16-shaped reference network (see worker.ml.reference_net), the norm of the
      activity of K filters of LAYER (conv1_1 ... conv5_3), chosen without replacement with SEED,
      over the norm of the whole layer's activity, as the paper's filter objectives.
  py:MODULE:CALLABLE
      any importable callable taking images [N, 3, H, W] in [0, 1] and returning [N].
  neg:SPEC
      one minus the objective SPEC: people who like what SPEC's people dislike (a second
      population pulling the other way, e.g. 'color:blue=0.7,neg:color:blue=0.3').
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any, Protocol

import torch

COLOURS = {"red": 0, "green": 1, "blue": 2}


class Objective(Protocol):
    spec: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str: ...


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"objectives take images [N, 3, H, W], got {tuple(images.shape)}")


class ColourObjective:
    """Share of the targeted colour per vertical strip (one strip for a single colour)."""

    def __init__(self, spec: str, colours: list[str]) -> None:
        self.spec = spec
        self.colours = colours
        self.channels = [COLOURS[c] for c in colours]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        strips = torch.tensor_split(images.float(), len(self.channels), dim=3)
        shares = [
            strip[:, channel].sum((1, 2)) / strip.sum((1, 2, 3)).clamp(min=1e-6)
            for strip, channel in zip(strips, self.channels, strict=True)
        ]
        return torch.stack(shares, 1).mean(1).clamp(0, 1)

    def describe(self) -> str:
        if len(self.colours) == 1:
            return f"share of {self.colours[0]} in the image's total value"
        return (
            f"mean share of {', '.join(self.colours)} in {len(self.colours)} vertical strips, "
            "left to right"
        )


class FilterObjective:
    """Relative activity of K chosen filters in a layer of the reference network."""

    def __init__(self, spec: str, layer: str, k: int, seed: int) -> None:
        from worker.ml.reference_net import load_reference, vgg16_layer_names

        if layer not in vgg16_layer_names():
            raise ValueError(
                f"objective {spec!r}: unknown layer {layer!r}; choose from {vgg16_layer_names()}"
            )
        self.spec = spec
        self.layer = layer
        self.reference = load_reference()
        probe = self.reference.activations(torch.zeros(1, 3, 32, 32))[layer]
        channels = probe.shape[1]
        if not 1 <= k <= channels:
            raise ValueError(f"objective {spec!r}: K must be in 1..{channels} for {layer}")
        chosen = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))[:k]
        self.filters = chosen.sort().values

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        out = []
        for start in range(0, len(images), 512):
            acts = self.reference.activations(images[start : start + 512].float().cpu())[self.layer]
            chosen = acts[:, self.filters].flatten(1).norm(dim=1)
            total = acts.flatten(1).norm(dim=1).clamp(min=1e-8)
            out.append(chosen / total)
        return torch.cat(out).clamp(0, 1) if out else torch.zeros(0)

    def describe(self) -> str:
        return (
            f"relative activity of {len(self.filters)} filters of {self.layer} in the "
            f"{self.reference.description}"
        )


class CallableObjective:
    """A user-supplied callable, checked to return one value in [0, 1] per image."""

    def __init__(self, spec: str, func: Callable[[torch.Tensor], Any]) -> None:
        self.spec = spec
        self.func = func

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        values = torch.as_tensor(self.func(images), dtype=torch.float32).detach().cpu()
        if values.shape != (images.shape[0],):
            raise ValueError(
                f"objective {self.spec!r} returned shape {tuple(values.shape)}, "
                f"expected ({images.shape[0]},)"
            )
        return values.clamp(0, 1)

    def describe(self) -> str:
        doc = (self.func.__doc__ or "").strip().splitlines()
        return doc[0] if doc else f"user objective {self.spec}"


class NegatedObjective:
    """One minus another objective."""

    def __init__(self, spec: str, inner: Objective) -> None:
        self.spec = spec
        self.inner = inner

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.inner(images)).clamp(0, 1)

    def describe(self) -> str:
        return f"one minus ({self.inner.describe()})"


def load_objective(spec: str) -> Objective:
    """Parse an objective spec (see the module docstring); bad specs raise ValueError."""
    kind, sep, rest = spec.strip().partition(":")
    if not sep or not rest:
        raise ValueError(
            f"objective spec {spec!r} must look like KIND:ARGS (color:, filter:, py:, neg:)"
        )
    if kind == "neg":
        return NegatedObjective(spec, load_objective(rest))
    if kind == "color":
        colours = rest.split("-")
        unknown = [c for c in colours if c not in COLOURS]
        if unknown or not 1 <= len(colours) <= 3:
            raise ValueError(
                f"objective {spec!r}: give one to three of {sorted(COLOURS)} joined by '-'"
            )
        return ColourObjective(spec, colours)
    if kind == "filter":
        parts = rest.split(":")
        if len(parts) != 3:
            raise ValueError(f"objective {spec!r} must be filter:LAYER:K:SEED")
        layer, k_text, seed_text = parts
        try:
            k, seed = int(k_text), int(seed_text)
        except ValueError:
            raise ValueError(f"objective {spec!r}: K and SEED must be integers") from None
        return FilterObjective(spec, layer, k, seed)
    if kind == "py":
        module_name, sep, attr = rest.rpartition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"objective {spec!r} must be py:MODULE:CALLABLE")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any import-time failure means the spec is unusable
            raise ValueError(
                f"objective {spec!r}: cannot import module {module_name!r}: {exc}"
            ) from exc
        func = getattr(module, attr, None)
        if func is None or not callable(func):
            raise ValueError(f"objective {spec!r}: module {module_name!r} has no callable {attr!r}")
        return CallableObjective(spec, func)
    raise ValueError(
        f"objective {spec!r}: unknown kind {kind!r} (use color:, filter:, py: or neg:)"
    )


def observe_binomial(
    true_pir: torch.Tensor, impressions: int | torch.Tensor, *, generator: torch.Generator
) -> torch.Tensor:
    """Positive counts when each image is shown `impressions` times (float tensor [N])."""
    probs = true_pir.detach().double().cpu().clamp(0, 1)
    counts = torch.as_tensor(impressions, dtype=torch.float64).expand_as(probs).contiguous()
    if (counts < 0).any():
        raise ValueError("impressions must be non-negative")
    return torch.binomial(counts, probs, generator=generator).float()


class _UniformSource(Protocol):
    def random(self) -> float: ...


def rating_from_probability(p: float, rng: _UniformSource) -> int:
    """A 1..5 star rating from a person whose chance of a positive interaction is p.

    Mapping: 1 + Binomial(4, p), i.e. four independent "one more star" chances of p each. The
    mean rating is 1 + 4p (rising linearly with p), and (rating - 1) / 4 is an unbiased estimate
    of p, so ratings and clicks measure the same PIR. `rng` is anything with .random() in
    [0, 1): random.Random or numpy.random.Generator.
    """
    if math.isnan(p):
        raise ValueError("p must be a probability, got NaN")
    p = min(max(p, 0.0), 1.0)
    return 1 + sum(1 for _ in range(4) if rng.random() < p)
