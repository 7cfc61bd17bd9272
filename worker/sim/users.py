"""Virtual users that drive the public HTTP API exactly as the pages do: ask for an
impression, download and decode the image, and act on it with a probability that is a known
function of the image (an objective). Their traffic carries the simulated flag.

Bots exist to test filtering: `bot:click-all` clicks every impression, `bot:flood` asks for
impressions as fast as it can and clicks them all from one visitor id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import torch

from worker.ml.sampling import png_to_image
from worker.sim.objectives import Objective, load_objective, rating_from_probability

log = logging.getLogger(__name__)

T = TypeVar("T")
BOT_KINDS = ("bot:click-all", "bot:flood")
PAGES_PER_VISITOR = 5
THINK_SECONDS = (0.3, 1.2)


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


@dataclass
class SimulationSummary:
    impressions: int = 0
    interactions: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    probability_sum: float = 0.0
    by_version: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.impressions / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "impressions": self.impressions,
            "interactions": self.interactions,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 2),
            "impressions_per_second": round(self.rate, 2),
            "mean_true_pir": self.probability_sum / self.impressions if self.impressions else None,
            "impressions_by_version": {str(k): v for k, v in sorted(self.by_version.items())},
        }


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

    def __post_init__(self) -> None:
        if (self.duration is None) == (self.impressions is None):
            raise ValueError("give exactly one of duration or impressions")
        if self.users < 1:
            raise ValueError("users must be at least 1")
        if self.rate < 0:
            raise ValueError("rate must be 0 (unlimited) or positive")
        if self.placement not in ("background", "rating"):
            raise ValueError(f"placement must be background or rating, not {self.placement!r}")


class Simulation:
    def __init__(self, plan: SimulationPlan) -> None:
        self.plan = plan
        self.summary = SimulationSummary()
        self.behaviours = {p.behaviour: _Behaviour(p.behaviour) for p in plan.populations}
        self._png_cache: dict[int, bytes] = {}
        self._budget = plan.impressions
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
        started = time.monotonic()
        self._deadline = started + (plan.duration if plan.duration is not None else 10**9)
        limits = httpx.Limits(max_connections=max(plan.users, 4))
        async with httpx.AsyncClient(base_url=plan.url, timeout=30, limits=limits) as client:
            tasks = [
                asyncio.create_task(self._user(client, index, population, started))
                for index, population in enumerate(assigned)
            ]
            while not all(t.done() for t in tasks):
                await asyncio.sleep(0.25)
                self.summary.seconds = time.monotonic() - started
                if on_progress:
                    on_progress(self.summary)
            for task in tasks:
                task.result()  # surface an unexpected crash of a user loop
        self.summary.seconds = time.monotonic() - started
        return self.summary

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
        served = 0
        while self._take_ticket():
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            # A virtual user slot stands for a stream of people, each seeing a few pages, as
            # on a real site; a bot keeps one identity.
            person = served // PAGES_PER_VISITOR
            visitor = f"bot-{index}" if behaviour.bot else f"sim-{plan.seed}-{index}-{person}"
            served += 1
            try:
                await self._one(client, behaviour, visitor, rng, pending)
            except httpx.HTTPError as exc:
                self.summary.errors[exc.__class__.__name__] += 1
                await asyncio.sleep(0.5)
        if pending:
            await asyncio.gather(*pending)

    async def _one(
        self,
        client: httpx.AsyncClient,
        behaviour: _Behaviour,
        visitor: str,
        rng: random.Random,
        pending: set[asyncio.Task[None]],
    ) -> None:
        placement = self.plan.placement
        response = await client.post(
            "/v1/impressions",
            json={"placement": placement, "visitor_id": visitor, "simulated": True},
        )
        if response.status_code != 201:
            self.summary.errors[f"impression {response.status_code}"] += 1
            await asyncio.sleep(0.5 if response.status_code >= 500 else 0.0)
            return
        served = response.json()
        image_id = served["image_id"]
        png = self._png_cache.get(image_id)
        if png is None:
            image = await client.get(served["image_url"])
            image.raise_for_status()
            png = self._png_cache[image_id] = image.content
        probability = behaviour.probability(image_id, png)
        self.summary.impressions += 1
        self.summary.probability_sum += probability
        self.summary.by_version[served["generator_version"]] += 1
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
            result = await client.post("/v1/interactions", json=body)
        except httpx.HTTPError as exc:
            self.summary.errors[exc.__class__.__name__] += 1
            return
        if result.status_code in (200, 201):
            self.summary.interactions += 1
        else:
            self.summary.errors[f"interaction {result.status_code}"] += 1


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


def run_simulation(plan: SimulationPlan, *, progress: bool = True) -> SimulationSummary:
    """Run the plan to its end, with a live progress line when progress is set."""
    simulation = Simulation(plan)
    if not progress:
        return run_to_end(simulation.run())
    from rich.live import Live

    def line(summary: SimulationSummary) -> str:
        return (
            f"simulated users: {summary.impressions} impressions, {summary.interactions} "
            f"interactions, {summary.rate:.1f}/s, errors {sum(summary.errors.values())}"
        )

    with Live(line(simulation.summary), refresh_per_second=4, transient=False) as live:
        result = run_to_end(simulation.run(lambda s: live.update(line(s))))
        live.update(line(result))
    live.console.line()  # a log line after a non-terminal Live would start on its last line
    return result
