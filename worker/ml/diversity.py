"""How varied a set of images is, to show that tuning kept the generator's diversity.

The score is the mean pairwise Euclidean distance between images after average-pooling them to
8x8 pixels, divided by the square root of the dimension (3*8*8), i.e. the root-mean-square
per-pixel difference of two random images' coarse layouts and colours. Pooling ignores pixel
noise and texture, so the score drops when the generator collapses onto a few compositions or
palettes, the failure the paper saw, and not when it merely sharpens details.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POOLED_SIZE = 8
MAX_IMAGES = 1000
"""Pairs grow quadratically; a fixed subset of 1000 images gives a stable estimate."""


def pooled_features(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> [N, 3*8*8] coarse features (differentiable)."""
    return F.adaptive_avg_pool2d(images.float(), POOLED_SIZE).flatten(1)


def mean_pairwise_distance(features: torch.Tensor) -> torch.Tensor:
    """Mean distance over distinct pairs, scaled by sqrt(dim) (differentiable)."""
    n = features.shape[0]
    if n < 2:
        return features.new_tensor(0.0)
    squared = (features[:, None, :] - features[None, :, :]).pow(2).sum(-1)
    # The epsilon keeps the sqrt differentiable on the zero diagonal.
    distances = (squared + 1e-12).sqrt()
    off_diagonal = distances.sum() - distances.diagonal().sum()
    return off_diagonal / (n * (n - 1)) / math.sqrt(features.shape[1])


@torch.no_grad()
def diversity_score(images: torch.Tensor) -> float:
    """Mean pairwise RMS distance of 8x8-pooled images; 0 when all images are identical."""
    if images.shape[0] > MAX_IMAGES:
        index = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
        images = images[index[:MAX_IMAGES]]
    features = pooled_features(images.cpu())
    distances = torch.cdist(features.double(), features.double())
    n = features.shape[0]
    if n < 2:
        return 0.0
    return float(distances.sum() / (n * (n - 1)) / math.sqrt(features.shape[1]))
