"""End to end through the API: simulated users who like blue meet a candidate batch that is
bluer than the champion's (promoted by the service's own decision), and users who dislike
blue meet the same candidate (rejected, while the champion never stops serving)."""

from __future__ import annotations

import hashlib
import io
import random
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage

from app.settings import Settings
from tests.conftest import TEST_ADMIN, TEST_SECRET, TEST_SIMULATION_KEY
from tests.live import live_server
from tests.rollouts import roll_out_candidate
from tests.worker.conftest import current_rollout, decided_rollout, loop_env, serving, wait_for
from worker.sim.users import SimulationPlan, parse_populations, run_simulation

IMAGES = 16


def bluish_batch(count: int, seed: int) -> list[dict[str, object]]:
    """Images whose blue share is about 0.6 (the tiny champion's are about a third)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        colour = (rng.randint(30, 70), rng.randint(30, 70), rng.randint(140, 200))
        buffer = io.BytesIO()
        PILImage.new("RGB", (16, 16), colour).save(buffer, format="PNG")
        png = buffer.getvalue()
        rows.append(
            {
                "batch_index": index,
                "latent_seed": seed + index,
                "png": png,
                "content_hash": hashlib.sha256(png).hexdigest(),
                "width": 16,
                "height": 16,
            }
        )
    return rows


def roll_out_bluish_candidate(env: dict[str, str]) -> int:
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{Path(env['PIRLOOP_DATA_DIR']) / 'pirloop.db'}",
        secret_key=TEST_SECRET,
        admin_token=TEST_ADMIN,
        batch_size=IMAGES,
        rollout_ramp_seconds=0,
    )
    return roll_out_candidate(settings, bluish_batch(IMAGES, seed=11))[1]


@pytest.mark.parametrize(
    ("users_like", "expected"), [("color:blue", "promoted"), ("neg:color:blue", "rejected")]
)
def test_the_service_decides_a_candidate_people_like_or_dislike(
    tmp_path: Path, users_like: str, expected: str
) -> None:
    env = loop_env(
        tmp_path,
        # No learning cycle in this test: only the rollout's decision at every tick.
        PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE="100000",
        PIRLOOP_ROLLOUT_MIN_IMPRESSIONS_PER_ARM="100",
        PIRLOOP_ROLLOUT_MAX_IMPRESSIONS_PER_IMAGE="200",
    )
    with live_server(env, startup_seconds=120) as base:
        champion = serving(base)
        assert champion is not None
        candidate = roll_out_bluish_candidate(env)
        running = wait_for(lambda: current_rollout(base), timeout=10, what="the rollout")
        decided = None
        for burst in range(20):
            summary = run_simulation(
                SimulationPlan(
                    url=base,
                    populations=parse_populations(users_like),
                    users=4,
                    rate=0,
                    impressions=200,
                    seed=burst,
                    simulation_key=TEST_SIMULATION_KEY,
                ),
                progress=False,
            )
            assert summary.errors == {}, summary.errors
            # The champion serves all along, beside the candidate.
            assert summary.by_version.get(champion["id"], 0) > 0
            # A few scheduler ticks (0.5 s apart) look at the new data.
            time.sleep(2)
            decided = decided_rollout(base, running["id"])
            if decided is not None:
                break
        assert isinstance(decided, dict), "no decision within 4000 impressions"
        assert decided["status"] == expected, decided["reason"]
        assert decided["manual"] is False
        now_serving = serving(base)
        assert now_serving is not None
        assert now_serving["id"] == (candidate if expected == "promoted" else champion["id"])
        if expected == "rejected":
            # Stopped early: far below the futility budget of 200 impressions per image.
            shown = decided["latest"]["impressions"][1]
            assert shown < IMAGES * 200 / 2
