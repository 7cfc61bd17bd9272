"""Rollouts at the count level: synthetic logs in a real database (SQLite and PostgreSQL),
the service's own decision code reading them at every tick."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app import dashboard, queries, rollout
from app.database import make_engine, make_session_factory, session_scope
from app.models import GeneratorVersion, RolloutStatus, VersionStatus, utcnow
from app.placeholder import placeholder_batch
from app.settings import Settings
from tests.conftest import make_settings

IMAGES = 40


@pytest.fixture
def rollout_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        batch_size=IMAGES,
        use_simulated_traffic=True,
        rollout_ramp_seconds=0,
        rollout_min_images_per_arm=20,
        rollout_min_impressions_per_arm=400,
        rollout_max_impressions_per_image=150,
    )


@pytest.fixture
def sessions(rollout_settings: Settings) -> Iterator[object]:
    engine = make_engine(rollout_settings.resolved_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def add_version(
    session: Session, *, status: VersionStatus, parent_id: int | None, seed: int
) -> GeneratorVersion:
    version = queries.create_version(session, source="test", parent_id=parent_id, status=status)
    rows = placeholder_batch(IMAGES, first_seed=seed)
    queries.add_images(session, version.id, rows)
    version.batch_size = IMAGES
    return version


def champion_and_candidate(sessions: object, settings: Settings) -> tuple[int, int, int]:
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        champion = add_version(session, status=VersionStatus.ready, parent_id=None, seed=0)
        queries.promote_version(session, champion.id)
        candidate = add_version(
            session, status=VersionStatus.ready, parent_id=champion.id, seed=10_000
        )
        started = rollout.start_rollout(session, settings, candidate)
        assert started is not None
        return champion.id, candidate.id, started.id


class SyntheticTraffic:
    """Impressions assigned to the arms at random (as the picker does), the least-served
    image within an arm, clicks with each image's true PIR."""

    def __init__(self, sessions: object, arms: dict[int, list[float]], seed: int) -> None:
        self.sessions = sessions
        self.rng = random.Random(seed)
        self.arms = arms
        with session_scope(sessions) as session:  # type: ignore[arg-type]
            self.images = {v: queries.batch_image_ids(session, v) for v in arms}
        self.served = {v: [0] * IMAGES for v in arms}

    def send(self, impressions: int, *, candidate_share: float = 0.5) -> None:
        champion, candidate = list(self.arms)
        rows, clicks = [], []
        for _ in range(impressions):
            version = candidate if self.rng.random() < candidate_share else champion
            served = self.served[version]
            index = served.index(min(served))
            served[index] += 1
            rows.append(
                {
                    "image_id": self.images[version][index],
                    "version_id": version,
                    "placement": "background",
                    "visitor_hash": f"v{self.rng.randrange(10**6)}",
                    "simulated": True,
                }
            )
            clicks.append(self.rng.random() < self.arms[version][index])
        with session_scope(self.sessions) as session:  # type: ignore[arg-type]
            ids = queries.insert_impressions(session, rows)
            queries.insert_new_interactions(
                session,
                [
                    {"impression_id": i, "kind": "click", "value": 1.0}
                    for i, clicked in zip(ids, clicks, strict=True)
                    if clicked
                ],
            )


def true_pirs(rng: random.Random, mean: float) -> list[float]:
    return [min(1.0, max(0.0, rng.gauss(mean, 0.08))) for _ in range(IMAGES)]


def run_ticks(
    sessions: object, settings: Settings, traffic: SyntheticTraffic, *, ticks: int, per_tick: int
) -> str:
    for _ in range(ticks):
        traffic.send(per_tick)
        with session_scope(sessions) as session:  # type: ignore[arg-type]
            rollout.check_running(session, settings)
            if rollout.running_rollout(session) is None:
                break
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        last = rollout.list_rollouts(session, limit=1)[0]
        return last.status


def test_clearly_better_candidate_is_promoted(sessions: object, rollout_settings: Settings) -> None:
    champion, candidate, _ = champion_and_candidate(sessions, rollout_settings)
    rng = random.Random(1)
    arms = {champion: true_pirs(rng, 0.2), candidate: true_pirs(rng, 0.45)}
    traffic = SyntheticTraffic(sessions, arms, seed=1)
    status = run_ticks(sessions, rollout_settings, traffic, ticks=40, per_tick=200)
    assert status == RolloutStatus.promoted
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        assert queries.serving_version(session).id == candidate  # type: ignore[union-attr]
        old = queries.get_version(session, champion)
        assert old is not None
        assert old.status == VersionStatus.retired
        served = [v for v in queries.list_versions(session) if v.status == VersionStatus.serving]
        assert len(served) == 1
        decided = rollout.list_rollouts(session, limit=1)[0]
        assert not decided.manual
        assert decided.latest["primary"]["ci_low"] > 0
        checks = rollout.rollout_checks(session, decided.id)
        assert checks[-1].outcome == "promote"
        # The interval narrows as impressions grow.
        widths = [
            c.evidence["primary"]["ci_high"] - c.evidence["primary"]["ci_low"]
            for c in checks
            if c.evidence["primary"]["ci_high"] is not None
        ]
        assert widths[-1] < widths[0]


