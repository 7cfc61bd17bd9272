"""How far a generator's images are from real landscapes: a kernel inception distance.

Tuning against an estimator can drift a generator away from anything real while PIR rises
(the paper saw partial collapse); diversity alone does not show it. The measure is the KID of
Bińkowski, Sutherland, Arbel & Gretton ("Demystifying MMD GANs", ICLR 2018): the unbiased
estimate of the squared maximum mean discrepancy between two image sets in a network's feature
space, with the cubic polynomial kernel k(a, b) = (a·b / d + 1)³. Unlike FID it is unbiased, so
identical distributions give about zero at any sample size, and its estimates average.

Features are the reference network's last convolutional layer, averaged over space (its
penultimate representation; reference_net.py, the network the `filter:` objectives use). Real
images are held-out landscapes from a seed no GAN or reference network trained on.

KID here is the U-statistic over all pairs of the two sets (not the mean over small subsets
that the paper's code reports, which has a larger variance). Its standard error is the
delete-a-group jackknife (Efron & Stein 1981; valid for U-statistics): both sets are cut into B
groups, the statistic is recomputed with group g of each set left out, and
SE² = (B - 1) / B · Σ_g (θ_(g) - mean θ_(.))².
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from worker.ml.landscapes import render_landscapes
from worker.ml.reference_net import Reference, load_reference

HELD_OUT_SEED = 424_242
"""Seed of the real landscapes KID compares with; no pretraining or reference net uses it."""
MAX_IMAGES = 1000
"""Images per side at most: the kernel matrices grow quadratically, and at 1000 a side KID's
standard error is already well below the differences between generators worth seeing."""
GROUPS = 10
"""Jackknife groups for the standard error."""
MIN_GROUP = 2
FEATURE_BATCH = 250


@dataclass(frozen=True)
class KernelDistance:
    """KID between a set of images and real ones, with its standard error."""

    value: float
    standard_error: float
    images: int
    real_images: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "kid": self.value,
            "kid_se": self.standard_error,
            "kid_images": self.images,
            "kid_real_images": self.real_images,
        }


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a, b) = (a·b / d + 1)³ for every pair of rows: [n, d] x [m, d] -> [n, m]."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² of feature sets x and y as a tensor (differentiable; the tuning guard)."""
    return _mmd2(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def _mmd2(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² from the kernel matrices (diagonals of Kxx and Kyy left out): KID takes
    it from matrices computed once, for the estimate and every jackknife replicate."""
    n, m = kxx.shape[0], kyy.shape[0]
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kxy.mean()


def _jackknife(
    statistic: Callable[..., float], sizes: Sequence[int], *, groups: int = GROUPS
) -> float:
    """The delete-a-group jackknife standard error (module docstring) of `statistic`, a
    function of one boolean keep-mask per set, for sets of `sizes` items. Every set is cut into
    the same number of groups (item i in group i % groups, at least MIN_GROUP items a group),
    and group g of every set is left out together."""
    groups = max(2, min(groups, *(size // MIN_GROUP for size in sizes)))
    membership = [torch.arange(size) % groups for size in sizes]
    left_out = [statistic(*(group != g for group in membership)) for g in range(groups)]
    mean = sum(left_out) / groups
    return math.sqrt((groups - 1) / groups * sum((t - mean) ** 2 for t in left_out))


def kernel_distance(x: torch.Tensor, y: torch.Tensor, *, groups: int = GROUPS) -> KernelDistance:
    """KID between feature sets x [n, d] and y [m, d] with its jackknife standard error."""
    if min(x.shape[0], y.shape[0]) < 2 * MIN_GROUP:
        raise ValueError(
            f"KID needs at least {2 * MIN_GROUP} images a side, got {x.shape[0]} and {y.shape[0]}"
        )
    x, y = x.double(), y.double()
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)

    def kid(keep_x: torch.Tensor, keep_y: torch.Tensor) -> float:
        return float(_mmd2(kxx[keep_x][:, keep_x], kyy[keep_y][:, keep_y], kxy[keep_x][:, keep_y]))

    value = float(_mmd2(kxx, kyy, kxy))  # the same number as mmd2(x, y)
    se = _jackknife(kid, (x.shape[0], y.shape[0]), groups=groups)
    return KernelDistance(value, se, x.shape[0], y.shape[0])


def differentiable_features(images: torch.Tensor, reference: Reference) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> [N, C]: the reference network's last layer, averaged over
    space, on the network's device. Images are resized (with antialiasing) to the size the
    network was trained at."""
    network = reference.network
    size = getattr(getattr(network, "cfg", None), "image_size", None)
    images = images.float().to(next(network.parameters()).device)
    if size is not None and images.shape[-1] != size:
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
    return list(reference.activations(images).values())[-1].mean(dim=(2, 3))


@torch.no_grad()
def reference_features(images: torch.Tensor, reference: Reference | None = None) -> torch.Tensor:
    """differentiable_features in batches, without gradients, returned on the CPU."""
    reference = reference or load_reference()
    return torch.cat(
        [
            differentiable_features(images[start : start + FEATURE_BATCH], reference).cpu()
            for start in range(0, images.shape[0], FEATURE_BATCH)
        ]
    )


@lru_cache(maxsize=4)
def _real_features(count: int, size: int) -> torch.Tensor:
    return reference_features(render_landscapes(count, size=size, seed=HELD_OUT_SEED))


@dataclass(frozen=True)
class RealismChange:
    """KID before and after (each against the same real images) and after − before, whose
    jackknife leaves the same groups out of all three sets so the shared real set cancels."""

    before: KernelDistance
    after: KernelDistance
    change: float
    change_se: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "realism_pre": self.before.value,
            "realism_pre_se": self.before.standard_error,
            "realism_post": self.after.value,
            "realism_post_se": self.after.standard_error,
            "realism_change": self.change,
            "realism_change_se": self.change_se,
        }


def realism_change(before: torch.Tensor, after: torch.Tensor) -> RealismChange:
    """KID of two image sets of the same side against one held-out real set, and the change."""
    count = min(before.shape[0], after.shape[0], MAX_IMAGES)
    b = reference_features(before[:count].detach().cpu()).double()
    a = reference_features(after[:count].detach().cpu()).double()
    r = _real_features(count, before.shape[-1]).double()
    kbb, kaa, krr = polynomial_kernel(b, b), polynomial_kernel(a, a), polynomial_kernel(r, r)
    kbr, kar = polynomial_kernel(b, r), polynomial_kernel(a, r)

    def change(keep: torch.Tensor) -> float:
        return float(_mmd2(kaa[keep][:, keep], krr[keep][:, keep], kar[keep][:, keep])) - float(
            _mmd2(kbb[keep][:, keep], krr[keep][:, keep], kbr[keep][:, keep])
        )

    every = torch.ones(count, dtype=torch.bool)
    return RealismChange(
        before=kernel_distance(b, r),
        after=kernel_distance(a, r),
        change=change(every),
        change_se=_jackknife(change, (count,)),
    )


def realism(images: torch.Tensor) -> KernelDistance:
    """KID between images [N, 3, S, S] in [0, 1] and as many held-out real landscapes of side S
    (at most MAX_IMAGES a side; lower is more realistic, about 0 for real-looking sets)."""
    images = images[:MAX_IMAGES].detach().cpu()
    fake = reference_features(images)
    real = _real_features(images.shape[0], images.shape[-1])
    return kernel_distance(fake, real)
