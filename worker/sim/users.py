"""Virtual users that drive the public HTTP API exactly as the pages do: ask for an
impression, download and decode the image, and act on it with a probability that is a known
function of the image (an objective). Their traffic carries the simulated flag.

Bots exist to test filtering: `bot:click-all` clicks every impression, `bot:flood` asks for
impressions as fast as it can and clicks them all from one visitor id.

How people behave beyond what they like (drift, propensity, novelty, arrivals) is the traffic
model's (worker/sim/traffic.py); staying within the service's rate limits is the pacer's
(worker/sim/pacing.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import torch

from app.errors import ServiceUnready
from app.routers.impressions import SIMULATION_KEY_HEADER
from worker.ml.sampling import png_to_image
from worker.sim.objectives import Objective, load_objective, rating_from_probability
from worker.sim.pacing import Pacer, backoff_s, parse_retry_after
from worker.sim.summary import SimulationSummary
from worker.sim.traffic import TrafficModel, VersionAges

log = logging.getLogger(__name__)

T = TypeVar("T")
BOT_KINDS = ("bot:click-all", "bot:flood")
THINK_SECONDS = (0.3, 1.2)
# Tries of one request refused with 429 before it is dropped; with the back-off doubling
# from Retry-After, the last try comes minutes after the first.
MAX_ATTEMPTS = 8
# How long the first request may take to connect before the service counts as unreachable.
PROBE_TIMEOUT_S = 10.0


def check_service_url(url: str) -> None:
    """ValueError unless url is an http(s) URL with a host, so a typo fails at once."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"--url {url!r} is not a URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"--url {url!r} is not an http(s) URL with a host: write it like http://127.0.0.1:8000"
        )


def unreachable(url: str, exc: httpx.TransportError) -> ServiceUnready:
    """The error a client command ends with when the service does not answer at all."""
    return ServiceUnready(
        f"cannot reach a pirloop service at {url} ({exc.__class__.__name__}: {exc}): "
        "start one with `pirloop serve`, or fix the URL"
    )


@dataclass(frozen=True)
class Population:
    """A share of the virtual users and how they behave: an objective spec or a bot kind."""

    behaviour: str
    weight: float = 1.0


def parse_populations(spec: str) -> list[Population]:
    """'color:blue' or 'color:blue=0.8,bot:click-all=0.2' (weights are relative)."""
    populations = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        behaviour, _, weight = part.partition("=")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"population weight {weight!r} in {part!r} is not a number") from None
        if value <= 0:
            raise ValueError(f"population weight in {part!r} must be positive")
        populations.append(Population(behaviour, value))
    if not populations:
        raise ValueError("no population given")
    return populations


class _Behaviour:
    """Turns an image into the chance of a positive interaction; caches per image id, since
    served images never change."""

    def __init__(self, behaviour: str) -> None:
        self.name = behaviour
        self.bot = behaviour if behaviour in BOT_KINDS else None
        self.objective: Objective | None = None if self.bot else load_objective(behaviour)
        self.cache: dict[int, float] = {}

    def probability(self, image_id: int, png: bytes) -> float:
        if self.bot:
            return 1.0
        if image_id not in self.cache:
            assert self.objective is not None
            image = png_to_image(png).unsqueeze(0)
            with torch.no_grad():
                self.cache[image_id] = float(self.objective(image)[0])
        return self.cache[image_id]


@dataclass
class SimulationPlan:
    url: str
    populations: list[Population]
    users: int = 10
    rate: float = 20.0  # impressions per second over all users; 0 = as fast as possible
    duration: float | None = None
    impressions: int | None = None
    placement: str = "background"
    seed: int = 0
    # How people behave beyond what they like; None: as the objective says, at an even pace.
    traffic: TrafficModel | None = None
    # The service's PIRLOOP_SIMULATION_KEY: without it the service refuses simulated
    # impressions (403). By default read from this process's environment, as the service's is.
    simulation_key: str = field(
        default_factory=lambda: os.environ.get("PIRLOOP_SIMULATION_KEY", ""), repr=False
    )

    def __post_init__(self) -> None:
        if (self.duration is None) == (self.impressions is None):
            raise ValueError("give exactly one of duration or impressions")
        if self.users < 1:
            raise ValueError("users must be at least 1")
        if self.rate < 0:
            raise ValueError("rate must be 0 (unlimited) or positive")
        if self.placement not in ("background", "rating"):
            raise ValueError(f"placement must be background or rating, not {self.placement!r}")
        check_service_url(self.url)


@dataclass
class _Visitor:
    """One simulated person: an id, how much more or less than most they click, and how
    many pages they have left before they go."""

    visitor_id: str
    propensity: float
    pages_left: int
    # The browser's user agent: one per user slot and behaviour (people who come one after
    # another to one slot share a device), so the service's per-client rules see bots apart.
    user_agent: str = "pirloop-sim"


