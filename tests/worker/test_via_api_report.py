"""The per-version PIR intervals that `pirloop demo` and `pirloop experiment --via-api` print
are the dashboard's: inside [0, 1] and honest about how little traffic backs them."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from app import queries
from app.database import session_scope
from app.main import create_app
from app.models import VersionStatus
from app.placeholder import placeholder_batch
from app.report import round_table
from app.settings import Settings
from app.stats import summarize
from tests.rollouts import first_version_serving, log_clicks
from worker.sim.via_api import ServiceClient, measured_change, measured_pir

# 1 impression (no click), 2 (one click), 16 (4 clicks over the batch of 8 images).
TRAFFIC = ([False], [True, False], [True, False, False, False] * 4)
PRINTED = re.compile(
    r"(\d\.\d{4})  \[95% CI (-?\d\.\d{4}), (-?\d\.\d{4})\]  \((\d+) imp\., (\d+) img\)"
)


def _lineage(settings: Settings, traffic: Sequence[Sequence[bool]]) -> list[int]:
    """A version per entry of traffic, each with that many background impressions, round robin
    over its images, clicked or not."""
    when = datetime.now(UTC) - timedelta(hours=1)
    with first_version_serving(settings) as (factory, first), session_scope(factory) as session:
        ids = [first]
        for step in range(1, len(traffic)):
            version = queries.create_version(
                session, source="placeholder", parent_id=ids[-1], status=VersionStatus.ready
            )
            queries.add_images(
                session, version.id, placeholder_batch(settings.batch_size, first_seed=100 * step)
            )
            version.batch_size = settings.batch_size
            ids.append(version.id)
        session.flush()
        for version_id, clicks in zip(ids, traffic, strict=True):
            log_clicks(session, version_id, clicks, when=when, simulated=True)
    return ids


@pytest.fixture
def service(settings: Settings) -> Iterator[ServiceClient]:
    """The report's client, talking to the app in-process."""
    with TestClient(create_app(settings)) as http:
        client = ServiceClient("http://testserver")
        client.http.close()
        client.http = http
        yield client


def _printed(round_: dict[str, object]) -> list[tuple[float, float, float, int, int]]:
    console = Console(file=io.StringIO(), width=160)
    console.print(round_table({}, round_))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [
        (float(mean), float(low), float(high), int(trials), int(images))
        for mean, low, high, trials, images in PRINTED.findall(text)
    ]


def test_printed_version_intervals_stay_inside_unit_range(
    settings: Settings, service: ServiceClient
) -> None:
    ids = _lineage(settings, TRAFFIC)
    printed = {}
    for before, after in ((ids[0], ids[1]), (ids[1], ids[2])):
        round_ = {
            "round": 1,
            "version_before": before,
            "version_after": after,
            **measured_change(service, before, after, "background"),
            "estimated_delta": None,
            "true_delta": 0.0,
            "true_p_value": 1.0,
            "diversity_pre": 1.0,
            "diversity_post": 1.0,
        }
        rows = _printed(round_)
        assert len(rows) == 2, rows
        printed[before], printed[after] = rows
    for version_id, clicks in zip(ids, TRAFFIC, strict=True):
        mean, low, high, trials, images = printed[version_id]
        assert 0.0 <= low <= mean <= high <= 1.0, (version_id, printed[version_id])
        # Few observations: a wide interval, never a point ("0.0000 [0.0000, 0.0000]").
        assert high - low > 0.3, printed[version_id]
        assert (trials, images) == (len(clicks), min(len(clicks), settings.batch_size))
    # What these lines printed before: a t-interval across images, a point from one
    # impression and far outside [0, 1] from two or sixteen.
    old = [summarize(measured_pir(service, version_id, "background")) for version_id in ids]
    assert old[0].ci_low == old[0].ci_high
    assert old[1].ci_low < 0 < 1 < old[1].ci_high
    assert old[2].ci_low < 0