def test_clearly_worse_candidate_is_rejected_early(
    sessions: object, rollout_settings: Settings
) -> None:
    champion, candidate, _ = champion_and_candidate(sessions, rollout_settings)
    rng = random.Random(2)
    arms = {champion: true_pirs(rng, 0.45), candidate: true_pirs(rng, 0.2)}
    traffic = SyntheticTraffic(sessions, arms, seed=2)
    status = run_ticks(sessions, rollout_settings, traffic, ticks=40, per_tick=200)
    assert status == RolloutStatus.rejected
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        assert queries.serving_version(session).id == champion  # type: ignore[union-attr]
        rejected = queries.get_version(session, candidate)
        assert rejected is not None
        assert rejected.status == VersionStatus.retired
        decided = rollout.list_rollouts(session, limit=1)[0]
        assert "worse" in (decided.reason or "")
        # Early: far below the futility budget of 150 impressions per image.
        shown = sum(c.impressions for c in _counts(session, rollout_settings, candidate))
        assert shown < IMAGES * 150 / 2


def _counts(session: Session, settings: Settings, version_id: int) -> list[object]:
    from app.measurement import Measurement

    return list(Measurement.learning(settings).counts(session, version_id))


@pytest.mark.parametrize("seed", range(6))
def test_a_a_is_not_promoted_when_checked_at_every_tick(
    sessions: object, rollout_settings: Settings, seed: int
) -> None:
    """Two batches of one generator (image PIRs drawn from the same distribution), checked
    after every tick up to the futility budget: never promoted (bench/decisions.py measures
    the rate over thousands of runs)."""
    champion, candidate, _ = champion_and_candidate(sessions, rollout_settings)
    rng = random.Random(100 + seed)
    arms = {champion: true_pirs(rng, 0.3), candidate: true_pirs(rng, 0.3)}
    traffic = SyntheticTraffic(sessions, arms, seed=100 + seed)
    status = run_ticks(sessions, rollout_settings, traffic, ticks=80, per_tick=200)
    assert status != RolloutStatus.promoted


def test_sample_ratio_mismatch_freezes_the_decision(
    sessions: object, rollout_settings: Settings
) -> None:
    champion, candidate, _ = champion_and_candidate(sessions, rollout_settings)
    rng = random.Random(3)
    arms = {champion: true_pirs(rng, 0.2), candidate: true_pirs(rng, 0.45)}
    traffic = SyntheticTraffic(sessions, arms, seed=3)
    for _ in range(20):
        traffic.send(300, candidate_share=0.35)  # a broken split, though clearly better
        with session_scope(sessions) as session:  # type: ignore[arg-type]
            look = rollout.check_running(session, rollout_settings)
            assert look is not None
    assert look.decision.frozen
    assert "sample ratio mismatch" in look.decision.reason
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        running = rollout.running_rollout(session)
        assert running is not None
        assert running.latest["frozen"] is True
        assert queries.serving_version(session).id == champion  # type: ignore[union-attr]


def test_manual_actions_are_recorded_and_hold(sessions: object, rollout_settings: Settings) -> None:
    champion, candidate, rollout_id = champion_and_candidate(sessions, rollout_settings)
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        refusal = dashboard.cycle_refusal(session, rollout_settings)
        assert refusal is not None
        assert f"candidate version {candidate}" in refusal
        # Pause stops every arm; resume brings back the champion and its candidate.
        dashboard.pause(session, rollout_settings)
        assert rollout.serving_arms(session, rollout_settings) == []
        state = dashboard.resume(session, rollout_settings)
        assert {a.version_id for a in state.arms} == {champion, candidate}
        state = dashboard.promote(session, rollout_settings, candidate)
        assert state.serving_version == candidate
        assert state.candidate_version is None
        decided = rollout.get_rollout(session, rollout_id)
        assert decided is not None
        assert decided.manual
        assert decided.status == "promoted"
        # Rolling back to the first champion holds automatic learning.
        state = dashboard.promote(session, rollout_settings, champion)
        assert state.serving_version == champion
        assert state.learning_held is not None
        assert "rolled back" in state.learning_held
        rolled_back = queries.get_version(session, champion)
        assert rolled_back is not None
        assert rolled_back.metrics["last_promotion"]["manual"] is True
        assert rolled_back.metrics["last_promotion"]["rollback"] is True


