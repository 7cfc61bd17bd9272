"""The closed-loop experiment through the service: simulated users drive the real API, the
service's own loop (embedded jobs or Celery workers) estimates and tunes, serves the tuned
generator as a candidate beside the champion, and decides with its own sequential test. The
report gives that decision and its evidence, next to the true objective's numbers and an
after-the-fact look at the logged data.

The service must count simulated traffic (PIRLOOP_USE_SIMULATED_TRAFFIC=true), have a
scheduler ticking (the embedded one, or `pirloop beat` with a worker), and start a cycle when
each image has the experiment's impressions (PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE): the run
checks what it can first and says what is wrong when nothing happens.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from app.errors import ServiceUnready
from app.stats import compare
from worker.ml.diversity import diversity_score
from worker.ml.sampling import png_to_image, save_grid
from worker.sim.objectives import load_objective
from worker.sim.traffic import TrafficModel
from worker.sim.users import (
    SimulationPlan,
    check_service_url,
    parse_populations,
    run_simulation,
    unreachable,
)

log = logging.getLogger(__name__)


class ServiceNotReady(ServiceUnready):
    """The service cannot run the loop as set up; the message says what to change."""


@dataclass
class ViaApiPlan:
    url: str
    objective: str
    impressions_per_image: int
    rounds: int = 1
    users: int = 8
    rate: float = 0.0
    placement: str = "background"
    cycle_timeout: float = 1800.0
    # How long the rollout may run, in impressions per image of the candidate's batch,
    # before the run gives up waiting for the service's decision.
    decision_budget_per_image: int = 400
    seed: int = 0
    json_path: str | None = None
    grid_path: str | None = None
    progress: bool = True
    # What the users like while the service gathers its training data (default: objective).
    # Learning from neg:SPEC and deciding under SPEC makes a candidate that is worse.
    learn_objective: str | None = None
    traffic: TrafficModel | None = None
    # The service's PIRLOOP_SIMULATION_KEY, which the simulated users send (see SimulationPlan).
    simulation_key: str = field(
        default_factory=lambda: os.environ.get("PIRLOOP_SIMULATION_KEY", ""), repr=False
    )


class ServiceClient:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def versions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.get("/v1/versions").raise_for_status().json()
        return result

    def serving(self) -> dict[str, Any]:
        for version in self.versions():
            if version["status"] == "serving":
                return version
        raise RuntimeError("the service is serving no generator version")

    def per_image(self, version_id: int, placement: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (
            self.http.get(
                f"/v1/versions/{version_id}/images",
                params={"placement": placement, "include_simulated": "true"},
            )
            .raise_for_status()
            .json()
        )
        return result

    def images(self, version_id: int, placement: str) -> torch.Tensor:
        rows = self.per_image(version_id, placement)
        pngs = [
            self.http.get(f"/v1/images/{r['image_id']}").raise_for_status().content for r in rows
        ]
        return torch.stack([png_to_image(p) for p in pngs])

    def service(self) -> dict[str, Any]:
        answer = self.http.get("/v1/service")
        if answer.status_code == 404:
            return {}  # an older service: nothing to check
        result: dict[str, Any] = answer.raise_for_status().json()
        return result

    def current_rollout(self) -> dict[str, Any] | None:
        answer = self.http.get("/v1/rollouts/current")
        if answer.status_code == 404:
            return None
        result: dict[str, Any] = answer.raise_for_status().json()
        return result

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        result: dict[str, Any] = (
            self.http.get(f"/v1/rollouts/{rollout_id}").raise_for_status().json()
        )
        return result

    def version(self, version_id: int) -> dict[str, Any]:
        result: dict[str, Any] = (
            self.http.get(f"/v1/versions/{version_id}").raise_for_status().json()
        )
        return result

    def pir(self, version_id: int, placement: str) -> dict[str, Any]:
        """The version's PIR as the dashboard shows it: the mean per-image PIR with a 95%
        interval inside [0, 1] at the effective sample size, and the counts it rests on."""
        result: dict[str, Any] = (
            self.http.get(
                f"/v1/versions/{version_id}/pir",
                params={"placement": placement, "include_simulated": "true"},
            )
            .raise_for_status()
            .json()
        )
        return result

    def impressions(self, version_id: int, placement: str) -> int:
        return int(self.pir(version_id, placement)["impressions"])

    def wait_for_candidate(self, champion_id: int, timeout: float) -> dict[str, Any]:
        """The rollout of a candidate tuned from champion_id; a clear error if none starts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = self.current_rollout()
            if running is not None and running["champion_id"] == champion_id:
                return running
            time.sleep(2)
        raise TimeoutError(
            f"no candidate was rolled out beside version {champion_id} within {timeout:.0f} s. "
            + why_no_cycle(self.service())
        )


