"""The estimator's training set, read from the log: images of the serving lineage with their
counted impressions and positives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sqlalchemy.orm import Session

from app import aggregates, queries
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


def logged_batch(session: Session, settings: Settings, version_ids: list[int]) -> LoggedBatch:
    placement = settings.learning_placement
    images, trials, positives = [], [], []
    for version_id in version_ids:
        counts = aggregates.version_image_counts(
            session,
            settings,
            version_id,
            placement=placement,
            include_simulated=settings.use_simulated_traffic,
        )
        for count in counts:
            n = count.rated if placement == "rating" else count.impressions
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