def test_a_rollback_holds_learning_in_the_scheduler(
    sessions: object, rollout_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion, candidate, _ = champion_and_candidate(sessions, rollout_settings)
    traffic = SyntheticTraffic(sessions, {champion: [0.3] * IMAGES, candidate: [0.3] * IMAGES}, 4)
    traffic.send(50, candidate_share=0.0)
    submitted: list[str] = []

    class Jobs:
        def submit(self, name: str, **kwargs: object) -> str:
            submitted.append(name)
            return "job"

        def shutdown(self) -> None:
            pass

    with session_scope(sessions) as session:  # type: ignore[arg-type]
        dashboard.promote(session, rollout_settings, candidate)
        dashboard.promote(session, rollout_settings, champion)
        assert rollout.learning_hold(session) is not None
        # The operator says otherwise by starting a cycle: the hold ends.
        dashboard.start_cycle(session, rollout_settings, Jobs())
        assert submitted == ["worker.maybe_start_cycle"]
        assert rollout.learning_hold(session) is None


def test_split_ramps_then_holds_the_configured_share(
    sessions: object, rollout_settings: Settings
) -> None:
    settings = rollout_settings.model_copy(
        update={"rollout_ramp_seconds": 3600, "rollout_ramp_share": 0.1, "holdout_share": 0.1}
    )
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        first = add_version(session, status=VersionStatus.ready, parent_id=None, seed=0)
        champion = add_version(session, status=VersionStatus.ready, parent_id=first.id, seed=50)
        queries.promote_version(session, champion.id)
        candidate = add_version(session, status=VersionStatus.ready, parent_id=champion.id, seed=9)
        started = rollout.start_rollout(session, settings, candidate)
        assert started is not None
        arms = dict(rollout.serving_arms(session, settings))
        assert arms == pytest.approx({champion.id: 0.81, candidate.id: 0.09, first.id: 0.1})
        started.ramp_until = utcnow() - timedelta(seconds=1)
        arms = dict(rollout.serving_arms(session, settings))
        assert arms == pytest.approx({champion.id: 0.45, candidate.id: 0.45, first.id: 0.1})


def test_training_set_holds_every_arm(sessions: object, rollout_settings: Settings) -> None:
    from worker.jobs.training_data import training_versions

    settings = rollout_settings.model_copy(update={"holdout_share": 0.05})
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        first = add_version(session, status=VersionStatus.ready, parent_id=None, seed=0)
        queries.promote_version(session, first.id)
        champion = add_version(session, status=VersionStatus.ready, parent_id=first.id, seed=50)
        rollout.start_rollout(session, settings, champion)
        running = rollout.running_rollout(session)
        assert running is not None
        rollout.end_manually(session, running, status=RolloutStatus.promoted, reason="test")
        queries.promote_version(session, champion.id)
        rejected = add_version(session, status=VersionStatus.ready, parent_id=champion.id, seed=9)
        rollout.start_rollout(session, settings, rejected)
        running = rollout.running_rollout(session)
        assert running is not None
        rollout.end_manually(session, running, status=RolloutStatus.rejected, reason="test")
        assert set(training_versions(session, settings, champion.id)) == {
            first.id,
            champion.id,
            rejected.id,
        }


def test_the_ramp_ends_at_its_instant_even_in_a_caching_picker(
    sessions: object, rollout_settings: Settings
) -> None:
    """The picker caches who is served (a database read per cache period), but the shares are
    evaluated at each pick: impressions picked after ramp_until are split at the rollout's
    share at once. With the shares cached too, a cache period of ramp-share impressions fell
    into the decision window and the first look after the ramp saw a sample-ratio mismatch
    ([352, 203] for 50/50 in a demo)."""
    from app.serving import BatchPicker

    settings = rollout_settings.model_copy(
        update={"rollout_ramp_seconds": 3600, "rollout_ramp_share": 0.01, "holdout_share": 0.0}
    )
    with session_scope(sessions) as session:  # type: ignore[arg-type]
        champion = add_version(session, status=VersionStatus.ready, parent_id=None, seed=0)
        queries.promote_version(session, champion.id)
        candidate = add_version(session, status=VersionStatus.ready, parent_id=champion.id, seed=9)
        started = rollout.start_rollout(session, settings, candidate)
        assert started is not None
        started.ramp_until = utcnow() + timedelta(seconds=0.5)
        session.flush()
        picker = BatchPicker(settings, arms_cache_seconds=3600, seed=1)
        during = [picker.pick(session)[0] for _ in range(400)]
        assert during.count(candidate.id) < 20  # the ramp's 1%
        # The ramp ends well inside the picker's cache period (an hour): no re-read.
        time.sleep(0.6)
        after = [picker.pick(session)[0] for _ in range(400)]
        assert 150 < after.count(candidate.id) < 250  # the rollout's 50%