def check_service(client: ServiceClient, plan: ViaApiPlan) -> dict[str, Any]:
    """What can be checked before driving traffic; raises ServiceNotReady naming the fix."""
    info = client.service()
    if not info:
        return info
    if not info["counts_simulated_traffic"]:
        raise ServiceNotReady(
            "the service does not count simulated traffic, so no cycle would ever start from "
            "this run's impressions: start it with PIRLOOP_USE_SIMULATED_TRAFFIC=true"
        )
    if info["learning_placement"] != plan.placement:
        raise ServiceNotReady(
            f"the service learns from {info['learning_placement']} impressions, this run "
            f"makes {plan.placement} ones: set --placement or PIRLOOP_LEARNING_PLACEMENT"
        )
    if info["target_impressions_per_image"] > plan.impressions_per_image:
        log.warning(
            "the service starts a cycle at %d impressions per image; this run sends %d per "
            "image, so the cycle waits for the time-based fallback",
            info["target_impressions_per_image"],
            plan.impressions_per_image,
        )
    if info.get("learning_held"):
        raise ServiceNotReady(
            f"learning is held on the service: {info['learning_held']} (start a cycle from "
            "the dashboard to resume)"
        )
    return info


def why_no_cycle(info: dict[str, Any]) -> str:
    """The likely causes of a cycle that does not start, from what the service says."""
    if not info:
        return "Check that a worker and a scheduler run and that simulated traffic counts."
    causes = []
    tick = info.get("scheduler_last_tick_at")
    if tick is None:
        causes.append(
            "no scheduler has ever ticked: run `pirloop beat` and a worker (`pirloop worker`)"
            if info["jobs"] == "celery"
            else "the embedded scheduler is off (PIRLOOP_EMBEDDED_SCHEDULER)"
        )
    else:
        age = (datetime.now(UTC) - datetime.fromisoformat(tick)).total_seconds()
        if age > 120:
            causes.append(
                f"the scheduler last ticked {age:.0f} s ago: is `pirloop beat` still running?"
            )
    if info.get("learning_held"):
        causes.append(f"learning is held: {info['learning_held']}")
    if not info["counts_simulated_traffic"]:
        causes.append("simulated traffic is not counted (PIRLOOP_USE_SIMULATED_TRAFFIC=false)")
    if info["jobs"] == "celery":
        causes.append("or no worker consumes the 'ml' queue (`pirloop worker --queues ml`)")
    causes.append(
        f"or the target of {info['target_impressions_per_image']} counted impressions per "
        "image was not reached; the admin dashboard shows the running cycle, if any"
    )
    return "Likely: " + "; ".join(causes) + "."


def drive(plan: ViaApiPlan, objective: str, impressions: int, seed: int) -> dict[int, int]:
    """Simulated traffic: this many impressions; returns impressions served per version."""
    summary = run_simulation(
        SimulationPlan(
            url=plan.url,
            populations=parse_populations(objective),
            users=plan.users,
            rate=plan.rate,
            impressions=impressions,
            placement=plan.placement,
            seed=seed,
            traffic=plan.traffic,
            simulation_key=plan.simulation_key,
        ),
        progress=plan.progress,
    )
    return dict(summary.by_version)