class Simulation:
    def __init__(
        self,
        plan: SimulationPlan,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        version_ages: VersionAges | None = None,
    ) -> None:
        self.plan = plan
        self.traffic = plan.traffic or TrafficModel()
        self.summary = SimulationSummary()
        self.behaviours = {p.behaviour: _Behaviour(p.behaviour) for p in plan.populations}
        # Jitter has its own stream, so that waits never shift the users' click draws.
        self.pacer = Pacer(random.Random(f"pacer-{plan.seed}"))
        self.version_ages = version_ages if version_ages is not None else VersionAges()
        self._transport = transport
        self._png_cache: dict[int, bytes] = {}
        self._budget = plan.impressions
        self._started = 0.0
        self._deadline = 0.0

    def _take_ticket(self) -> bool:
        if time.monotonic() >= self._deadline:
            return False
        if self._budget is None:
            return True
        if self._budget <= 0:
            return False
        self._budget -= 1
        return True

    async def run(self, on_progress: Any = None) -> SimulationSummary:
        plan = self.plan
        rng = random.Random(plan.seed)
        weights = [p.weight for p in plan.populations]
        assigned = rng.choices(plan.populations, weights=weights, k=plan.users)
        started = self._started = time.monotonic()
        self._deadline = started + (plan.duration if plan.duration is not None else 10**9)
        limits = httpx.Limits(max_connections=max(plan.users, 4))
        headers = {SIMULATION_KEY_HEADER: plan.simulation_key} if plan.simulation_key else {}
        async with httpx.AsyncClient(
            base_url=plan.url,
            timeout=30,
            limits=limits,
            transport=self._transport,
            headers=headers,
        ) as client:
            await self._probe(client)
            tasks = [
                asyncio.create_task(self._user(client, index, population, started))
                for index, population in enumerate(assigned)
            ]
            while not all(t.done() for t in tasks):
                await asyncio.sleep(0.25)
                self._update_clock()
                if on_progress:
                    on_progress(self.summary)
            for task in tasks:
                task.result()  # surface an unexpected crash of a user loop
        self._update_clock()
        return self.summary

    async def _probe(self, client: httpx.AsyncClient) -> None:
        """Fail at once when nothing answers at the URL, instead of running the whole
        duration on connection errors. Any HTTP answer will do: the users judge the rest."""
        try:
            await client.get("/healthz", timeout=PROBE_TIMEOUT_S)
        except httpx.TransportError as exc:
            raise unreachable(self.plan.url, exc) from None

    def _update_clock(self) -> None:
        self.summary.seconds = time.monotonic() - self._started
        self.summary.rate_limit_wait_s = self.pacer.waited_s

    async def _user(
        self, client: httpx.AsyncClient, index: int, population: Population, started: float
    ) -> None:
        plan = self.plan
        behaviour = self.behaviours[population.behaviour]
        rng = random.Random(plan.seed * 100_003 + index)
        flood = behaviour.bot == "bot:flood"
        interval = 0.0 if plan.rate == 0 or flood else plan.users / plan.rate
        next_at = started + rng.random() * interval
        pending: set[asyncio.Task[None]] = set()
        people = 0
        visitor: _Visitor | None = None
        user_agent = f"pirloop-sim/1 ({population.behaviour}; user {index})"
        while self._take_ticket():
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += self.traffic.page_gap(interval, rng)
            # A virtual user slot stands for a stream of people, each seeing a few pages, as
            # on a real site; a bot keeps one identity and its own behaviour.
            if behaviour.bot:
                visitor = visitor or _Visitor(f"bot-{index}", 1.0, 0, user_agent)
            elif visitor is None or visitor.pages_left <= 0:
                visitor = _Visitor(
                    visitor_id=f"sim-{plan.seed}-{index}-{people}",
                    propensity=self.traffic.draw_propensity(rng),
                    pages_left=self.traffic.draw_pages(rng),
                    user_agent=user_agent,
                )
                people += 1
            visitor.pages_left -= 1
            try:
                await self._one(client, behaviour, visitor, rng, pending)
            except httpx.HTTPError as exc:
                self.summary.errors[f"impression {exc.__class__.__name__}"] += 1
                await asyncio.sleep(0.5)
        if pending:
            await asyncio.gather(*pending)

    async def _post(
        self,
        client: httpx.AsyncClient,
        path: str,
        body: dict[str, Any],
        *,
        what: str,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """POST to a rate-limited endpoint, waiting out 429s as Retry-After asks; None when
        it gave up. Other answers are the caller's to judge."""
        for attempt in range(MAX_ATTEMPTS):
            sent_at = await self.pacer.wait_turn()
            self.summary.limited_requests += 1
            response = await client.post(path, json=body, headers=headers)
            if response.status_code != 429:
                if response.status_code < 400:
                    self.pacer.succeeded()
                return response
            self.summary.errors[f"{what} 429"] += 1
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if _visitor_limit(response):
                # Only this visitor is over its limit: the other users need not wait.
                self.summary.rate_limited["visitor"] += 1
                await asyncio.sleep(backoff_s(attempt, retry_after, self.pacer.rng))
            else:
                self.summary.rate_limited["address"] += 1
                self.pacer.limited(retry_after, sent_at=sent_at)  # the next turn waits it out
        self.summary.abandoned += 1
        return None

    async def _one(
        self,
        client: httpx.AsyncClient,
        behaviour: _Behaviour,
        visitor: _Visitor,
        rng: random.Random,
        pending: set[asyncio.Task[None]],
    ) -> None:
        placement = self.plan.placement
        response = await self._post(
            client,
            "/v1/impressions",
            {"placement": placement, "visitor_id": visitor.visitor_id, "simulated": True},
            what="impression",
            headers={"User-Agent": visitor.user_agent},
        )
        if response is None:
            return
        if response.status_code != 201:
            self.summary.errors[f"impression {response.status_code}"] += 1
            wait = parse_retry_after(response.headers.get("retry-after"))
            await asyncio.sleep(wait if wait is not None else _pause_after(response.status_code))
            return
        served = response.json()
        image_id = served["image_id"]
        png = self._png_cache.get(image_id)
        if png is None:
            image = await client.get(served["image_url"])
            if image.status_code != 200:
                self.summary.errors[f"image {image.status_code}"] += 1
                return
            png = self._png_cache[image_id] = image.content
        base_probability = behaviour.probability(image_id, png)
        probability = base_probability
        version = served["generator_version"]
        if not behaviour.bot:
            now = time.monotonic()
            novelty = self.traffic.novelty
            age = self.version_ages.observe(version, now, novelty.unit if novelty else "s")
            probability = self.traffic.click_probability(
                base_probability,
                elapsed_s=now - self._started,
                visitor_propensity=visitor.propensity,
                novelty_age=age,
            )
        self.summary.impressions += 1
        self.summary.probability_sum += base_probability
        self.summary.click_probability_sum += probability
        self.summary.by_version[version] += 1
        if placement == "rating":
            body: dict[str, Any] | None = {
                "token": served["token"],
                "kind": "rating",
                "value": rating_from_probability(probability, rng),
            }
        elif rng.random() < probability:
            body = {"token": served["token"], "kind": "click"}
        else:
            body = None
        if body is not None:
            # People look before they act; bots do not. The user goes on meanwhile, so think
            # time costs no throughput.
            delay = 0.0 if behaviour.bot else rng.uniform(*THINK_SECONDS)
            task = asyncio.create_task(self._act(client, body, delay))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def _act(self, client: httpx.AsyncClient, body: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            result = await self._post(client, "/v1/interactions", body, what="interaction")
        except httpx.HTTPError as exc:
            self.summary.errors[f"interaction {exc.__class__.__name__}"] += 1
            return
        if result is None:
            return
        if result.status_code in (200, 201):
            self.summary.interactions += 1
        else:
            self.summary.errors[f"interaction {result.status_code}"] += 1


def _visitor_limit(response: httpx.Response) -> bool:
    """Whether a 429 came from the per-visitor impression limit rather than the per-address
    one; the service says which in its message (app/routers/impressions.py)."""
    try:
        message = str(response.json().get("message", ""))
    except (ValueError, AttributeError):
        return False
    return "visitor" in message


def _pause_after(status: int) -> float:
    # A failing server gets a breather; a refused request (4xx) does not need one.
    return 0.5 if status >= 500 else 0.0


def run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, also where this thread already
    runs an event loop (a notebook, or Playwright's sync API in a test session): then the
    coroutine gets a loop of its own in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_simulation(
    plan: SimulationPlan, *, progress: bool = True, version_ages: VersionAges | None = None
) -> SimulationSummary:
    """Run the plan to its end, with a live progress line when progress is set. Pass the
    same `version_ages` to successive runs for novelty to see versions as new only once."""
    simulation = Simulation(plan, version_ages=version_ages)
    if not progress:
        return run_to_end(simulation.run())
    from rich.live import Live

    def line(summary: SimulationSummary) -> str:
        return (
            f"simulated users: {summary.impressions} impressions, {summary.interactions} "
            f"interactions, {summary.rate:.1f}/s, errors {sum(summary.errors.values())}"
            + (f", held {summary.rate_limit_wait_s:.0f} s by 429s" if summary.rate_limited else "")
        )

    live = Live(line(simulation.summary), refresh_per_second=4, transient=False)
    try:
        with live:
            result = run_to_end(simulation.run(lambda s: live.update(line(s))))
            live.update(line(result))
    finally:
        # A later line (a log line, an error) would start on the Live's last line.
        live.console.line()
    return result
