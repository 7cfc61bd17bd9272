"""A small, deterministic history for the pages to show: three versions in a lineage with
estimator and tuning metrics, and logged traffic (real and simulated, old and recent)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app import queries
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.models import Impression, Interaction, VersionStatus
from app.placeholder import placeholder_batch
from app.settings import Settings


@dataclass(frozen=True)
class Seeded:
    version_ids: list[int]  # oldest first; the last one is serving
    impressions: dict[tuple[int, bool], int]  # (version, simulated) -> background impressions
    interactions: dict[tuple[int, bool], int]  # (version, simulated) -> interactions


def _metrics(rng: random.Random, step: int) -> dict[str, object]:
    epochs = 24
    train = [0.05 * (0.82**e) + 0.012 + rng.random() * 0.002 for e in range(epochs)]
    holdout = [0.055 * (0.86**e) + 0.016 + rng.random() * 0.003 for e in range(epochs)]
    calibration = []
    for b in range(8):
        predicted = 0.08 + 0.03 * b + 0.01 * step
        calibration.append(
            {
                "bin_low": predicted - 0.012,
                "bin_high": predicted + 0.012,
                "predicted_mean": predicted,
                "observed_mean": predicted + (rng.random() - 0.5) * 0.04,
                "count": 4 + b % 3,
            }
        )
    logged = 30
    return {
        "estimator": {
            "train_loss": train,
            "holdout_loss": holdout,
            "calibration": calibration,
            "calibration_error": 0.011,
        },
        "tuning": {
            "loss_fool": [1.2 - 0.5 * (1 - 0.9**i) + rng.random() * 0.05 for i in range(logged)],
            "loss_anchor": [0.02 + 0.3 * (1 - 0.93**i) for i in range(logged)],
            "loss_diversity": [0.4 * 0.95**i for i in range(logged)],
            "loss_d": [1.35 + rng.random() * 0.08 for _ in range(logged)],
            "predicted_pir": [0.14 + 0.06 * (1 - 0.9**i) for i in range(logged)],
        },
        "estimated_delta": 0.012 + 0.004 * step,
    }


def seed_history(settings: Settings, *, per_image: int = 24, seed: int = 7) -> Seeded:
    rng = random.Random(seed)
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    first = ensure_initial_version(factory, settings, placeholder=True)
    assert first is not None, "seed_history needs an empty database"
    version_ids = [first]
    with session_scope(factory) as session:
        for step in (1, 2):
            version = queries.create_version(
                session,
                source="placeholder",
                parent_id=version_ids[-1],
                config={"size": 32},
                status=VersionStatus.ready,
            )
            queries.add_images(
                session,
                version.id,
                placeholder_batch(settings.batch_size, first_seed=1000 * step),
            )
            version.batch_size = settings.batch_size
            version.metrics = _metrics(rng, step)
            if step == 1:
                version.metrics = {
                    **version.metrics,
                    "comparison": {
                        "before_mean": 0.15,
                        "after_mean": 0.17,
                        "delta": 0.02,
                        "effect_size": 0.41,
                        "p_value": 0.031,
                        "significant": True,
                    },
                }
            queries.promote_version(session, version.id)
            version_ids.append(version.id)

    now = datetime.now(UTC)
    impressions: dict[tuple[int, bool], int] = {}
    interactions: dict[tuple[int, bool], int] = {}
    with session_scope(factory) as session:
        for age, version_id in enumerate(reversed(version_ids)):
            image_ids = queries.batch_image_ids(session, version_id)
            base_rate = 0.2 - 0.03 * age
            for image_id in image_ids:
                rate = min(max(base_rate + rng.gauss(0, 0.06), 0.01), 0.9)
                for n in range(per_image):
                    simulated = n % 4 != 0
                    # The serving version's traffic is recent (live counters); older is older.
                    created = now - timedelta(
                        minutes=rng.uniform(0, 25) if age == 0 else 60 * 24 * age + n
                    )
                    impression = Impression(
                        image_id=image_id,
                        version_id=version_id,
                        placement="background",
                        visitor_hash=f"seed-{rng.getrandbits(48):x}",
                        simulated=simulated,
                        flagged=False,
                        created_at=created,
                    )
                    session.add(impression)
                    session.flush()
                    key = (version_id, simulated)
                    impressions[key] = impressions.get(key, 0) + 1
                    if rng.random() < rate:
                        session.add(
                            Interaction(
                                impression_id=impression.id,
                                kind="click",
                                value=1.0,
                                created_at=created + timedelta(seconds=3),
                            )
                        )
                        interactions[key] = interactions.get(key, 0) + 1
    engine.dispose()
    return Seeded(version_ids=version_ids, impressions=impressions, interactions=interactions)
