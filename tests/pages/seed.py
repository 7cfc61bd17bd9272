"""A small, deterministic history for the pages to show.

The lineage v1 -> v2 -> v3 -> v4, oldest first:
- v1, the first version, with traffic two days old;
- v2, tuned from v1 and served before rollouts existed: its change is before/after;
- v3, tuned from v2 and promoted automatically by a rollout against v2 a day ago (the
  service's own decision rule at every look, on traffic the seed logs between looks);
- v4, tuned from v3, the candidate of a running rollout against v3 on the last half hour's
  traffic, looked at several times (its interval narrowing), no verdict yet.
With settings.holdout_share > 0 the first version also gets the holdout's share of that
half hour's traffic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app import queries, rollout
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory, session_scope
from app.models import GeneratorVersion, Rollout, RolloutStatus, VersionStatus
from app.placeholder import placeholder_batch
from app.settings import Settings

# Each image's true click rate is drawn around its version's mean.
VERSION_PIR = (0.12, 0.15, 0.32, 0.35)
IMAGE_SPREAD = 0.05
# Shares of the arms while a seeded rollout runs, and how often the scheduler looked.
CANDIDATE_SHARE = 0.5
LOOK_MINUTES = {"decided": 20.0, "running": 4.0}
# The live counters show the last 30 minutes: the running rollout's traffic lies inside.
LIVE_MINUTES = 25


@dataclass(frozen=True)
class Seeded:
    version_ids: list[int]  # the lineage, oldest first; the last is the running candidate
    champion_id: int  # serving: promoted over its parent by decided_rollout_id
    candidate_id: int  # served beside the champion in rollout_id
    rollout_id: int  # running
    decided_rollout_id: int  # promoted automatically
    looks: int  # looks at the running rollout
    impressions: dict[tuple[int, bool], int]  # (version, simulated) -> background impressions
    interactions: dict[tuple[int, bool], int]  # (version, simulated) -> interactions
    recent_impressions: int  # served in the live counters' window (the last 30 minutes)


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
        "image_quality": {
            "realism_kid": 0.0157 + 0.004 * step,
            "realism_kid_se": 0.0045,
            "diversity": 0.31 - 0.01 * step,
            "images": 500,
        },
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


@dataclass
class _Log:
    """Writes impressions with clicks and dwell reports, and counts what it wrote."""

    rng: random.Random
    true_pir: dict[int, list[float]] = field(default_factory=dict)  # version -> per image
    image_ids: dict[int, list[int]] = field(default_factory=dict)
    served: dict[int, list[int]] = field(default_factory=dict)
    impressions: dict[tuple[int, bool], int] = field(default_factory=dict)
    interactions: dict[tuple[int, bool], int] = field(default_factory=dict)
    recent: int = 0

    def add_version(self, session: Session, version_id: int, mean: float) -> None:
        self.image_ids[version_id] = queries.batch_image_ids(session, version_id)
        self.true_pir[version_id] = [
            min(max(mean + self.rng.gauss(0, IMAGE_SPREAD), 0.01), 0.9)
            for _ in self.image_ids[version_id]
        ]
        self.served[version_id] = [0] * len(self.image_ids[version_id])

    def serve(
        self,
        session: Session,
        arms: list[tuple[int, float]],
        count: int,
        *,
        start: datetime,
        end: datetime,
        now: datetime,
    ) -> None:
        """count impressions between start and end, each to an arm drawn at random with the
        arms' shares (as the service does) and to that arm's least-served image."""
        rows, outcomes = [], []
        versions = [version for version, _ in arms]
        weights = [share for _, share in arms]
        for _ in range(count):
            version = self.rng.choices(versions, weights)[0]
            served = self.served[version]
            index = served.index(min(served))
            served[index] += 1
            simulated = self.rng.random() < 0.25
            created = start + (end - start) * self.rng.random()
            rows.append(
                {
                    "image_id": self.image_ids[version][index],
                    "version_id": version,
                    "placement": "background",
                    "visitor_hash": f"seed-{self.rng.getrandbits(48):x}",
                    "simulated": simulated,
                    "created_at": created,
                }
            )
            clicked = self.rng.random() < self.true_pir[version][index]
            dwell = max(0.5, self.rng.gauss(9.0, 3.0)) if self.rng.random() < 0.7 else None
            outcomes.append((version, simulated, created, clicked, dwell))
            key = (version, simulated)
            self.impressions[key] = self.impressions.get(key, 0) + 1
            if created >= now - timedelta(minutes=30):
                self.recent += 1
        ids = queries.insert_impressions(session, rows)
        events = []
        for impression_id, (version, simulated, created, clicked, dwell) in zip(
            ids, outcomes, strict=True
        ):
            key = (version, simulated)
            if clicked:
                events.append(
                    {
                        "impression_id": impression_id,
                        "kind": "click",
                        "value": 1.0,
                        "created_at": created + timedelta(seconds=3),
                    }
                )
            if dwell is not None:
                events.append(
                    {
                        "impression_id": impression_id,
                        "kind": "dwell",
                        "value": round(dwell, 2),
                        "created_at": created + timedelta(seconds=dwell),
                    }
                )
            self.interactions[key] = self.interactions.get(key, 0) + clicked + (dwell is not None)
        queries.insert_new_interactions(session, events)


def _tuned(
    session: Session,
    settings: Settings,
    rng: random.Random,
    *,
    parent_id: int,
    step: int,
    created_at: datetime,
) -> GeneratorVersion:
    version = queries.create_version(
        session,
        source="placeholder",
        parent_id=parent_id,
        config={"size": 32},
        status=VersionStatus.ready,
    )
    queries.add_images(
        session, version.id, placeholder_batch(settings.batch_size, first_seed=1000 * step)
    )
    version.batch_size = settings.batch_size
    version.metrics = _metrics(rng, step)
    version.created_at = created_at
    return version


def _rollout_policy(settings: Settings) -> Settings:
    """A policy sized for the seed's small batches: decisions after a few hundred impressions,
    most sensitive to large changes (the policy is stored with each rollout, as in production)."""
    return settings.model_copy(
        update={
            "rollout_candidate_share": CANDIDATE_SHARE,
            "rollout_ramp_seconds": 120.0,
            "rollout_min_images_per_arm": min(8, settings.batch_size),
            "rollout_min_impressions_per_arm": 40,
            "rollout_mixing_lift": 0.6,
            "rollout_max_impressions_per_image": 200,
            "use_simulated_traffic": False,
        }
    )


def _run_rollout(
    session: Session,
    settings: Settings,
    log: _Log,
    candidate: GeneratorVersion,
    *,
    started: datetime,
    looks: int,
    look_minutes: float,
    per_look: int,
    now: datetime,
    holdout: tuple[int, float] | None = None,
) -> Rollout:
    """Start a rollout of candidate at `started`, then log traffic and look (the scheduler's
    check) every look_minutes, as the service does, until a decision or `looks` looks."""
    policy = _rollout_policy(settings)
    row = rollout.start_rollout(session, policy, candidate)
    assert row is not None, "the seed starts one rollout at a time, beside a champion"
    row.started_at = started
    row.ramp_until = started + timedelta(seconds=policy.rollout_ramp_seconds)
    champion = row.champion_id
    rest = 1.0 - (holdout[1] if holdout else 0.0)
    arms = [(champion, rest * (1 - CANDIDATE_SHARE)), (candidate.id, rest * CANDIDATE_SHARE)]
    if holdout is not None:
        arms.append(holdout)
    for look in range(looks):
        begin = row.ramp_until + timedelta(minutes=look * look_minutes)
        end = begin + timedelta(minutes=look_minutes)
        log.serve(session, arms, per_look, start=begin, end=end, now=now)
        session.flush()
        rollout.check_running(session, policy)
        # Core updates (a promotion) leave loaded versions stale: read them afresh.
        session.flush()
        session.expire_all()
        checks = rollout.rollout_checks(session, row.id)
        if checks:
            checks[-1].checked_at = end
        row.latest = {**row.latest, "checked_at": end.isoformat()}
        if row.status != RolloutStatus.running:
            _backdate_decision(session, row, end)
            break
    return row


def _backdate_decision(session: Session, row: Rollout, when: datetime) -> None:
    row.decided_at = when
    candidate = queries.get_version(session, row.candidate_id)
    champion = queries.get_version(session, row.champion_id)
    assert candidate is not None
    assert champion is not None
    record = dict(candidate.metrics.get("rollout") or {})
    candidate.metrics = {**candidate.metrics, "rollout": {**record, "decided_at": when.isoformat()}}
    if row.status == RolloutStatus.promoted:
        candidate.promoted_at = when
        champion.retired_at = when
    else:
        candidate.retired_at = when


@contextmanager
def _sessions(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def seed_history(
    settings: Settings,
    *,
    per_image: int = 24,
    looks: int = 6,
    seed: int = 7,
) -> Seeded:
    """per_image: impressions per image of v1 and v2 before rollouts; looks: looks at the
    running rollout (each after about six impressions per image and arm)."""
    rng = random.Random(seed)
    engine = make_engine(settings.resolved_database_url)
    first = ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    assert first is not None, "seed_history needs an empty database"
    now = datetime.now(UTC)
    log = _Log(rng)
    per_look = 12 * settings.batch_size
    with _sessions(settings) as session:
        v1 = queries.get_version(session, first)
        assert v1 is not None
        v1.created_at = v1.promoted_at = now - timedelta(hours=50, minutes=10)
        log.add_version(session, first, VERSION_PIR[0])
        log.serve(
            session,
            [(first, 1.0)],
            per_image * settings.batch_size,
            start=now - timedelta(hours=50),
            end=now - timedelta(hours=48),
            now=now,
        )
        # v2: promoted straight away, before rollouts existed.
        v2 = _tuned(
            session,
            settings,
            rng,
            parent_id=first,
            step=1,
            created_at=now - timedelta(hours=27, minutes=30),
        )
        queries.promote_version(session, v2.id)
        v2.promoted_at = now - timedelta(hours=27)
        log.add_version(session, v2.id, VERSION_PIR[1])
        log.serve(
            session,
            [(v2.id, 1.0)],
            per_image * settings.batch_size,
            start=now - timedelta(hours=27),
            end=now - timedelta(hours=25),
            now=now,
        )
        # v3: a rollout against v2 a day ago, decided by the rule at one of its looks.
        v3 = _tuned(
            session,
            settings,
            rng,
            parent_id=v2.id,
            step=2,
            created_at=now - timedelta(hours=24, minutes=20),
        )
        log.add_version(session, v3.id, VERSION_PIR[2])
        decided = _run_rollout(
            session,
            settings,
            log,
            v3,
            started=now - timedelta(hours=24),
            looks=12,
            look_minutes=LOOK_MINUTES["decided"],
            per_look=per_look,
            now=now,
        )
        assert decided.status == RolloutStatus.promoted, decided.reason
        # v4: the candidate now, against v3, on the last half hour's traffic.
        v4 = _tuned(
            session,
            settings,
            rng,
            parent_id=v3.id,
            step=3,
            created_at=now - timedelta(minutes=LIVE_MINUTES + 3),
        )
        log.add_version(session, v4.id, VERSION_PIR[3])
        held = rollout.holdout_version_id(session, settings)
        running = _run_rollout(
            session,
            settings,
            log,
            v4,
            started=now - timedelta(minutes=LIVE_MINUTES + 2),
            looks=looks,
            look_minutes=(LIVE_MINUTES - 1) / looks,
            per_look=per_look,
            now=now,
            holdout=(held, settings.holdout_share) if held is not None else None,
        )
        assert running.status == RolloutStatus.running, running.reason
        version_ids = [first, v2.id, v3.id, v4.id]
        ids = (v3.id, v4.id, running.id, decided.id)
    return Seeded(
        version_ids=version_ids,
        champion_id=ids[0],
        candidate_id=ids[1],
        rollout_id=ids[2],
        decided_rollout_id=ids[3],
        looks=looks,
        impressions=log.impressions,
        interactions=log.interactions,
        recent_impressions=log.recent,
    )