def drive_until_decided(
    client: ServiceClient, plan: ViaApiPlan, rollout: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Traffic in bursts while the service's sequential test looks at every tick, until it
    decides (or the run's budget is spent: then the last state is returned, still running)."""
    candidate = client.version(rollout["candidate_id"])
    burst = max(candidate["batch_size"] * 5, 200)
    budget = candidate["batch_size"] * plan.decision_budget_per_image
    sent = 0
    current = rollout
    while sent < budget:
        drive(plan, plan.objective, burst, seed + sent)
        sent += burst
        current = wait_for_look(client, rollout["id"], after=datetime.now(UTC))
        if current["status"] != "running":
            return current
        # A running rollout's reason is its last look's ("collecting: interval ...").
        log.info("rollout %s: %s", rollout["id"], (current.get("latest") or {}).get("reason"))
    return current


def wait_for_look(
    client: ServiceClient, rollout_id: int, *, after: datetime, timeout: float = 300
) -> dict[str, Any]:
    """The rollout once the scheduler has looked at it after `after` (or decided it)."""
    deadline = time.monotonic() + timeout
    while True:
        current = client.rollout(rollout_id)
        checked = (current.get("latest") or {}).get("checked_at")
        if current["status"] != "running" or (checked and datetime.fromisoformat(checked) >= after):
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the scheduler has not looked at rollout {rollout_id} for {timeout:.0f} s. "
                + why_no_cycle(client.service())
            )
        time.sleep(0.5)


def measured_pir(client: ServiceClient, version_id: int, placement: str) -> list[float]:
    return [r["pir"] for r in client.per_image(version_id, placement) if r["pir"] is not None]


def measured_change(
    client: ServiceClient, before_id: int, after_id: int, placement: str
) -> dict[str, Any]:
    """What the logged traffic says of two versions: each one's PIR with the dashboard's
    interval (the service's own; a t-interval across a few images leaves [0, 1]) and the
    counts it rests on, and Welch's after-the-fact comparison of their per-image PIRs."""
    before, after = client.pir(before_id, placement), client.pir(after_id, placement)
    measured = compare(
        measured_pir(client, before_id, placement), measured_pir(client, after_id, placement)
    )
    return {
        "pre_mean": measured.before.mean,
        "post_mean": measured.after.mean,
        "pre_ci": [before["ci_low"], before["ci_high"]],
        "post_ci": [after["ci_low"], after["ci_high"]],
        "pre_counts": [before["trials"], before["images_seen"]],
        "post_counts": [after["trials"], after["images_seen"]],
        "delta": measured.delta,
        "effect_size": measured.effect_size,
        "p_value": measured.p_value,
        "significant": measured.significant,
    }


def decision_summary(
    client: ServiceClient, plan: ViaApiPlan, decided: dict[str, Any]
) -> dict[str, Any]:
    """The service's own decision: what, why, on what evidence, and what it cost."""
    latest = decided.get("latest") or {}
    primary = latest.get("primary") or {}
    return {
        "rollout_id": decided["id"],
        "status": decided["status"],
        "manual": decided["manual"],
        "reason": decided.get("reason"),
        "champion": decided["champion_id"],
        "candidate": decided["candidate_id"],
        "delta": primary.get("delta"),
        "interval": [primary.get("ci_low"), primary.get("ci_high")],
        "p_value": primary.get("p_value"),
        "alpha": primary.get("alpha"),
        "sample_ratio": latest.get("sample_ratio"),
        "guardrails_breached": latest.get("breached", []),
        "looks": len(decided.get("checks", [])),
        "decision_impressions": latest.get("impressions"),
        # Everything each arm showed, the ramp included: for a worse candidate, the harm.
        "champion_impressions": client.impressions(decided["champion_id"], plan.placement),
        "candidate_impressions": client.impressions(decided["candidate_id"], plan.placement),
        "started_at": decided["started_at"],
        "decided_at": decided.get("decided_at"),
    }


def run_via_api(plan: ViaApiPlan) -> dict[str, Any]:
    """The loop through a running service; ServiceUnready (one line) when it cannot be
    reached, before or during the run."""
    check_service_url(plan.url)
    try:
        return _run_via_api(plan)
    except httpx.TransportError as exc:
        raise unreachable(plan.url, exc) from None


def realism_of(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The two versions' realism (KID to real landscapes) as the service's worker measured it
    when it made them (worker.jobs.batches.image_quality); None where it did not."""

    def quality(version: dict[str, Any]) -> dict[str, Any]:
        return (version.get("metrics") or {}).get("image_quality") or {}

    pre, post = quality(before), quality(after)
    return {
        "realism_pre": pre.get("realism_kid"),
        "realism_pre_se": pre.get("realism_kid_se"),
        "realism_post": post.get("realism_kid"),
        "realism_post_se": post.get("realism_kid_se"),
    }


def _run_via_api(plan: ViaApiPlan) -> dict[str, Any]:
    started = time.monotonic()
    objective = load_objective(plan.objective)
    client = ServiceClient(plan.url)
    check_service(client, plan)
    if client.current_rollout() is not None:
        raise ServiceNotReady(
            "a rollout is already running on the service: wait for its decision or stop it"
        )
    champion = client.serving()
    first_images = client.images(champion["id"], plan.placement)
    rounds = []
    for round_ in range(plan.rounds):
        log.info("round %d: traffic on version %s", round_ + 1, champion["id"])
        drive(
            plan,
            plan.learn_objective or plan.objective,
            champion["batch_size"] * plan.impressions_per_image,
            plan.seed * 1000 + 2 * round_,
        )
        log.info(
            "waiting for the service to roll out a candidate beside version %s", champion["id"]
        )
        rollout = client.wait_for_candidate(champion["id"], plan.cycle_timeout)
        decided = drive_until_decided(client, plan, rollout, plan.seed * 1000 + 2 * round_ + 1)
        candidate = client.version(rollout["candidate_id"])
        before_images = client.images(champion["id"], plan.placement)
        after_images = client.images(candidate["id"], plan.placement)
        true = compare(objective(before_images).tolist(), objective(after_images).tolist())
        rounds.append(
            {
                "round": round_ + 1,
                "version_before": champion["id"],
                "version_after": candidate["id"],
                "decision": decision_summary(client, plan, decided),
                **measured_change(client, champion["id"], candidate["id"], plan.placement),
                "estimated_delta": candidate["metrics"].get("estimated_delta"),
                "true_pre_mean": true.before.mean,
                "true_post_mean": true.after.mean,
                "true_delta": true.delta,
                "true_effect_size": true.effect_size,
                "true_p_value": true.p_value,
                "diversity_pre": diversity_score(before_images),
                "diversity_post": diversity_score(after_images),
                **realism_of(client.version(champion["id"]), candidate),
                "tuning_steps": candidate["metrics"].get("tuning", {}).get("steps"),
            }
        )
        if decided["status"] != "promoted":
            break  # the champion stays; another round would tune the same generator again
        champion = client.serving()
    report: dict[str, Any] = {
        "objective": plan.objective,
        "learn_objective": plan.learn_objective or plan.objective,
        "objective_description": objective.describe(),
        "traffic": plan.traffic.describe() if plan.traffic else None,
        "via_api": plan.url,
        "placement": plan.placement,
        "rounds": rounds,
        "images": champion["batch_size"],
        "impressions": plan.impressions_per_image,
        "steps": rounds[-1]["tuning_steps"] if rounds else None,
        "seconds": time.monotonic() - started,
        "device": "service",
    }
    if plan.grid_path:
        last = (
            client.images(rounds[-1]["version_after"], plan.placement) if rounds else first_images
        )
        count = min(32, len(first_images), len(last))
        # Top rows: the first champion's batch; bottom rows: the last candidate's.
        save_grid(torch.cat([first_images[:count], last[:count]]), plan.grid_path, nrow=8)
        report["grid_path"] = plan.grid_path
    if plan.json_path:
        path = Path(plan.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
    return report
