"""The simulator over HTTP, against a small stand-in service served in-process: it waits out
429s as Retry-After asks, counts them by kind and explains them, stays within a rate limit
like the service's, and applies the traffic model to what it clicks."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

import httpx
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.ratelimit import ClientRateLimit, MemoryRateLimiter, address_key
from worker.ml.sampling import image_to_png
from worker.sim.summary import SimulationSummary
from worker.sim.traffic import TrafficModel, VersionAges, parse_drift, parse_novelty
from worker.sim.users import Simulation, SimulationPlan, parse_populations, run_to_end

# Half red, half blue: color:blue users click it with probability 1/2 exactly.
HALF_BLUE = image_to_png(torch.tensor([0.5, 0.0, 0.5]).view(3, 1, 1).expand(3, 8, 8))


@dataclass
class FakeService:
    """Answers the simulator's three calls like pirloop; refuses the first `refuse` impression
    requests with 429 and `message`; serves `first_version`, and the next one after each
    `version_every` impressions."""

    refuse: int = 0
    message: str = "too many requests; retry in 1 s"
    first_version: int = 0
    version_every: int = 0
    served: int = 0
    clicks: int = 0
    # visitor id -> [(arrival time, status answered)]
    requests: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/impressions")
        async def impression(request: Request) -> Response:
            body = await request.json()
            log = self.requests[body["visitor_id"]]
            if self.refuse > 0:
                self.refuse -= 1
                log.append((time.monotonic(), 429))
                return JSONResponse(
                    {"error": "rate_limited", "message": self.message},
                    status_code=429,
                    headers={"Retry-After": "1"},
                )
            log.append((time.monotonic(), 201))
            self.served += 1
            later = self.served // self.version_every if self.version_every else 0
            version = self.first_version + later
            answer = {
                "impression_id": self.served,
                "token": f"t{self.served}",
                "image_id": 1,
                "image_url": "/v1/images/1",
                "generator_version": version,
            }
            return JSONResponse(answer, status_code=201)

        @app.get("/v1/images/{image_id}")
        async def image(image_id: int) -> Response:
            return Response(HALF_BLUE, media_type="image/png")

        @app.post("/v1/interactions")
        async def interaction() -> Response:
            self.clicks += 1
            return JSONResponse({"interaction_id": self.clicks}, status_code=201)

        return app


def simulate(
    app: object, *, version_ages: VersionAges | None = None, **plan: object
) -> SimulationSummary:
    settings: dict[str, object] = {
        "url": "http://pirloop.test",
        "populations": parse_populations("color:blue"),
        "rate": 0,
        **plan,
    }
    simulation = Simulation(
        SimulationPlan(**settings),  # type: ignore[arg-type]
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        version_ages=version_ages,
    )
    return run_to_end(simulation.run())


def test_address_429_is_waited_out_counted_and_explained() -> None:
    service = FakeService(refuse=2)
    summary = simulate(service.app(), users=2, impressions=6)

    assert summary.impressions == 6
    assert summary.errors == {"impression 429": 2}
    assert summary.rate_limited == {"address": 2}
    assert summary.abandoned == 0
    # Each refused visitor came back no sooner than Retry-After (1 s): never at once.
    refusals = 0
    for log in service.requests.values():
        for (refused_at, status), (again_at, _) in pairwise(log):
            if status == 429:
                refusals += 1
                assert again_at - refused_at >= 1.0
    assert refusals == 2
    assert summary.rate_limit_wait_s >= 1.0
    notes = summary.as_dict()["notes"]
    assert len(notes) == 1
    assert notes[0].startswith("2 answers were 429 rate-limited by the per-address limit")
    assert "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE=0" in notes[0]


def test_visitor_429_holds_only_that_visitor() -> None:
    service = FakeService(refuse=1, message="too many impressions for this visitor")
    summary = simulate(service.app(), users=1, impressions=2)

    assert summary.impressions == 2
    assert summary.errors == {"impression 429": 1}
    assert summary.rate_limited == {"visitor": 1}
    assert summary.rate_limit_wait_s == 0.0  # nobody else was held
    ((refused_at, status), (again_at, _), *_) = next(iter(service.requests.values()))
    assert status == 429
    assert again_at - refused_at >= 1.0
    assert "per-visitor limit" in summary.as_dict()["notes"][0]


def test_stays_within_an_address_limit_like_the_service() -> None:
    # The service's own limiter and middleware at 600 a minute, its bucket already empty:
    # a simulator that retried at once would pile up several 429s per impression.
    service = FakeService()
    limiter = MemoryRateLimiter()
    limiter.hit(address_key("127.0.0.1"), 600, cost=600)
    limited = ClientRateLimit(service.app(), limiter, per_minute=600)
    summary = simulate(limited, users=4, impressions=20)

    assert summary.impressions == 20
    assert set(summary.errors) <= {"impression 429", "interaction 429"}
    assert sum(summary.errors.values()) <= summary.impressions
    assert summary.interactions == service.clicks
    assert summary.abandoned == 0


def test_drift_reaches_the_clicks() -> None:
    # From the start on, the base rate falls by all of it: people still like the image (the
    # objective says 1/2) but nobody clicks.
    service = FakeService()
    stopped = simulate(
        service.app(),
        users=2,
        impressions=40,
        traffic=TrafficModel(drift=(parse_drift("step:-1:0"),)),
    )
    assert stopped.impressions == 40
    assert stopped.interactions == service.clicks == 0
    report = stopped.as_dict()
    assert report["mean_true_pir"] == pytest.approx(0.5)
    assert report["mean_click_probability"] == 0.0


def test_novelty_lifts_each_new_version_and_decays() -> None:
    # Versions change every 10 impressions. Version 0 was serving before the people came, so
    # it gets no lift; each later one gets a lift halving with each of its impressions:
    # 2, 1.5, 1.25, ... times the objective's 1/2.
    service = FakeService(version_every=10)
    summary = simulate(
        service.app(),
        users=1,
        impressions=29,  # versions 0 (9 impressions), 1 (10) and 2 (10)
        traffic=TrafficModel(novelty=parse_novelty("1:1imp")),
    )
    lifts = 9 + sum(1 + 0.5**age for count in (10, 10) for age in range(count))
    assert summary.by_version == {0: 9, 1: 10, 2: 10}
    assert summary.click_probability_sum == pytest.approx(0.5 * lifts)
    assert summary.probability_sum == pytest.approx(0.5 * 29)


def test_shared_version_ages_make_only_the_child_new() -> None:
    # An experiment's parent round, then its child round, sharing what the people have seen.
    ages = VersionAges()
    novelty = TrafficModel(novelty=parse_novelty("1:1imp"))
    parent = FakeService()
    first = simulate(parent.app(), users=1, impressions=5, traffic=novelty, version_ages=ages)
    child = FakeService(first_version=1)
    second = simulate(child.app(), users=1, impressions=5, traffic=novelty, version_ages=ages)
    assert first.click_probability_sum == pytest.approx(0.5 * 5)
    assert second.click_probability_sum == pytest.approx(
        0.5 * sum(1 + 0.5**age for age in range(5))
    )
