"""The estimator's training set, read from the log: the images of every arm that was served
(the champion's lineage, the candidates rolled out beside it, promoted or rejected, and the
holdout) with their counted impressions and positives, so no arm's traffic is wasted."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sqlalchemy.orm import Session

from app import queries, rollout
from app.measurement import Measurement
from app.settings import Settings
from worker.ml.sampling import png_to_image


@dataclass
class LoggedBatch:
    images: torch.Tensor  # [N, 3, H, W] in [0, 1]
    impressions: torch.Tensor  # [N] trials (rated impressions for the rating placement)
    positives: torch.Tensor  # [N] positives (sum of star weights for ratings)
    version_ids: list[int]

    def __len__(self) -> int:
        return int(self.impressions.shape[0])


def lineage(session: Session, version_id: int, depth: int) -> list[int]:
    """version_id and its ancestors, newest first, at most depth of them."""
    ids: list[int] = []
    current = queries.get_version(session, version_id)
    while current is not None and len(ids) < depth:
        ids.append(current.id)
        current = queries.get_version(session, current.parent_id) if current.parent_id else None
    return ids


def training_versions(session: Session, settings: Settings, champion_id: int) -> list[int]:
    """The champion's lineage (history_versions deep), every candidate rolled out against one
    of them, and the holdout: newest first, each once."""
    ancestry = lineage(session, champion_id, settings.history_versions)
    rolled_out = [
        r.candidate_id
        for r in rollout.list_rollouts(session, limit=500)
        if r.champion_id in ancestry
    ]
    holdout = rollout.holdout_version_id(session, settings)
    ordered = sorted({*ancestry, *rolled_out, *([holdout] if holdout else [])}, reverse=True)
    return ordered


def logged_batch(session: Session, settings: Settings, version_ids: list[int]) -> LoggedBatch:
    measure = Measurement.learning(settings)
    placement = measure.placement
    images, trials, positives = [], [], []
    for version_id in version_ids:
        for count in measure.counts(session, version_id):
            n = count.trials(placement)
            if n == 0:
                continue
            image = queries.get_image(session, count.image_id)
            assert image is not None
            images.append(png_to_image(bytes(image.png)))
            trials.append(float(n))
            positives.append(count.positives)
    if not images:
        raise ValueError(f"no logged {placement} impressions for versions {version_ids}")
    return LoggedBatch(
        images=torch.stack(images),
        impressions=torch.tensor(trials),
        positives=torch.tensor(positives),
        version_ids=version_ids,
    )
