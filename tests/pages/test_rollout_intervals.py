"""The rollout panel shows a PIR change's always-valid interval inside [-1, 1]: with a handful
of impressions the interval the decision stores is far wider (about [-32, +33] here), and a
difference of two rates cannot leave [-1, 1]. The stored evidence keeps its own numbers."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient

from app import rollout
from app.database import session_scope
from app.main import create_app
from app.models import utcnow
from app.placeholder import placeholder_batch
from app.settings import Settings
from tests.conftest import TEST_ADMIN
from tests.rollouts import first_version_serving, log_clicks, roll_out_candidate

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN}"}
# Every "[low, high]" the page prints with a sign: the intervals on a change.
SIGNED_INTERVAL = re.compile(r"\[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]")


def _section(page: str, element_id: str) -> str:
    start = page.index(f'id="{element_id}"')
    return page[start : page.index("</section>", start)]


def _look_at_a_handful(settings: Settings) -> None:
    """A rollout looked at once after three impressions per arm (one click against two)."""
    with first_version_serving(settings) as (factory, _):
        champion, candidate = roll_out_candidate(
            settings, placeholder_batch(settings.batch_size, first_seed=500)
        )
        when = utcnow() + timedelta(seconds=1)  # after the (zero) ramp: counted
        with session_scope(factory) as session:
            log_clicks(session, champion, [True, False, False], when=when, simulated=False)
            log_clicks(session, candidate, [True, True, False], when=when, simulated=False)
        with session_scope(factory) as session:
            assert rollout.check_running(session, settings) is not None


def test_rollout_panel_cuts_the_pir_change_interval_to_minus_one_one(settings: Settings) -> None:
    settings = settings.model_copy(update={"rollout_ramp_seconds": 0.0})
    _look_at_a_handful(settings)
    with TestClient(create_app(settings)) as client:
        stored = client.get("/v1/rollouts/current").json()["latest"]
        # What the decision stored is untouched, and far wider than any change in PIR.
        assert stored["primary"]["ci_low"] < -1.0
        assert stored["primary"]["ci_high"] > 1.0
        assert stored["harm_checks"]["pir"]["ci_low"] < -1.0

        page = client.get("/admin", headers=ADMIN).text
        primary = _section(page, "primary")
        assert f"{stored['primary']['delta']:+.4f}" in primary
        assert "[-1.0000, +1.0000]" in primary
        assert "includes 0: no verdict yet" in primary
        # The PIR harm stop in the guardrails, and each look in the interval plot.
        assert "[-1.000, +1.000]" in _section(page, "guardrails")
        comparison = _section(page, "comparison")
        intervals = SIGNED_INTERVAL.findall(comparison)
        assert len(intervals) >= 3  # the change, its harm stop, the look's point in the plot
        for low, high in intervals:
            assert -1.0 <= float(low) <= float(high) <= 1.0, (low, high)

        # Stopped, its final interval in the decision history is cut the same way.
        response = client.post("/v1/admin/rollouts/current/stop", headers=ADMIN)
        assert response.status_code == 200, response.text
        history = _section(client.get("/admin", headers=ADMIN).text, "history")
        assert "[-1.0000, +1.0000]" in history
        for low, high in SIGNED_INTERVAL.findall(history):
            assert -1.0 <= float(low) <= float(high) <= 1.0, (low, high)
